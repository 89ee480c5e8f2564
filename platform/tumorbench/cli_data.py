"""The ``tumorbench data`` commands: make, check, de-identify, preview, split and label datasets.

Registered on the ``data`` group by :mod:`tumorbench.cli`; heavy imports happen inside each command.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

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


def conversion(name: str | None = None, *, source_is_file: bool = False):
    """A command converting a released set (PATH, a folder or one file) into OUT: ``--out`` and ``--overwrite``."""

    def wrap(function):
        path = click.Path(exists=True, file_okay=source_is_file, dir_okay=not source_is_file, path_type=Path)
        function = click.option("--overwrite", is_flag=True, help="Write into a folder that already holds files.")(
            function
        )
        out = click.Path(file_okay=False, path_type=Path)
        function = click.option("--out", type=out, required=True, help="Folder to write.")(function)
        return click.command(name=name)(click.argument("path", type=path)(function))

    return wrap


def _counts(counter) -> str:
    """``a 3, b 5``: a summary's counts by name."""
    return ", ".join(f"{name} {n}" for name, n in sorted(counter.items()))


def _writable(out: Path, overwrite: bool) -> None:
    """Refuse to write a converted set into a folder that holds files, unless ``--overwrite``."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise click.ClickException(f"{out} is not empty: pass --overwrite to write into it")


@conversion()
def luna16(path: Path, out: Path, overwrite: bool) -> None:
    """Make LUNA16 (PATH: subset*/<seriesuid>.mhd + annotations.csv) a segmentation set of nodule masks in OUT.

    Each nodule is a ball of its diameter around its centre, on its scan's grid; OUT holds images/ (links to the
    scans, nothing copied) and masks/, for `compare.py --data OUT`.
    """
    from tumorbench.data.luna16 import write_masks

    _writable(out, overwrite)
    summary = write_masks(path, out)
    click.echo(
        f"wrote {out}: {summary.scans} scans, {summary.scans_with_nodules} with nodules ({summary.nodules} nodules "
        f"drawn); {summary.outside} nodule centre(s) outside their scan not drawn; {summary.without_scan} "
        "annotation(s) of scans not found (subsets not downloaded?)"
    )


@conversion()
def figshare(path: Path, out: Path, overwrite: bool) -> None:
    """Make the figshare brain tumour set (PATH: 1.mat ... 3064.mat, MATLAB 7.3) a class-folder set in OUT.

    OUT gets meningioma/, glioma/ and pituitary/ of 16-bit PNG slices with their tumour masks (<name>_mask.png),
    and patients.csv with a pseudonym for each patient ID (no ID is written): `compare.py --data OUT` classifies,
    `--task segmentation` segments. Exits with status 1 when a file was skipped.
    """
    from tumorbench.data.figshare import convert

    _writable(out, overwrite)
    summary = convert(path, out)
    classes = _counts(summary.classes)
    click.echo(f"wrote {out}: {summary.images} slices ({classes}) of {summary.patients} patients")
    if summary.empty_masks:
        click.echo(f"  {summary.empty_masks} slice(s) with an empty tumour mask")
    if summary.rescaled:
        click.echo(f"  {summary.rescaled} slice(s) not of integers in 0..65535: values scaled to that range")
    if summary.not_cases:
        shown = ", ".join(summary.not_cases[:3]) + (", ..." if len(summary.not_cases) > 3 else "")
        click.echo(f"  not slices, left out: {shown} (cvind.mat's folds are not used: studies make patient folds)")
    _skipped(summary.skipped)


@conversion()
def mias(path: Path, out: Path, overwrite: bool) -> None:
    """Make mini-MIAS (PATH: mdb001.pgm ... mdb322.pgm + Info.txt) a class-folder set in OUT.

    OUT gets normal/, benign/ and malignant/ films, each lesion's circle drawn into its mask (<name>_mask.png;
    Info.txt's y counts from the bottom), and patients.csv pairing each woman's left and right films.
    """
    from tumorbench.data.mias import convert

    _writable(out, overwrite)
    summary = convert(path, out)
    classes = _counts(summary.classes)
    click.echo(
        f"wrote {out}: {summary.images} films ({classes}) of {summary.patients} women; {summary.lesions_drawn} "
        f"lesion circle(s) drawn; {summary.without_mask} abnormal film(s) without a circle, so without a mask"
    )
    if summary.missing:
        shown = ", ".join(summary.missing[:5]) + (", ..." if len(summary.missing) > 5 else "")
        click.echo(f"  {len(summary.missing)} film(s) listed in Info.txt not found: {shown}")
    if summary.unlisted:
        click.echo(f"  {summary.unlisted} image(s) not listed in Info.txt: left out")
    _skipped(summary.skipped)


@conversion(name="cbis-ddsm")
@click.option("--max-side", type=click.IntRange(32, 8192), default=1024, show_default=True, help="Films' longest side.")
@click.option("--one-set", is_flag=True, help="Every film in OUT (patient-level folds), not OUT/train + OUT/test.")
@click.option("--workers", type=click.IntRange(0), default=0, help="Processes reading films (default: one per CPU).")
def cbis_ddsm(path: Path, out: Path, max_side: int, one_set: bool, workers: int, overwrite: bool) -> None:
    """Make CBIS-DDSM (PATH: its DICOM folders and case-description CSVs) class-folder sets in OUT.

    OUT/train and OUT/test (its official split) get benign/ and malignant/ films at most MAX_SIDE pixels high or
    wide, each with the union of its lesions' ROI masks, and patients.csv; then `compare.py --data OUT/train
    --test OUT/test`.
    """
    from tumorbench.data.cbis_ddsm import convert

    _writable(out, overwrite)
    summary = convert(path, out, max_side, one_set=one_set, workers=workers or len(os.sched_getaffinity(0)))
    classes = _counts(summary.classes)
    sets = _counts(summary.split)
    click.echo(
        f"wrote {out}: {summary.images} films ({classes}; {sets}) of {summary.patients} patients, "
        f"{summary.lesions} lesions; {summary.with_mask} films with their lesions' mask"
    )
    if summary.masks_missing:
        click.echo(f"  {summary.masks_missing} lesion(s) without a mask of its film's size: those films have no mask")
    if summary.missing:
        shown = ", ".join(summary.missing[:3]) + (", ..." if len(summary.missing) > 3 else "")
        click.echo(f"  {len(summary.missing)} film(s) the tables list are not there (not downloaded?): {shown}")
    if summary.in_both:
        click.echo(
            f"  {summary.in_both} patient(s) have films in train and in test (the split is by lesion type): "
            "--test would be refused as overlapping; convert again with --one-set for patient-level folds"
        )
    elif not one_set:
        sets = [name for name in ("train", "test") if summary.split[name]]
        test = f" --test {out / 'test'}" if len(sets) == 2 else ""
        click.echo(f"  then: python experiments/compare.py --data {out / sets[0]}{test}")
    _skipped(summary.skipped)


def _skipped(skipped: list[str]) -> None:
    """Name the first 20 files a conversion skipped, and exit with status 1 when there were any."""
    for line in skipped[:20]:
        click.echo(f"  skipped {line}", err=True)
    if skipped:
        more = f" ({len(skipped) - 20} more not shown)" if len(skipped) > 20 else ""
        raise click.ClickException(f"{len(skipped)} file(s) skipped{more}; the others were written")


@conversion(source_is_file=True)
def medmnist(path: Path, out: Path, overwrite: bool) -> None:
    """Make a MedMNIST file (PATH: breastmnist.npz, nodulemnist3d_64.npz, ...) class-folder sets in OUT.

    OUT/train (its train and val images) and OUT/test get one folder per class of PNGs (NIfTI for the 3D sets);
    then `compare.py --data OUT/train --test OUT/test`.
    """
    from tumorbench.data.medmnist import convert

    _writable(out, overwrite)
    summary = convert(path, out)
    classes = _counts(summary.classes)
    sets = _counts(summary.split)
    click.echo(f"wrote {out}: {summary.images} {summary.dims}D images ({classes}; {sets}); no patient IDs")
    test = f" --test {out / 'test'}" if summary.split["test"] else ""
    click.echo(f"  then: python experiments/compare.py --data {out / 'train'}{test}")


@conversion(name="lidc-idri")
@click.option("--min-readers", type=click.IntRange(1, 4), default=1, show_default=True, help="Fewer readers: out.")
@click.option("--crop", type=click.IntRange(16, 512), default=64, show_default=True, help="Crop side in pixels.")
@click.option("--window", default="-1000,400", show_default=True, help="HU range mapped to 0..255: LOW,HIGH.")
@click.option("--pixel-mm", type=float, help="Crops resampled to this many mm a pixel (default: the scan's own).")
@click.option("--volumes", type=click.Path(file_okay=False, path_type=Path), help="Also each CT + nodule masks here.")
@click.option("--workers", type=click.IntRange(0), default=0, help="Processes reading series (default: one per CPU).")
def lidc_idri(
    path: Path,
    out: Path,
    min_readers: int,
    crop: int,
    window: str,
    pixel_mm: float | None,
    volumes: Path | None,
    workers: int,
    overwrite: bool,
) -> None:
    """Make LIDC-IDRI (PATH: TCIA's DICOM CT series, each folder with its readers' XML) nodule crops in OUT.

    Each nodule of 3 mm or more (its readers' outlines grouped) becomes the CT slice through its centre, cropped,
    with the union and intersection of the outlines, and files/malignancy.csv the mean of its ratings: the lidc
    layout, for `compare.py --data OUT` (mean malignancy <= 2 benign, >= 4 malignant, 3 left out). --volumes DIR:
    also each whole CT (images/) with its nodules' 50%-consensus masks (masks/), for `compare.py --data DIR`.
    """
    from tumorbench.data.lidc_idri import Options, convert

    try:
        low, high = (float(v) for v in window.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"{window!r}: two numbers LOW,HIGH", param_hint="--window") from exc
    try:
        options = Options(min_readers, crop, (low, high), None if volumes is None else str(volumes), pixel_mm)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    for folder in (out, volumes) if volumes else (out,):
        _writable(folder, overwrite)
    summary = convert(path, out, options, workers=workers or len(os.sched_getaffinity(0)))
    readers = _counts({f"{n} reader(s)": count for n, count in summary.readers.items()})
    click.echo(
        f"wrote {out}: {summary.nodules} nodules ({readers}) of {summary.patients} patients, from {summary.series} "
        f"series and {summary.readings} readers' outlined nodules"
    )
    notes = {
        f"nodule(s) outlined by fewer than {min_readers} reader(s): left out": summary.too_few_readers,
        "nodule(s) rated by no reader for malignancy: left out": summary.unrated,
        f"nodule(s) wider than the {crop}-pixel crop: their crops cut it (--crop)": summary.clipped,
        "outline(s) on no slice of their series: left out": summary.outlines_off,
        "XML file(s) not CT readings (chest radiographs): left out": summary.not_ct,
    }
    for what, count in notes.items():
        if count:
            click.echo(f"  {count} {what}")
    click.echo(f"  then: python experiments/compare.py --data {out}")
    if volumes:
        click.echo(
            f"  {summary.volumes} CT volume(s) with nodule masks: python experiments/compare.py --data {volumes}"
        )
    _skipped(summary.skipped)


DATA_COMMANDS = (synth, check, deid, preview, split, labels, luna16, figshare, mias, cbis_ddsm, medmnist, lidc_idri)
