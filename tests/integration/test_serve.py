"""The Serve application on loopback: real HTTP uploads, answers equal to offline prediction, bad inputs.

One application for the module (four untrained tiny packages); files: an LGG slice PNG, a
BraTS crop as a 4D NIfTI and as zipped per-modality files, and a CT DICOM series written
here and zipped (synthetic stand-ins when ../shared/data is absent).
"""

from __future__ import annotations

import base64
import concurrent.futures
import gzip
import io
import socket
import struct
import time
import zipfile
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
import torch
from PIL import Image

import attack_files
from model_packages import CLS2D, CT3D, SEG2D, SEG3D, make_package, synthetic_png
from tumorbench.data.writers import write_dicom_series, write_nifti
from tumorbench.inference import Predictor

pytestmark = [pytest.mark.ray, pytest.mark.slow]
REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared" / "data"
API_KEY = "test-key"
MAX_UPLOAD_MB = 4
MAX_UNPACKED_MB = 16
MAX_CONCURRENT = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _args(packages: dict[str, Path], **extra) -> dict:
    return {
        "models": [f"{name}={path}" for name, path in packages.items()],
        "api_key": API_KEY,
        "max_upload_mb": MAX_UPLOAD_MB,
        "cpus_per_replica": 0.1,
        "ingress_cpus": 0.1,
        "torch_threads": 1,
        "max_pixels": 10_000_000,
        "max_unpacked_mb": MAX_UNPACKED_MB,
        "max_concurrent_requests": MAX_CONCURRENT,
        **extra,
    }


@pytest.fixture(scope="module")
def app(ray_session, tmp_path_factory):
    from ray import serve

    from tumorbench.serving.runner import deploy

    root = tmp_path_factory.mktemp("serve")
    packages = {
        name: make_package(root / name, spec)
        for name, spec in (("seg2d", SEG2D), ("cls2d", CLS2D), ("brats3d", SEG3D), ("ct3d", CT3D), ("broken", CLS2D))
    }
    (packages["broken"] / "model.pt").write_bytes(b"not a torch file")  # a corrupt package among good ones
    port = _free_port()
    deploy(_args(packages), port=port)  # as `serve run serve/config.yaml` does
    session = requests.Session()
    session.headers["X-API-Key"] = API_KEY
    yield {
        "url": f"http://127.0.0.1:{port}",
        "port": port,
        "packages": packages,
        "http": session,
        "root": root,
        "deploy": deploy,
    }
    serve.shutdown()


@pytest.fixture(scope="module")
def files(app):
    """The uploads: LGG PNG, BraTS 4D NIfTI crop, the same as zipped modalities, a zipped DICOM series."""
    root = app["root"]
    lgg = sorted((SHARED / "lgg").glob("*/*_1[0-9].png"))
    png = next((p for p in lgg if not p.name.endswith("_mask.png")), None) or synthetic_png(root / "slice.png")
    brats = SHARED / "brats" / "BraTS2021_00006"
    names = ("t1", "t1ce", "t2", "flair")
    if brats.is_dir():  # a crop around the tumour keeps sliding-window inference quick
        images = [nib.load(brats / f"BraTS2021_00006_{n}.nii.gz") for n in names]
        affine = images[0].affine.copy()
        affine[:3, 3] += affine[:3, :3] @ np.array([70.0, 70.0, 40.0])
        volume = np.stack([np.asarray(im.dataobj)[70:150, 70:150, 40:90] for im in images], axis=-1)
    else:
        affine = np.diag([-1.0, -1.0, 1.0, 1.0])
        volume = np.random.default_rng(0).normal(300, 60, (40, 40, 30, 4)).clip(0)
    nifti = write_nifti(root / "brats_crop.nii.gz", volume.astype(np.float32), affine)
    modalities = root / "brats_modalities.zip"
    with zipfile.ZipFile(modalities, "w") as archive:
        for c, name in enumerate(names):
            path = write_nifti(root / f"Case_{name}.nii.gz", volume[..., c].astype(np.float32), affine)
            archive.write(path, f"case/{path.name}")
    ct = np.random.default_rng(1).normal(-800, 60, (48, 40, 14))
    ct[15:30, 10:25, 4:10] = 30.0
    ct_affine = np.diag([0.8, 0.8, 2.5, 1.0])
    series = write_dicom_series(root / "ct", ct, ct_affine, patient_id="SECRET-PATIENT", modality="CT", uid_seed="t")
    dicom_zip = root / "ct_series.zip"
    with zipfile.ZipFile(dicom_zip, "w") as archive:
        for path in series:
            archive.write(path, f"series/{path.name}")
    return {"png": png, "nifti": nifti, "modalities": modalities, "dicom_zip": dicom_zip}


def _post(
    app, route: str, path: Path | None = None, *, content: bytes | None = None, model: str | None = None, **kwargs
) -> requests.Response:
    upload = {"file": (path.name if path else "upload", path.read_bytes() if path else content)}
    params = {"model": model} if model else None
    return app["http"].post(app["url"] + route, files=upload, params=params, timeout=120, **kwargs)


def _mask(body: dict) -> np.ndarray:
    blob = base64.b64decode(body["mask"]["data"])
    if body["mask"]["media_type"] == "image/png":
        return (np.asarray(Image.open(io.BytesIO(blob))) > 0).astype(np.uint8)[None]
    data = np.asarray(nib.Nifti1Image.from_bytes(gzip.decompress(blob)).dataobj)
    return data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)


@pytest.fixture(scope="module")
def offline(app):
    torch.set_num_threads(1)  # as the replicas, so float sums run in the same order
    return {name: Predictor.from_package(path) for name, path in app["packages"].items() if name != "broken"}


def test_health_models_and_openapi(app):
    assert requests.get(app["url"] + "/healthz", timeout=10).json()["status"] == "ok"
    assert requests.get(app["url"] + "/v1/models", timeout=10).status_code == 401
    cards = {card["name"]: card for card in app["http"].get(app["url"] + "/v1/models", timeout=10).json()["models"]}
    assert set(cards) == {"seg2d", "cls2d", "brats3d", "ct3d", "broken"}
    assert cards["cls2d"]["task"] == "classification" and cards["cls2d"]["classes"] == ["no", "yes"]
    assert cards["brats3d"]["inputs"]["channel_order"] == ["t1", "t1ce", "t2", "flair"]
    assert cards["seg2d"]["version"].startswith("seg2d@") and cards["seg2d"]["metrics"] == {"dice": 0.5}
    schema = requests.get(app["url"] + "/openapi.json", timeout=10).json()
    assert "multipart/form-data" in schema["paths"]["/v1/segment"]["post"]["requestBody"]["content"]


def test_segment_png_equals_offline(app, files, offline):
    response = _post(app, "/v1/segment", files["png"])
    body = response.json()
    assert response.status_code == 200, body
    expected = offline["seg2d"].predict_file(files["png"])
    assert body["model"] == "seg2d" and body["dims"] == 2 and response.headers["x-request-id"] == body["request_id"]
    np.testing.assert_array_equal(_mask(body), expected.mask)
    summary = expected.summary()
    assert body["area_mm2"] == summary["area_mm2"] and body["lesion_count"] == summary["lesion_count"]
    assert body["lesions"] == summary["lesions"] and body["notes"] and not body["spacing_known"]
    assert body["timing_ms"]["total"] >= body["inference_ms"] > 0
    upload, url = {"file": files["png"].read_bytes()}, app["url"] + "/v1/segment"
    rle = app["http"].post(url, files=upload, params={"mask": "rle"}, timeout=120).json()["mask"]
    counts = rle["counts"][0]
    decoded = np.repeat(np.arange(len(counts)) % 2, counts).reshape(rle["shape"])
    np.testing.assert_array_equal(decoded[None], expected.mask)


def test_classify_png_equals_offline(app, files, offline):
    body = _post(app, "/v1/classify", files["png"]).json()
    expected = offline["cls2d"].predict_file(files["png"])
    assert body["label"] == expected.label and body["model"] == "cls2d"
    np.testing.assert_allclose(
        [body["probabilities"][c] for c in ("no", "yes")], [expected.probabilities[c] for c in ("no", "yes")], rtol=1e-5
    )


def test_segment_brats_nifti_and_zipped_modalities(app, files, offline):
    expected = offline["brats3d"].predict_file(files["nifti"])
    for path in (files["nifti"], files["modalities"]):
        response = _post(app, "/v1/segment", path)
        body = response.json()
        assert response.status_code == 200, body
        assert body["model"] == "brats3d" and [c["name"] for c in body["channels"]] == ["WT", "TC", "ET"]
        np.testing.assert_array_equal(_mask(body), expected.mask)
        assert body["volume_ml"] == pytest.approx(expected.summary()["volume_ml"])


def test_segment_zipped_dicom_series_routes_to_the_model_that_fits(app, files, offline):
    response = _post(app, "/v1/segment", files["dicom_zip"])
    body = response.json()
    assert response.status_code == 200, body
    expected = offline["ct3d"].predict_file(files["dicom_zip"])
    assert body["model"] == "ct3d" and body["shape"] == [48, 40, 14] and body["spacing_known"]
    np.testing.assert_array_equal(_mask(body), expected.mask)
    assert body["volume_ml"] == pytest.approx(expected.mask.sum() * 0.8 * 0.8 * 2.5 / 1000)
    assert "SECRET-PATIENT" not in response.text


def _bomb_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 5000, 5000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _bad_inputs(files: dict, root: Path) -> list[tuple[str, str, dict, int]]:
    """(name, route, request keywords, expected status) for malformed requests."""
    png = files["png"].read_bytes()
    grey = io.BytesIO()
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(grey, format="PNG")
    nan = np.ones((8, 8, 8, 4), np.float32)
    nan[2, 2, 2, 1] = np.nan
    nan_path = write_nifti(root / "nan.nii.gz", nan, np.eye(4))
    header = nib.Nifti1Header()
    header.set_data_shape((3000, 3000, 3000))
    header.set_data_dtype(np.int16)
    nifti_bomb = header.binaryblock + b"\x00" * 4 + b"\x00" * 128
    flat = write_nifti(root / "flat.nii", np.ones((16, 16), np.float32), np.eye(4)).read_bytes()
    traversal, zip_bomb = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(traversal, "w") as archive:
        archive.writestr("../../evil.dcm", b"x")
    with zipfile.ZipFile(zip_bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("a.dcm", b"\x00" * (MAX_UNPACKED_MB + 1) * 1024**2)  # ~20 kB compressed
    gz = nan_path.read_bytes()
    raw = {"headers": {"content-type": "multipart/form-data; boundary=xyz"}}
    return [
        ("empty file", "/v1/segment", {"content": b""}, 400),
        ("no body", "/v1/segment", {"raw": b"", **raw}, 400),
        ("wrong content type", "/v1/segment", {"raw": b"hello", "headers": {"content-type": "text/plain"}}, 415),
        ("no file field", "/v1/segment", {"field": "image", "content": png}, 400),
        (
            "unclosed multipart",
            "/v1/segment",
            {"raw": b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nab', **raw},
            400,
        ),
        ("not an image", "/v1/segment", {"content": b"hello, I am text"}, 415),
        ("truncated PNG", "/v1/segment", {"content": png[: len(png) // 3]}, 422),
        ("truncated NIfTI", "/v1/segment", {"content": gz[: len(gz) // 2]}, 422),
        ("NaN voxels", "/v1/segment", {"content": gz}, 422),
        ("PNG bomb header", "/v1/classify", {"content": _bomb_png()}, 413),
        ("NIfTI bomb header", "/v1/segment", {"content": nifti_bomb}, 413),
        ("2D NIfTI", "/v1/segment", {"content": flat}, 422),
        ("body over the limit", "/v1/segment", {"content": b"\x89PNG" + b"\x00" * (MAX_UPLOAD_MB + 1) * 1024**2}, 413),
        ("grey PNG, 3-channel model", "/v1/segment", {"content": grey.getvalue(), "model": "seg2d"}, 422),
        ("volume to a 2D classifier", "/v1/classify", {"content": files["nifti"].read_bytes()}, 422),
        ("unknown model", "/v1/segment", {"content": png, "model": "nope"}, 404),
        ("model of the other task", "/v1/segment", {"content": png, "model": "cls2d"}, 400),
        ("zip path traversal", "/v1/segment", {"content": traversal.getvalue()}, 422),
        ("zip bomb", "/v1/segment", {"content": zip_bomb.getvalue()}, 413),
        ("truncated zip", "/v1/segment", {"content": files["dicom_zip"].read_bytes()[:2000]}, 422),
        ("missing API key", "/v1/segment", {"content": png, "key": None}, 401),
        ("wrong API key", "/v1/classify", {"content": png, "key": "guess"}, 401),
    ]


def test_bad_inputs_get_4xx_json_and_the_app_keeps_serving(app, files):
    results = []
    for name, route, spec, expected in _bad_inputs(files, app["root"]):
        headers = dict(spec.get("headers", {}))
        if "key" in spec:
            headers["X-API-Key"] = spec["key"] or ""
        if "raw" in spec:
            response = app["http"].post(app["url"] + route, data=spec["raw"], headers=headers, timeout=60)
        else:
            upload = {spec.get("field", "file"): ("upload", spec["content"])}
            params = {"model": spec["model"]} if "model" in spec else None
            response = app["http"].post(app["url"] + route, files=upload, params=params, headers=headers, timeout=60)
        body = response.json()
        results.append((name, response.status_code, expected))
        assert set(body) >= {"error", "detail"} and body["detail"], (name, body)
    assert [r for r in results if r[1] != r[2]] == [], results
    assert len(results) >= 12 and not [r for r in results if r[1] >= 500]
    assert requests.get(app["url"] + "/healthz", timeout=10).status_code == 200
    assert _post(app, "/v1/classify", files["png"]).status_code == 200


def test_reconfigure_changes_threshold_live(app, files):
    before = _post(app, "/v1/segment", files["png"]).json()
    stats = app["http"].get(app["url"] + "/v1/stats", timeout=30).json()["models"]
    override = {"name": "model_seg2d", "user_config": {"threshold": 0.9, "max_batch_size": 4}}
    app["deploy"](_args(app["packages"]), deployments=[override], port=app["port"])
    deadline = time.monotonic() + 60
    while app["http"].get(app["url"] + "/v1/stats", timeout=30).json()["models"]["seg2d"]["threshold"] != 0.9:
        assert time.monotonic() < deadline, "user_config override never reached the replica"
        time.sleep(0.5)
    after = _post(app, "/v1/segment", files["png"]).json()
    now = app["http"].get(app["url"] + "/v1/stats", timeout=30).json()["models"]
    assert (before["threshold"], after["threshold"]) == (0.5, 0.9) and now["seg2d"]["max_batch_size"] == 4
    assert after["area_mm2"] < before["area_mm2"]
    assert {n: s["pid"] for n, s in now.items()} == {n: s["pid"] for n, s in stats.items()}  # nothing restarted


def test_segment_dicom_seg_output_equals_the_json_mask(app, files):
    import highdicom as hd

    from tumorbench.data.dicom import dicom_series_headers
    from tumorbench.dicomseg import mask_from_dicom_seg

    json_body = _post(app, "/v1/segment", files["dicom_zip"], model="ct3d").json()
    response = app["http"].post(
        app["url"] + "/v1/segment",
        params={"model": "ct3d", "output": "dicom-seg"},
        files={"file": ("upload", files["dicom_zip"].read_bytes())},
        timeout=120,
    )
    assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
    sources = dicom_series_headers(sorted((app["root"] / "ct").glob("*.dcm")))
    seg = hd.seg.segread(io.BytesIO(response.content))
    np.testing.assert_array_equal(mask_from_dicom_seg(seg, sources), _mask(json_body))
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {
        str(ds.SOPInstanceUID) for ds in sources
    }
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmVersion == json_body["version"]
    refused = app["http"].post(
        app["url"] + "/v1/segment",
        params={"output": "dicom-seg"},
        files={"file": ("upload", files["nifti"].read_bytes())},
        timeout=120,
    )
    assert refused.status_code == 422 and "needs a DICOM input" in refused.json()["detail"]
    assert (
        app["http"]
        .post(app["url"] + "/v1/segment", params={"output": "svg"}, files={"file": ("upload", b"x")}, timeout=30)
        .status_code
        == 422
    )


def test_bad_user_config_is_rejected_while_the_model_keeps_answering(app, files):
    before = app["http"].get(app["url"] + "/v1/stats", timeout=30).json()["models"]["seg2d"]
    bad = {"name": "model_seg2d", "user_config": {"threshold": 2.0, "max_batch_size": 0}}
    app["deploy"](_args(app["packages"]), deployments=[bad], port=app["port"])
    deadline = time.monotonic() + 60
    while not (now := app["http"].get(app["url"] + "/v1/stats", timeout=30).json()["models"]["seg2d"])["config_error"]:
        assert time.monotonic() < deadline, "the bad user_config never reached the replica"
        time.sleep(0.5)
    response = _post(app, "/v1/segment", files["png"])
    assert response.status_code == 200 and response.json()["threshold"] == before["threshold"]
    assert now["pid"] == before["pid"] and now["threshold"] == before["threshold"]
    assert "previous settings kept" in now["config_error"] and "threshold" in now["config_error"]
    print("stats after a bad user_config:", {k: now[k] for k in ("pid", "threshold", "config_error")})


def test_readyz_names_the_corrupt_package_and_the_others_serve(app, files):
    assert requests.get(app["url"] + "/healthz", timeout=10).status_code == 200
    response = requests.get(app["url"] + "/readyz", timeout=30)
    body = response.json()
    print("/readyz:", response.status_code, body)
    assert response.status_code == 503 and body["not_ready"] == ["broken"]
    assert all(body["models"][name]["ready"] for name in ("seg2d", "cls2d", "brats3d", "ct3d"))
    assert "cannot be loaded" in body["models"]["broken"]["error"]
    broken = _post(app, "/v1/classify", files["png"], model="broken")
    assert broken.status_code == 503 and broken.json()["error"] == "model_unavailable"
    assert _post(app, "/v1/classify", files["png"]).json()["model"] == "cls2d"


def test_host_header_allow_list(app):
    evil = requests.get(app["url"] + "/healthz", headers={"Host": "rebind.example:8000"}, timeout=10)
    assert evil.status_code == 421
    assert requests.get(app["url"] + "/healthz", headers={"Host": "localhost:1"}, timeout=10).status_code == 200


def test_overload_is_shed_quickly_with_retry_after(app, files):
    """A request past the ingress's limit is answered 503 at once; one admitted while every model replica is
    busy gets its 503 after ``queue_timeout_s`` (1 s) plus its own decoding, never after the model's answer."""
    volume = files["nifti"].read_bytes()  # 3D sliding-window inference: slow enough to fill the ingress

    def one(_: int) -> tuple[int, float, str | None, str]:
        start = time.perf_counter()
        response = _post(app, "/v1/segment", content=volume, model="brats3d")
        detail = response.json().get("detail", "") if response.status_code == 503 else ""
        return response.status_code, time.perf_counter() - start, response.headers.get("retry-after"), detail

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(one, range(12)))
    shed = [r for r in results if r[0] == 503 and r[3].startswith("server busy")]
    untaken = [r for r in results if r[0] == 503 and r not in shed]
    print("overload:", sorted((code, round(seconds, 2), detail[:40]) for code, seconds, _, detail in results))
    assert {code for code, _, _, _ in results} <= {200, 503} and shed and len(shed) + len(untaken) < len(results)
    assert len(shed) >= len(results) - 2 * MAX_CONCURRENT  # at most the ingress's limit admitted at a time
    assert all(retry == "1" and seconds < 1.0 for _, seconds, retry, _ in shed)
    assert all(retry == "1" and "took the request within 1 s" in detail and s < 5.0 for _, s, retry, detail in untaken)
    assert _post(app, "/v1/segment", files["png"]).status_code == 200


def test_no_phi_in_responses_or_logs(app, ray_session):
    uploads = {
        "duplicate slices": attack_files.phi_dicom_zip(duplicate=True),
        "two series": attack_files.phi_dicom_zip(two_series=True),
        "malformed UID": attack_files.phi_dicom_zip(bad_uid=True),
    }
    texts = []
    for name, data in uploads.items():
        response = app["http"].post(
            app["url"] + "/v1/segment", files={"file": ("DOE_JOHN_MRN123456_001.zip", data)}, timeout=120
        )
        texts.append(f"{name}: {response.status_code} {response.text}")
        assert response.status_code in (200, 422), texts[-1]
    logs = Path(ray_session._private.worker._global_node.get_logs_dir_path())
    log_text = "\n".join(
        p.read_text(errors="replace") for p in logs.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err")
    )
    secrets = ("DOE^JOHN", "DOE_JOHN", "MRN123456", "19610415")  # the malformed UID carries the MRN
    leaks = [
        (s, where)
        for s in secrets
        for where, text in (("responses", "\n".join(texts)), ("logs", log_text))
        if s in text
    ]
    print("PHI grep:", len(texts), "responses,", len(log_text), "log characters,", "leaks:", leaks)
    print("\n".join(t[:200] for t in texts))
    assert leaks == [] and len(log_text) > 0


def _classify_200_count(text: str) -> float:
    """The exported count of /v1/classify answers with status 200 (0 until Ray's agent has exported it)."""
    counts = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ray_tumorbench_requests") and 'path="/v1/classify"' in line and 'status="200"' in line
    ]
    return sum(counts)


def test_prometheus_metrics(app, ray_session, files):
    assert _post(app, "/v1/classify", files["png"]).status_code == 200
    node = ray_session._private.worker._global_node
    url = f"http://127.0.0.1:{node.metrics_export_port}/metrics"
    # Wait for this request's own line: other paths' counters (/v1/models, ...) can be exported a cycle earlier.
    deadline, text = time.monotonic() + 60, ""
    # Serve's own counters come from other processes and can be exported a cycle later than ours: wait for both.
    while time.monotonic() < deadline and not (
        "tumorbench_decode_ms_bucket" in text
        and _classify_200_count(text)
        and "ray_serve_num_http_requests" in text
        and "tumorbench_batch_size_count" in text  # from the model replica: another process
    ):
        time.sleep(2)  # Ray's agent exports every few seconds
        text = requests.get(url, timeout=10).text
    lines = [line for line in text.splitlines() if "tumorbench_" in line and not line.startswith("#")]
    print("metrics:", len(lines), "tumorbench lines, e.g.", [line for line in lines if "requests" in line][:3])
    assert any("tumorbench_decode_ms_bucket" in line for line in lines)
    assert any("tumorbench_inference_ms" in line for line in lines)
    assert _classify_200_count(text) >= 1, [line for line in lines if 'path="/v1/classify"' in line]
    assert "ray_serve_num_http_requests" in text  # Serve's own
    batches = [line for line in lines if line.startswith("ray_tumorbench_batch_size_count")]
    assert batches and sum(float(line.rsplit(" ", 1)[1]) for line in batches) >= 1, batches
    assert any(line.startswith("ray_tumorbench_batch_wait_ms_bucket") for line in lines)


def test_direct_ingress_answers_as_the_proxy_does(app, files):
    """Serve's throughput mode (the session's Ray starts in it): the ingress replica's own port, no proxy hop."""
    from tumorbench.serving.runner import ingress_urls

    urls = ingress_urls()
    assert urls and all(f":{app['port']}" not in url for url in urls), urls
    via_proxy = _post(app, "/v1/segment", files["png"])
    direct = app["http"].post(
        urls[0] + "/v1/segment", files={"file": ("upload", files["png"].read_bytes())}, timeout=120
    )
    assert direct.status_code == via_proxy.status_code == 200, direct.text
    assert (_mask(direct.json()) == _mask(via_proxy.json())).all() and direct.headers.get("x-request-id")
    assert requests.get(urls[0] + "/healthz", headers={"Host": "rebind.example"}, timeout=10).status_code == 421
    assert requests.get(urls[0] + "/v1/models", timeout=10).status_code == 401


def test_killed_model_replica_gives_quick_503s_then_serves_again(app, files):
    """Last in the module: requests while the only seg2d replica is dead get 503 + Retry-After within ~1 s."""
    import ray

    actor = next(
        (n["name"], n["namespace"])
        for n in ray.util.list_named_actors(all_namespaces=True)
        if "SERVE_REPLICA" in n["name"] and "model_seg2d" in n["name"]
    )
    ray.kill(ray.get_actor(*actor), no_restart=False)

    def one(_: int) -> tuple[int, float, str | None]:
        start = time.perf_counter()
        response = _post(app, "/v1/segment", files["png"], model="seg2d")
        return response.status_code, time.perf_counter() - start, response.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(one, range(3)))
    print("while the replica restarts:", [(code, round(s, 2)) for code, s, _ in results])
    assert all(code == 503 and seconds < 3.0 and retry == "1" for code, seconds, retry in results), results
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and one(0)[0] != 200:
        time.sleep(1)
    assert one(0)[0] == 200  # Serve started a new replica
