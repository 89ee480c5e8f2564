"""The ``tumorbench data`` commands: make, check, de-identify, preview, split and label datasets (conversions of
released sets: :mod:`tumorbench.cli_convert`).

Registered on the ``data`` group by :mod:`tumorbench.cli`; heavy imports happen inside each command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tumorbench.cli_convert import CONVERSIONS

LAYOUT_CHOICES = [
    "auto",
    "brats",
    "msd",
    "paired",
    "case-folders",
    "lgg",
    "image-folder",
    "csv",
    "lidc",
    "dicom",
]  # catalog.LAYOUTS, written out so that --help does not import pandas (test_cli_layouts_are_the_catalogs)


@click.command()
@click.option(
    "--task",
    type=click.Choice(["brain-mri", "lung-ct"]),
    required=True,
    help="brain-mri: BraTS-layout NIfTI phantoms; lung-ct: DICOM CT series with nodules.",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--cases", type=click.IntRange(min=1), default=None, help="Number of cases (default: the phantom's).")
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same files).")
@click.option("--overwrite", is_flag=True, help="Write into a folder that already holds files.")
def synth(task: str, out: Path, cases: int | None, seed: int | None, overwrite: bool) -> None:
    """Generate a synthetic study as real NIfTI or DICOM files."""
    from tumorbench.data.synthetic import make_study

    root = make_study(task, out, cases=cases, seed=seed, overwrite=overwrite)
    click.echo(f"wrote synthetic {task} study to {root}")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-duplicates", is_flag=True, help="Skip the content-hash duplicate search.")
@click.option("--require-deid", is_flag=True, help="Count DICOM files still carrying identifying tags as problems.")
@click.option("--no-fingerprint", is_flag=True, help="Skip the dataset fingerprint (sizes, intensities, balance).")
def check(
    path: Path, layout: str, as_json: bool, no_duplicates: bool, require_deid: bool, no_fingerprint: bool
) -> None:
    """Read every case of a dataset; report it and every problem found.

    Exits with status 1 when any problem was found.
    """
    from tumorbench.data.check import check_dataset, format_report

    report = check_dataset(
        path, layout, duplicates=not no_duplicates, require_deid=require_deid, fingerprint=not no_fingerprint
    )
    click.echo(json.dumps(report, indent=1) if as_json else format_report(report))
    if report["problems"]:
        sys.exit(1)


@click.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--date-shift", is_flag=True, help="Shift dates by a consistent per-patient offset instead of emptying them."
)
@click.option(
    "--seed",
    envvar="TUMORBENCH_DEID_SEED",
    default=None,
    help="Secret making UIDs, pseudonyms and shifts repeatable across runs (default: random per run).",
)
@click.option("--keep-paths", is_flag=True, help="Keep source-relative paths (default: paths from the new UIDs).")
@click.option("--overwrite", is_flag=True, help="Write into a non-empty destination.")
def deid(src: Path, dst: Path, date_shift: bool, seed: str | None, keep_paths: bool, overwrite: bool) -> None:
    """De-identify every DICOM file under SRC into DST (PS3.15 Annex E basic profile); SRC is only read.

    Writes DST/deid_changes.csv (changed tags per file, never values) and lists images that
    may carry burned-in text. A labels.csv comes along with its patient IDs replaced by the
    pseudonyms, and the masks it names (docs/data.md). Exits with status 1 when a file was skipped.
    """
    from tumorbench.data.deid import DeidConfig, deidentify_tree, format_report

    report = deidentify_tree(
        src, dst, DeidConfig(date_shift=date_shift, seed=seed, keep_paths=keep_paths, overwrite=overwrite)
    )
    click.echo(format_report(report))
    if report.skipped:
        sys.exit(1)


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write.")
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True)
@click.option("-n", "--cases", "n", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def preview(path: Path, out: Path, layout: str, n: int, seed: int) -> None:
    """Write a montage of cases with their mask outlines."""
    from tumorbench.data.preview import write_preview

    click.echo(f"wrote {write_preview(path, out, layout=layout, n=n, seed=seed)}")


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Split JSON to write.")
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--stratify", default="auto", show_default=True, help="Column to stratify on: auto, label, has_tumor or none."
)
@click.option(
    "--dedupe/--no-dedupe", default=False, show_default=True, help="Drop byte-identical images before splitting."
)
def split(path: Path, out: Path, layout: str, folds: int, seed: int, stratify: str, dedupe: bool) -> None:
    """Write a patient-level stratified k-fold split file."""
    from tumorbench.data.catalog import scan
    from tumorbench.data.check import add_tumor_presence
    from tumorbench.data.splits import SplitConfig, make_splits, write_splits

    frame = scan(path, layout)
    if stratify in ("auto", "has_tumor") and not frame["label"].notna().any() and frame["mask"].notna().any():
        frame = add_tumor_presence(frame)
    doc = make_splits(frame, SplitConfig(n_folds=folds, seed=seed, stratify=stratify, dedupe=dedupe))
    write_splits(doc, out)
    click.echo(
        f"{len(frame)} cases, {frame['patient_id'].nunique()} patients, "
        f"stratified by {doc['config']['stratify_column'] or 'nothing'}, "
        f"{len(doc['excluded'])} excluded; {folds} folds:"
    )
    for fold in doc["folds"]:
        click.echo(f"  fold {fold['fold']}: {len(fold['val'])} cases, {len(fold['val_patients'])} patients")
    click.echo(f"wrote {out} (hash {doc['hash'][:12]})")


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--label-level",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Which folder below PATH names the class: 1 is the top folder (benign/...).",
)
@click.option(
    "--patient-level",
    type=click.IntRange(min=1),
    default=None,
    help="Which folder below PATH names the patient (BreakHis: 4); default: none (images: each its own patient; "
    "DICOM: the PatientID tag).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing labels.csv.")
def labels(path: Path, label_level: int, patient_level: int | None, overwrite: bool) -> None:
    """Write PATH/labels.csv for images or DICOM series kept in class folders, however deep.

    Each image's (or series') class is the folder at --label-level of its path below PATH, its patient the folder
    at --patient-level. `--data PATH` then reads the table (layout csv, or dicom).
    """
    from tumorbench.data.layouts.common import data_files, looks_like_dicom
    from tumorbench.data.layouts.dicom import labels_from_folders
    from tumorbench.data.layouts.labels_csv import labels_from_image_folders

    out = path / "labels.csv"
    if out.exists() and not overwrite:
        raise click.ClickException(f"{out} exists: pass --overwrite to replace it")
    dicom = any(looks_like_dicom(p) for p in data_files(path))
    make = labels_from_folders if dicom else labels_from_image_folders
    frame = make(path, label_level=label_level, patient_level=patient_level)
    frame.to_csv(out, index=False)
    counts = ", ".join(f"{label} {n}" for label, n in frame["label"].value_counts().sort_index().items())
    patients = f", {frame['patient_id'].nunique()} patients" if "patient_id" in frame else ""
    if dicom:
        noun, then = "series", "add patient_id or mask columns as needed"
    else:
        noun, then = "images", f"--data {path} reads it (layout csv)"
    click.echo(f"wrote {out}: {len(frame)} {noun} ({counts}){patients}; {then}")


DATA_COMMANDS = (synth, check, deid, preview, split, labels, *CONVERSIONS)
