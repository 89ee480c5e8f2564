"""Hostile uploads against the Serve app's decoding and form parsing, in-process: status, CPU time, peak RSS.

The rows of issue 11's "Found" table: each crafted input (``tests/attack_files.py``) is written
to a file, then a fresh Python process times one call of ``tumorbench.uploads.read_upload`` (file
rows) or ``serve.protocol.receive_upload`` (multipart rows, the body streamed in 64 kB chunks
as the server receives it) and reports the HTTP status the app would answer, the CPU seconds
of the call and how much the process's peak resident set grew during it (VmHWM, reset first).

    python bench/serve_attacks.py            # the full-size inputs (~1 minute)
    python bench/serve_attacks.py --small    # small versions, seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests"), str(REPO_ROOT / "platform")]
PHI = ("DOE", "JOHN", "MRN123456", "19610415", "1.2.826.")


def _cases(small: bool) -> dict[str, tuple[str, object]]:
    """name -> (kind, bytes maker); kind: "file" for read_upload, a content type for receive_upload."""
    import numpy as np

    import attack_files as af

    scale = 16 if small else 1
    return {
        "Deflated DICOM (256 MB inflated)": ("file", lambda: af.deflated_dicom(256 // scale)),
        "16x16 DICOM, PixelData of 8 frames": ("file", lambda: af.extra_frames_dicom(8)),
        "TIFF chaining 16k one-pixel frames": ("file", lambda: af.tiff_chain(16_384 // scale)),
        "40 Mpx RGB PNG": ("file", lambda: af.rgb_png(8000 // scale, 5000 // scale)),
        "multipart, 50k empty parts": ("form", lambda: af.multipart_many_parts(50_000 // scale)),
        "multipart, 500k header lines": ("form", lambda: af.multipart_many_headers(500_000 // scale)),
        "64 MB file (multipart)": ("form", lambda: af.multipart_file(os.urandom((64 // scale) * 1024**2))),
        "zip DOE_JOHN_MRN*.dcm, duplicate slice": ("file", lambda: af.phi_dicom_zip(duplicate=True)),
        "zip DOE_JOHN_MRN*.dcm, two series": ("file", lambda: af.phi_dicom_zip(two_series=True)),
        "zip DOE_JOHN_MRN*.dcm, malformed UID": ("file", lambda: af.phi_dicom_zip(bad_uid=True)),
        "NIfTI RGB24": ("file", lambda: af.nifti_bytes(np.zeros((8, 8, 8, 3)), dtype_code=128)),
        "DICOM PixelSpacing 0\\0": ("file", lambda: af.dicom_with(PixelSpacing=[0, 0])),
        "DICOM SliceThickness NaN": ("file", lambda: af.dicom_with(SliceThickness="NaN")),
        "MetaImage declaring 4096^3 voxels (zlib)": ("file", lambda: af.metaimage_bomb(4096 // scale)),
        "MetaImage, forged CompressedDataSize 1 TB": ("file", lambda: af.metaimage_bomb(64, compressed_size=10**12)),
    }


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) / 1024
    return float("nan")


def _request(path: Path, content_type: str):
    from starlette.requests import Request

    handle = path.open("rb")

    async def receive() -> dict:
        chunk = handle.read(65536)
        return {"type": "http.request", "body": chunk, "more_body": len(chunk) == 65536}

    headers = [(b"content-type", content_type.encode()), (b"content-length", str(path.stat().st_size).encode())]
    return Request({"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}, receive)


def _measure(path: Path, kind: str, content_type: str) -> dict:
    """One call in this (fresh) process."""
    from tumorbench.serving.protocol import ApiError, receive_upload
    from tumorbench.uploads import UploadError, read_upload

    request = _request(path, content_type) if kind == "form" else None
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    rss, cpu, wall = _status_mb("VmRSS:"), time.process_time(), time.perf_counter()
    status, detail = 200, "accepted"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            if request is not None:
                size = asyncio.run(receive_upload(request, 80 * 1024**2, Path(tmp) / "upload"))
                detail = f"received {size:,} bytes"
            else:
                image = read_upload(path, label="upload")
                detail = f"decoded {image.array.shape}"
    except (UploadError, ApiError) as exc:
        status, detail = exc.status, str(exc)
    return {
        "status": status,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "peak_rss_growth_mb": _status_mb("VmHWM:") - rss,
        "detail": detail,
        "phi_in_detail": any(secret in detail for secret in PHI),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", action="store_true", help="small versions of the inputs")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--one", nargs=3, metavar=("PATH", "KIND", "CONTENT_TYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(_measure(Path(args.one[0]), args.one[1], args.one[2])))
        return
    warnings.filterwarnings("ignore", module="pydicom")  # crafting invalid values here warns with them
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (name, (kind, make)) in enumerate(_cases(args.small).items()):
            made = make()
            content_type, data = made if kind == "form" else ("", made)
            path = Path(tmp) / f"input{n}"
            path.write_bytes(data)
            del made, data
            out = subprocess.run(
                [sys.executable, __file__, "--one", str(path), kind, content_type],
                capture_output=True,
                text=True,
                check=True,
            )
            row = {
                "input": name,
                "bytes": path.stat().st_size,
                **json.loads(out.stdout.strip().splitlines()[-1]),
                "phi_in_log": any(secret in out.stderr for secret in PHI),
            }
            rows.append(row)
            path.unlink()
    print("| input | bytes | status | CPU s | peak RSS +MB | PHI in answer / log | answer |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        phi = f"{'yes' if r['phi_in_detail'] else 'no'} / {'yes' if r['phi_in_log'] else 'no'}"
        print(
            f"| {r['input']} | {r['bytes']:,} | {r['status']} | {r['cpu_s']:.3f} | {r['peak_rss_growth_mb']:.1f} | "
            f"{phi} | {r['detail'][:110]} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
