"""Issue 14's must-shows, rerunnable: de-identification, DICOM SEG answers, compressed and quirky DICOM.

    PYTHONPATH=platform python bench/dicom_checks.py                   # deid, seg (offline), codecs: ~1 min
    timeout 900 flock /tmp/tumorbench-heavy.lock \\
        env PYTHONPATH=platform python bench/dicom_checks.py --serve   # seg also through a real Serve app

Everything is generated in a temporary folder (``--keep DIR`` keeps it): a synthetic lung-CT DICOM study
with a fake identity (tests/dicom_phi.py: name, MRN, birth date, institution, in tags, sequences and a
private block) and an untrained tiny 3D U-Net package. Commands are run as a user would type them
(``tumorbench ...`` through ``python -m tumorbench.cli``) and echoed with a ``$`` before them.
Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import base64
import collections
import csv
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "platform"), str(REPO / "tests"), str(REPO / "tests" / "unit")]
FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}" + (f": {detail}" if detail else ""))
    if not ok:
        FAILED.append(name)


def tumorbench(*args: str, expect: int = 0, lines: int = 40) -> str:
    """Run the CLI as a user would and echo the command and its output."""
    print("$ tumorbench " + " ".join(args))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO / "platform"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "tumorbench.cli", *args], capture_output=True, text=True, env=env, check=False
    )
    print("\n".join("  " + line for line in (done.stdout + done.stderr).strip().splitlines()[:lines]))
    check(f"exit status {expect}", done.returncode == expect, str(done.returncode))
    return done.stdout


def make_phi_study(root: Path) -> Path:
    """Three lung-CT series of two patients, the fake identity in every file and labels.csv as a PACS export."""
    from dicom_phi import FAKE_MRN, inject_phi
    from tumorbench.data.synthetic_lung import LungPhantomConfig, make_lung_study

    src = make_lung_study(root / "src", LungPhantomConfig(cases=3, shape=(48, 48, 24), repeat_scan_fraction=0.5))
    for path in sorted(src.rglob("*.dcm")):
        inject_phi(path, patient=path.parts[-3][-1])
    with open(src / "labels.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows, columns = list(reader), reader.fieldnames
    for row in rows:  # the export's labels name patients by their MRN, as the headers do
        row["patient_id"] = FAKE_MRN + row["patient_id"][-1]
    with open(src / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return src


def _pixel_hashes(root: Path) -> list[str]:
    import pydicom

    return sorted(hashlib.sha256(pydicom.dcmread(p).PixelData).hexdigest() for p in root.rglob("*.dcm"))


def show_deid(root: Path) -> Path:
    import pydicom

    from dicom_phi import FAKE_PHI, file_has_phi, find_phi

    print("\n== 1. de-identification of a lung-CT DICOM study carrying a fake identity ==")
    src, dst = make_phi_study(root), root / "deid"
    n_src = len(list(src.rglob("*.dcm")))
    hits = sum(bool(file_has_phi(p)) for p in src.rglob("*.dcm"))
    print(f"source: {n_src} DICOM files, {hits} carry the fake identity; tokens looked for: {', '.join(FAKE_PHI)}")
    tumorbench("data", "deid", str(src), str(dst))
    with open(dst / "deid_changes.csv") as handle:
        rows = list(csv.DictReader(handle))
    counts = collections.Counter(
        f"{kind} {name}" for row in rows for kind in ("removed", "emptied", "replaced") for name in row[kind].split(";")
    )
    print(f"deid_changes.csv: {len(rows)} rows, status {dict(collections.Counter(r['status'] for r in rows))}")
    for kind in ("removed", "emptied", "replaced"):
        names = sorted(k.split(" ", 1)[1] for k in counts if k.startswith(kind + " ") and k != kind + " ")
        print(f"  {kind} ({len(names)}): {', '.join(names)}")
    outputs = sorted(dst.rglob("*.dcm"))
    elements = sum(1 for p in outputs for _ in pydicom.dcmread(p).iterall())
    tag_hits = sum(len(find_phi(pydicom.dcmread(p))) for p in outputs)
    byte_hits = sum(len(file_has_phi(p)) for p in outputs)
    print(f"scan of {len(outputs)} output files, {elements} elements (sequences and file meta included):")
    check("no fake identifier in any element", tag_hits == 0, f"{tag_hits} hits")
    check("no fake identifier in the raw bytes", byte_hits == 0, f"{byte_hits} hits")
    private = sum(e.tag.is_private for p in outputs for e in pydicom.dcmread(p).iterall())
    check("no private element left", private == 0, f"{private}")
    others = [p for p in dst.rglob("*") if p.is_file() and p.suffix != ".dcm"]
    sidecar_hits = []
    for path in others:
        raw = path.read_bytes()
        raw = (gzip.decompress(raw) + raw) if path.name.endswith(".gz") else raw
        sidecar_hits += [t for t in FAKE_PHI if t.lower().encode() in raw.lower()]
    names = sorted({p.name if p.suffix == ".csv" else "*_mask.nii.gz" for p in others})
    check(f"non-DICOM files carried ({', '.join(names)}, {len(others)} files) hold no identifier", not sidecar_hits)
    check("PixelData byte-identical (sha256 multiset)", _pixel_hashes(src) == _pixel_hashes(dst), f"{n_src} frames")
    before = json.loads(tumorbench("data", "check", str(src), "--json", "--no-duplicates", lines=0))
    after = json.loads(tumorbench("data", "check", str(dst), "--json", "--no-duplicates", lines=0))
    keys = ("cases", "patients", "channels", "shapes", "spacings", "orientations", "labels", "with_mask", "with_tumor")
    for key in keys:
        same = before.get(key) == after.get(key)
        check(f"data check {key} equal before/after", same, json.dumps(after.get(key)))
    return src


def show_seg(root: Path, src: Path, serve: bool) -> None:
    import nibabel as nib

    from model_packages import CT3D, make_package
    from tumorbench.data.dicom import dicom_series_headers

    print("\n== 2. DICOM SEG answers for a zipped series ==")
    series = sorted(p for p in src.rglob("scan_0") if p.is_dir())[0]
    archive = root / "series.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for path in sorted(series.glob("*.dcm")):
            handle.write(path, f"series/{path.name}")
    package = make_package(root / "pkg" / "ct3d", CT3D)
    sources = dicom_series_headers(sorted(series.glob("*.dcm")))
    out = tumorbench("predict", "--package", str(package), str(archive), "--out", str(root / "seg.dcm"), lines=0)
    answer = json.loads(out)
    tumorbench("predict", "--package", str(package), str(archive), "--out", str(root / "mask.nii.gz"), lines=0)
    nifti = np.asarray(nib.load(root / "mask.nii.gz").dataobj)
    _check_seg((root / "seg.dcm").read_bytes(), sources, nifti[None], "predict --out seg.dcm vs --out mask.nii.gz")
    voxels = sum(lesion["voxels"] for lesion in answer["lesions"])
    print(f"  JSON answer: shape {answer['shape']}, {answer['lesion_count']} lesions, {voxels} voxels in lesions")
    check("JSON lesion voxels == SEG/NIfTI tumor voxels", voxels == int(nifti.sum()), f"{int(nifti.sum())}")
    if serve:
        _show_serve(root, archive, package, sources)


def _check_seg(blob: bytes, sources: list, expected: np.ndarray, what: str) -> None:
    import highdicom as hd
    import pydicom
    from pydicom.uid import SegmentationStorage

    from tumorbench.dicomseg import mask_from_dicom_seg

    with pydicom.config.strict_reading():
        raw = pydicom.dcmread(io.BytesIO(blob))
    check("pydicom strict read", raw.SOPClassUID == SegmentationStorage, f"{raw.SOPClassUID.name}, {len(blob)} bytes")
    seg = hd.seg.segread(io.BytesIO(blob))
    back = mask_from_dicom_seg(seg, sources)
    check(f"highdicom mask equals voxel for voxel ({what})", np.array_equal(back, expected), f"shape {back.shape}")
    referenced = seg.ReferencedSeriesSequence[0]
    check("referenced series", referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID)
    uids = {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence}
    check("referenced instances", uids == {str(ds.SOPInstanceUID) for ds in sources}, f"{len(uids)} instances")
    segment = seg.SegmentSequence[0]
    algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
    print(f"  segment: {segment.SegmentLabel!r}, {algorithm.AlgorithmName} {algorithm.AlgorithmVersion}")


def _show_serve(root: Path, archive: Path, package: Path, sources: list) -> None:
    import socket

    import ray
    import requests
    from ray import serve

    from tumorbench.serving.runner import deploy

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=512 * 2**20)
    try:
        deploy({"models": [f"ct3d={package}"], "cpus_per_replica": 0.1, "ingress_cpus": 0.1}, port=port)
        url, body = f"http://127.0.0.1:{port}/v1/segment", archive.read_bytes()
        print(f"$ curl -F file=@series.zip '{url}?output=dicom-seg' (a Serve app on loopback, model ct3d)")
        answer = requests.post(url, files={"file": ("upload", body)}, timeout=300)
        seg = requests.post(url, params={"output": "dicom-seg"}, files={"file": ("upload", body)}, timeout=300)
        check("HTTP 200 application/dicom", seg.status_code == 200, seg.headers.get("content-type", ""))
        data = answer.json()["mask"]  # a base64 NIfTI for a volume
        mask = np.asarray(nib_from(base64.b64decode(data["data"])).dataobj)
        _check_seg(seg.content, sources, mask[None], "HTTP dicom-seg vs HTTP JSON")
        nifti = {"file": ("u", (root / "mask.nii.gz").read_bytes())}
        bad = requests.post(url, params={"output": "dicom-seg"}, files=nifti, timeout=300)
        check("a NIfTI upload with output=dicom-seg is refused", bad.status_code == 422, bad.json().get("detail", ""))
    finally:
        serve.shutdown()
        ray.shutdown()


def nib_from(blob: bytes):
    import nibabel as nib

    return nib.Nifti1Image.from_bytes(gzip.decompress(blob))


def show_codecs(root: Path, src: Path) -> None:
    import test_dicom_codecs as codecs
    from PIL import Image
    from pydicom.uid import JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless, RLELossless

    from tumorbench.data.dicom import read_dicom_series
    from tumorbench.data.io import read_image

    print("\n== 3. compressed transfer syntaxes and quirky DICOM ==")
    rng = np.random.default_rng(3)
    plain_dir = sorted(p for p in src.rglob("scan_0") if p.is_dir())[0]  # a lung phantom series (HU, signed)
    plain = read_dicom_series(plain_dir)
    size = sum(p.stat().st_size for p in plain_dir.iterdir())
    for name, syntax in (
        ("RLE Lossless", RLELossless),
        ("JPEG-LS Lossless", JPEGLSLossless),
        ("JPEG 2000 Lossless", JPEG2000Lossless),
        ("JPEG Lossless SV1", JPEGLosslessSV1),
    ):
        packed = codecs._recompress(plain_dir, root / name.replace(" ", "_"), syntax)
        image = read_dicom_series(packed)
        ratio = size / sum(p.stat().st_size for p in packed.iterdir())
        same = np.array_equal(image.array, plain.array) and np.allclose(image.affine, plain.affine)
        check(f"{name} ({syntax}) decodes exactly", same, f"compression {ratio:.2f}x, {plain.array.size} voxels")
    yy, xx = np.mgrid[:48, :64]
    pixels = (np.clip(128 + 90 * np.sin(xx / 7.0) * np.cos(yy / 5.0), 0, 255)).astype(np.uint8)
    ds = codecs._eight_bit(root / "plain8.dcm", pixels, PixelSpacing=[0.5, 0.5])
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    codecs._encapsulated(ds, buffer.getvalue(), JPEGBaseline8Bit)
    ds.save_as(root / "jpeg.dcm", enforce_file_format=True)
    image = read_image(root / "jpeg.dcm")
    pil = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32)
    diff = np.abs(image.array[0] - pil).max()
    check("JPEG Baseline vs Pillow's decoder", diff <= 1, f"max |difference| {diff:.0f} grey level")
    stored = rng.integers(0, 4096, size=(30, 50)).astype(np.uint16)
    extra = dict(
        BitsStored=12, HighBit=11, PhotometricInterpretation="MONOCHROME1", RescaleSlope=2, RescaleIntercept=-10
    )
    codecs._eight_bit(root / "cr.dcm", stored, Modality="CR", ImagerPixelSpacing=[0.2, 0.15], **extra)
    image = read_image(root / "cr.dcm")
    inverted = np.array_equal(image.array[0], (4095 - stored.astype(np.float32)) * 2 - 10)
    check("MONOCHROME1 CR inverted then rescaled", inverted, f"{image.meta['format']} {image.array.shape}")
    check("CR without orientation: 2D, ImagerPixelSpacing", image.spacing == (0.2, 0.15), str(image.spacing))
    codecs._eight_bit(root / "dx.dcm", stored, Modality="DX", BitsStored=12, HighBit=11, PixelSpacing=[0.1, 0.1])
    image = read_image(root / "dx.dcm")
    check("DX without orientation: 2D, PixelSpacing", image.spacing == (0.1, 0.1), f"{image.spacing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="Also answer through a Serve app (starts Ray).")
    parser.add_argument("--keep", type=Path, help="Work in this folder and keep it.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        src = show_deid(root)
        show_seg(root, src, args.serve)
        show_codecs(root, src)
    print(f"\n{'all checks passed' if not FAILED else 'FAILED: ' + '; '.join(FAILED)}")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
