"""The ``tumorbench data`` conversions: released sets (LUNA16, figshare, MIAS, CBIS-DDSM, MedMNIST, LIDC-IDRI)
written as a layout the study reads.

Registered with the other data commands by :mod:`tumorbench.cli_data`; heavy imports happen inside each command.
"""

from __future__ import annotations

import os
from pathlib import Path

import click


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
    if summary.packed:
        packed = f"  {summary.packed} .zip file(s) under {path} not read"
        click.echo(f"{packed}: if they hold slices, extract them and convert again")
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


CONVERSIONS = (luna16, figshare, mias, cbis_ddsm, medmnist, lidc_idri)
