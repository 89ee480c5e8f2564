"""The figshare brain tumour set (Cheng et al., PLoS One 2015) made a class-folder set with masks and patients.

The release is 3,064 T1-weighted contrast-enhanced slices of 233 patients in MATLAB 7.3 files (HDF5), each a
struct ``cjdata``: ``label`` (1 meningioma, 2 glioma, 3 pituitary), ``PID`` (the patient, as text), ``image``
(int16) and ``tumorMask`` (0/1), beside ``cvind.mat`` (the authors' five folds, not a case). Nothing here reads
``.mat`` at training time, so :func:`convert` writes what the ``image-folder`` layout reads, as BUSI ships it:
``<class>/<name>.png`` (16-bit grey, values kept), ``<class>/<name>_mask.png`` (0/255) and ``patients.csv``.

The patient IDs are the hospital's: each becomes a pseudonym (``figshare-001``, in the order first met in the
files' natural order), and no ID is written, printed or put in an error. Every array's shape and type is checked
from the HDF5 header before it is read, so a crafted file costs at most :data:`MAX_SIDE` squared values.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tumorbench.data.class_set import ClassFolderWriter, Written
from tumorbench.data.layouts.common import data_files
from tumorbench.errors import DataError

CLASSES = {1: "meningioma", 2: "glioma", 3: "pituitary"}
MAX_SIDE = 4096
MAX_FILES = 100_000
_NATURAL = re.compile(r"(\d+)")


class NotASlice(DataError):
    """A ``.mat`` file without a ``cjdata`` struct: ``cvind.mat`` (the authors' folds), or another set's file."""


@dataclass(frozen=True)
class Slice:
    """One ``cjdata`` struct: the image (rows, columns) as stored, its 0/1 mask, class number and patient ID."""

    image: np.ndarray
    mask: np.ndarray
    label: int
    patient: str


@dataclass
class Summary(Written):
    empty_masks: int = 0
    rescaled: int = 0  # images whose values were not integers in 0..65535: scaled to that range
    not_cases: list[str] = field(default_factory=list)  # .mat files without cjdata (cvind.mat)
    packed: int = 0  # .zip files under the root, not read (the release's zips of slices, if not extracted)
    skipped: list[str] = field(default_factory=list)  # "<file>: <problem>"


def _array(path: Path, group, name: str, *, max_values: int) -> np.ndarray:
    """A numeric dataset of the struct, transposed back to MATLAB's (rows, columns); checked before it is read."""
    import h5py

    item = group.get(name)
    if not isinstance(item, h5py.Dataset):
        raise DataError(path, f"cjdata has no {name} array")
    if item.dtype.kind not in "uif" or item.ndim > 2 or item.size > max_values:
        raise DataError(path, f"cjdata.{name} is {item.dtype} of shape {item.shape}, not a numeric 2D array")
    if item.attrs.get("MATLAB_empty", 0):
        raise DataError(path, f"cjdata.{name} is empty")
    return np.asarray(item[()]).T  # MATLAB stores column-major: HDF5 holds the transpose


def read_slice(path: str | Path) -> Slice:
    """Read one figshare ``.mat`` file.

    Raises:
        DataError: Not a MATLAB 7.3 file, no ``cjdata`` struct, or a field of the wrong shape, type or value.
    """
    import h5py

    path = Path(path)
    if not h5py.is_hdf5(path):
        raise DataError(path, "not a MATLAB 7.3 (HDF5) .mat file; the figshare release is 7.3: re-save with -v7.3")
    try:
        with h5py.File(path, "r") as handle:
            group = handle.get("cjdata")
            if not isinstance(group, h5py.Group):
                raise NotASlice(path, "no cjdata struct (not a figshare brain tumour slice)")
            image = _array(path, group, "image", max_values=MAX_SIDE**2)
            mask = _array(path, group, "tumorMask", max_values=MAX_SIDE**2)
            label = _array(path, group, "label", max_values=1)
            pid = _array(path, group, "PID", max_values=256)
    except DataError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError... for damaged files
        raise DataError(path, f"unreadable HDF5 .mat file ({type(exc).__name__})") from exc
    if image.ndim != 2 or min(image.shape) < 8:
        raise DataError(path, f"cjdata.image has shape {image.shape}, not a 2D slice")
    if mask.shape != image.shape or not np.isin(mask, (0, 1)).all():
        raise DataError(path, f"cjdata.tumorMask is not a 0/1 mask of the image's shape {image.shape}")
    if not np.isfinite(image).all():
        raise DataError(path, "cjdata.image holds NaN or infinite values")
    number = float(label.ravel()[0])
    if number not in CLASSES:
        raise DataError(path, f"cjdata.label is {number:g}, not 1 (meningioma), 2 (glioma) or 3 (pituitary)")
    patient = "".join(map(chr, pid.ravel().astype(np.uint32))).strip()  # MATLAB text: UTF-16 code units
    return Slice(image, mask.astype(np.uint8), int(number), patient)


def _natural(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in _NATURAL.split(path.as_posix())]


def mat_files(root: Path, files: list[Path] | None = None) -> list[Path]:
    """Every ``.mat`` under the root in natural order (``2.mat`` before ``10.mat``); ``files``: the root's if walked."""
    files = data_files(root) if files is None else files
    found = [p for p in files if p.suffix.lower() == ".mat"]
    if not found:
        zips = [p for p in files if p.suffix.lower() == ".zip"]  # the release is four zips in one zip
        hint = " (its .zip files are not read: extract them first)" if zips else ""
        raise DataError(root, f"no .mat files under it (the figshare set: 1.mat ... 3064.mat){hint}")
    if len(found) > MAX_FILES:
        raise DataError(root, f"more than {MAX_FILES:,} .mat files under it")
    return sorted(found, key=lambda p: _natural(p.relative_to(root)))


def _names(root: Path, files: list[Path]) -> dict[Path, str]:
    """Each file's output name: its stem, or its path below the root joined by ``_`` when stems repeat."""
    stems = Counter(p.stem for p in files)
    return {p: p.stem if stems[p.stem] == 1 else "_".join(p.relative_to(root).with_suffix("").parts) for p in files}


def convert(root: str | Path, out: str | Path) -> Summary:
    """Write every figshare slice under ``root`` into ``out`` (see the module docstring); a file that cannot be
    read is skipped and listed in the summary, never the whole set (a progress bar on stderr)."""
    from tqdm import tqdm

    root = Path(root)
    everything = data_files(root)
    files = mat_files(root, everything)
    summary, writer, names = Summary(), ClassFolderWriter(out, "figshare"), _names(root, files)
    # The release is four zips of slices (and cvind.mat) in one zip: one left packed holds a quarter of the set
    summary.packed = sum(p.suffix.lower() == ".zip" for p in everything)
    for path in tqdm(files, desc="figshare slices", unit="file", leave=False, mininterval=2.0):
        try:
            item = read_slice(path)
        except NotASlice:
            summary.not_cases.append(path.name)
            continue
        except DataError as exc:
            summary.skipped.append(f"{path.relative_to(root).as_posix()}: {exc.problem}")
            continue
        label = CLASSES[item.label]
        # a slice without a PID is its own patient
        summary.rescaled += writer.add(label, names[path], item.image, item.mask, item.patient or f"(none) {path}")
        summary.images += 1
        summary.classes[label] += 1
        summary.empty_masks += not item.mask.any()
    if not summary.images:
        hint = f"; {summary.packed} .zip file(s) beside them are not read: extract them first" if summary.packed else ""
        raise DataError(root, f"none of its {len(files)} .mat files is a figshare slice (a cjdata struct){hint}")
    summary.patients = writer.close()
    return summary
