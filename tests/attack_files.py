"""Crafted hostile uploads, generated in memory: the rows of issue 11's "Found" table.

Imported by tests (``tests/`` is on ``sys.path`` through its ``conftest.py``) and by
``bench/serve_attacks.py``. Sizes are parameters, so tests use small versions of the
same structures and the bench the full-size ones.
"""

from __future__ import annotations

import io
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from tumorbench.data.writers import write_dicom_series

FAKE_PHI = {"name": "DOE^JOHN", "mrn": "MRN123456", "birth_date": "19610415"}


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def rgb_png(width: int, height: int) -> bytes:
    """A valid all-black RGB PNG, compressed row by row (40 Mpx: ~116 kB)."""
    compressor, row, parts = zlib.compressobj(9), b"\x00" * (1 + 3 * width), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def tiff_chain(frames: int) -> bytes:
    """A little-endian TIFF chaining ``frames`` one-pixel greyscale frames (16k frames: ~1.66 MB)."""
    entries = 8
    ifd_size = 2 + 12 * entries + 4
    data_offset = 8  # one shared pixel byte right after the header
    out = bytearray(b"II*\x00" + struct.pack("<I", 12) + b"\x00\x00\x00\x00")
    for n in range(frames):
        start = 12 + n * ifd_size
        tags = [
            (256, 3, 1, 1),
            (257, 3, 1, 1),
            (258, 3, 1, 8),
            (259, 3, 1, 1),
            (262, 3, 1, 1),
            (273, 4, 1, data_offset),
            (278, 3, 1, 1),
            (279, 4, 1, 1),
        ]
        out += struct.pack("<H", entries)
        for tag, kind, count, value in tags:
            out += struct.pack("<HHII", tag, kind, count, value)
        out += struct.pack("<I", start + ifd_size if n + 1 < frames else 0)
    return bytes(out)


def _slice(tmp: Path, volume: np.ndarray | None = None, **kwargs) -> pydicom.Dataset:
    volume = np.zeros((16, 16, 1)) if volume is None else volume
    path = write_dicom_series(tmp / "series", volume, np.diag([0.8, 0.8, 2.5, 1.0]), patient_id="X", **kwargs)[0]
    return pydicom.dcmread(path)


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def deflated_dicom(inflated_mb: int) -> bytes:
    """A Deflated-transfer-syntax DICOM whose dataset inflates to ~``inflated_mb`` MB (256 MB: ~262 kB)."""
    with tempfile.TemporaryDirectory() as tmp:
        ds = _slice(Path(tmp))
    side = int((inflated_mb * 1024**2 / 2) ** 0.5)
    del ds.PixelData
    ds.Rows = ds.Columns = side
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    meta = DicomBytesIO()
    meta.is_little_endian, meta.is_implicit_VR = True, False
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    pixels = 2 * side * side
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate, as the transfer syntax says
    parts = [compressor.compress(body.getvalue() + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixels))]
    zeros = b"\x00" * (1 << 20)
    for start in range(0, pixels, len(zeros)):
        parts.append(compressor.compress(zeros[: min(len(zeros), pixels - start)]))
    parts.append(compressor.flush())
    return b"\x00" * 128 + b"DICM" + meta.getvalue() + b"".join(parts)


def extra_frames_dicom(frames: int = 8) -> bytes:
    """A 16x16 single-frame DICOM header whose PixelData holds ``frames`` frames."""
    with tempfile.TemporaryDirectory() as tmp:
        ds = _slice(Path(tmp))
    ds.PixelData = ds.PixelData * frames
    return _dicom_bytes(ds)


def dicom_with(**values) -> bytes:
    """A valid 16x16 slice with some elements replaced (e.g. ``PixelSpacing=[0, 0]``)."""
    with tempfile.TemporaryDirectory() as tmp:
        ds = _slice(Path(tmp))
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return _dicom_bytes(ds)


def nifti_bytes(array: np.ndarray, *, dtype_code: int | None = None, zooms: tuple | None = None) -> bytes:
    """An uncompressed NIfTI-1 file; ``dtype_code`` forces the header's datatype (128 = RGB24); ``zooms``
    overwrites pixdim[1:4] with qform and sform codes 0, so the affine comes from pixdim alone."""
    if dtype_code is not None:
        header = nib.Nifti1Header()
        header.set_data_shape(array.shape[:3])
        header["datatype"], header["bitpix"] = dtype_code, 24
        header["vox_offset"] = 352
        return header.binaryblock + b"\x00" * 4 + array.astype(np.uint8).tobytes()
    data = bytearray(nib.Nifti1Image(array, np.eye(4)).to_bytes())
    if zooms is not None:
        data[80:92] = struct.pack("<3f", *zooms)  # pixdim[1:4]
        data[252:256] = struct.pack("<hh", 0, 0)  # qform_code, sform_code
    return bytes(data)


def metaimage_bomb(side: int, *, compressed_size: int | None = None) -> bytes:
    """An ``.mha`` declaring ``side``^3 int16 voxels; its data a zlib stream of 16 MB of zeros (~16 KB) that
    ITK would inflate into a buffer of the declared size. ``compressed_size`` writes a (forged)
    ``CompressedDataSize``, which ITK allocates as declared before reading."""
    fields = [
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = True",
        *([f"CompressedDataSize = {compressed_size}"] if compressed_size is not None else []),
        f"DimSize = {side} {side} {side}",
        "ElementType = MET_SHORT",
        "ElementDataFile = LOCAL",
    ]
    return ("\n".join(fields) + "\n").encode() + zlib.compress(bytes(16 * 1024**2), 9)


def phi_dicom_zip(*, duplicate: bool = False, two_series: bool = False, bad_uid: bool = False) -> bytes:
    """A zipped CT series whose member names and tags carry :data:`FAKE_PHI`."""
    names = f"DOE_JOHN_{FAKE_PHI['mrn']}"
    buffer = io.BytesIO()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(buffer, "w") as archive:
        volume = np.random.default_rng(0).normal(-800, 50, (16, 16, 4))
        seeds = ("a", "b") if two_series else ("a",)
        for seed in seeds:
            files = write_dicom_series(
                Path(tmp) / seed, volume, np.diag([0.8, 0.8, 2.5, 1.0]), patient_id=FAKE_PHI["mrn"], uid_seed=seed
            )
            for k, file in enumerate(files):
                ds = pydicom.dcmread(file)
                ds.PatientName, ds.PatientBirthDate = FAKE_PHI["name"], FAKE_PHI["birth_date"]
                if bad_uid:
                    ds.SeriesInstanceUID = f"1.2.826.{FAKE_PHI['mrn']}.DOE^JOHN"
                archive.writestr(f"{names}_{seed}_{k:03d}.dcm", _dicom_bytes(ds))
                if duplicate and k == 1:
                    archive.writestr(f"{names}_{seed}_{k:03d}_copy.dcm", _dicom_bytes(ds))
    return buffer.getvalue()


def multipart_many_parts(parts: int, boundary: str = "b0undary") -> tuple[str, bytes]:
    """(content type, body) of a form with ``parts`` empty fields before no file (50k parts: ~3.1 MB)."""
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\n\r\n'.encode()
    return f"multipart/form-data; boundary={boundary}", part * parts + f"--{boundary}--\r\n".encode()


def multipart_many_headers(lines: int, boundary: str = "b0undary") -> tuple[str, bytes]:
    """One file part preceded by ``lines`` header lines (500k lines: ~4 MB)."""
    head = f"--{boundary}\r\n".encode() + b"X-A: b\r\n" * lines
    head += b'Content-Disposition: form-data; name="file"; filename="x"\r\n\r\n'
    return f"multipart/form-data; boundary={boundary}", head + b"\x89PNG" + f"\r\n--{boundary}--\r\n".encode()


def multipart_file(data: bytes, boundary: str = "b0undary") -> tuple[str, bytes]:
    """A one-file form (field ``file``) holding ``data``."""
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="upload"\r\n\r\n'.encode()
    return f"multipart/form-data; boundary={boundary}", head + data + f"\r\n--{boundary}--\r\n".encode()
