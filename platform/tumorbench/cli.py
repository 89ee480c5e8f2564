"""The ``tumorbench`` command line.

Heavy imports (torch, MONAI, Ray) happen inside the commands that need them,
so ``tumorbench --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from tumorbench.errors import TumorbenchError

LAYOUT_CHOICES = ["auto", "brats", "msd", "lgg", "image-folder", "lidc", "dicom"]


class _Group(click.Group):
    """A group that turns tumorbench's own errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except TumorbenchError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tumorbench")
def main() -> None:
    """tumorbench: train, tune, compare and serve tumor detectors on Ray."""


@main.group(cls=_Group)
def data() -> None:
    """Make, check, split and preview datasets."""


@data.command()
@click.option("--task", type=click.Choice(["brain-mri", "lung-ct"]), required=True,
              help="brain-mri: BraTS-layout NIfTI phantoms; lung-ct: DICOM CT series with nodules.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Output folder.")
@click.option("--cases", type=click.IntRange(min=1), default=None, help="Number of cases (default: the phantom's).")
@click.option("--seed", type=int, default=None, help="Random seed (same seed, same files).")
@click.option("--overwrite", is_flag=True, help="Write into a folder that already holds files.")
def synth(task: str, out: Path, cases: int | None, seed: int | None, overwrite: bool) -> None:
    """Generate a synthetic study as real NIfTI or DICOM files."""
    from tumorbench.data.synthetic import make_study

    root = make_study(task, out, cases=cases, seed=seed, overwrite=overwrite)
    click.echo(f"wrote synthetic {task} study to {root}")


@data.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-duplicates", is_flag=True, help="Skip the content-hash duplicate search.")
def check(path: Path, layout: str, as_json: bool, no_duplicates: bool) -> None:
    """Read every case of a dataset; report it and every problem found.

    Exits with status 1 when any problem was found.
    """
    from tumorbench.data.check import check_dataset, format_report

    report = check_dataset(path, layout, duplicates=not no_duplicates)
    click.echo(json.dumps(report, indent=1) if as_json else format_report(report))
    if report["problems"]:
        sys.exit(1)


@data.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PNG file to write.")
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True)
@click.option("-n", "--cases", "n", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def preview(path: Path, out: Path, layout: str, n: int, seed: int) -> None:
    """Write a montage of cases with their mask outlines."""
    from tumorbench.data.preview import write_preview

    click.echo(f"wrote {write_preview(path, out, layout=layout, n=n, seed=seed)}")


@data.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Split JSON to write.")
@click.option("--layout", type=click.Choice(LAYOUT_CHOICES), default="auto", show_default=True)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--stratify", default="auto", show_default=True,
              help="Column to stratify on: auto, label, has_tumor or none.")
@click.option("--dedupe/--no-dedupe", default=False, show_default=True,
              help="Drop byte-identical images before splitting.")
def split(path: Path, out: Path, layout: str, folds: int, seed: int, stratify: str, dedupe: bool) -> None:
    """Write a patient-level stratified k-fold split file."""
    from tumorbench.data.check import add_tumor_presence
    from tumorbench.data.catalog import scan
    from tumorbench.data.splits import SplitConfig, make_splits, write_splits

    frame = scan(path, layout)
    if stratify in ("auto", "has_tumor") and not frame["label"].notna().any() and frame["mask"].notna().any():
        frame = add_tumor_presence(frame)
    doc = make_splits(frame, SplitConfig(n_folds=folds, seed=seed, stratify=stratify, dedupe=dedupe))
    write_splits(doc, out)
    click.echo(f"{len(frame)} cases, {frame['patient_id'].nunique()} patients, "
               f"stratified by {doc['config']['stratify_column'] or 'nothing'}, "
               f"{len(doc['excluded'])} excluded; {folds} folds:")
    for fold in doc["folds"]:
        click.echo(f"  fold {fold['fold']}: {len(fold['val'])} cases, {len(fold['val_patients'])} patients")
    click.echo(f"wrote {out} (hash {doc['hash'][:12]})")


if __name__ == "__main__":
    main()
