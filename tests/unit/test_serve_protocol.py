"""The Serve app's HTTP helpers and package discovery, without Ray: bounded upload receiving, model names."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest
import requests
from starlette.requests import Request

import attack_files
from model_packages import manifest_only
from tumorbench.errors import DataError
from tumorbench.serving.packages import resolve_packages
from tumorbench.serving.protocol import LOOPBACK_HOSTS, ApiError, exposure_problem, host_allowed, receive_upload

FILE_PART = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\n'


def _multipart(files: dict, data: dict | None = None) -> tuple[str, bytes]:
    prepared = requests.Request("POST", "http://x/", files=files, data=data).prepare()
    return prepared.headers["Content-Type"], prepared.body


def _request(content_type: str, body: bytes, *, declare_length: bool = True) -> Request:
    """A Starlette request whose body arrives in 64 kB chunks, as from the server."""
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    messages = [{"type": "http.request", "body": c, "more_body": n < len(chunks) - 1} for n, c in enumerate(chunks)]

    async def receive() -> dict:
        return messages.pop(0)

    headers = [(b"content-type", content_type.encode())]
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    return Request({"type": "http", "method": "POST", "path": "/", "query_string": b"", "headers": headers}, receive)


def _receive(tmp_path, content_type: str, body: bytes, limit: int = 1 << 30, **kwargs) -> bytes:
    dest = tmp_path / "upload"
    size = asyncio.run(receive_upload(_request(content_type, body, **kwargs), limit, dest))
    assert size == dest.stat().st_size
    return dest.read_bytes()


def _refused(tmp_path, content_type: str, body: bytes, limit: int = 1 << 30, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        _receive(tmp_path, content_type, body, limit, **kwargs)
    return caught.value


def test_multipart_file_bytes_survive_exactly(tmp_path):
    data = os.urandom(300_000) + b"\r\n--boundary-lookalike\r\n\r\n" + os.urandom(500) + b"\r\n"
    content_type, body = _multipart({"file": ("scan.nii.gz", data)}, {"note": "hi"})
    assert _receive(tmp_path, content_type, body) == data
    content_type, body = _multipart({"other": ("n.txt", b"hi"), "file": ("scan.nii.gz", data)})
    assert _refused(tmp_path, content_type, body).detail.endswith("Too many files. Maximum number of files is 1.")
    assert _receive(tmp_path, "application/octet-stream", data) == data  # raw bodies pass as they are


@pytest.mark.parametrize(
    "content_type, body, status, words",
    [
        ("multipart/form-data; boundary=b", b"", 400, "no file in the field 'file'"),
        ("application/octet-stream", b"", 400, "empty upload"),
        ("text/plain", b"hello", 415, "unsupported content type 'text/plain'"),
        ("multipart/form-data", b"--b\r\n", 400, "malformed multipart body"),
        ("multipart/form-data; boundary=b", FILE_PART + b"ab", 400, ""),
        (
            "multipart/form-data; boundary=b",
            b'--b\r\nContent-Disposition: form-data; name="PATIENT_DOE"\r\n\r\nab\r\n--b--',
            400,
            "no file in the field 'file' (1 other field(s))",
        ),
        ("multipart/form-data; boundary=b", FILE_PART + b"\r\n--b--\r\n", 400, "empty upload"),
    ],
)
def test_malformed_uploads(tmp_path, content_type, body, status, words):
    error = _refused(tmp_path, content_type, body)
    assert error.status == status and words in error.detail and "PATIENT_DOE" not in error.detail


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: attack_files.multipart_many_parts(50_000), "Too many fields"),
        (lambda: attack_files.multipart_many_headers(500_000), "Invalid multipart data"),  # over 8 header lines
    ],
)
def test_hostile_forms_are_refused_cheaply(tmp_path, make, words):
    content_type, body = make()
    assert len(body) > 2_500_000
    start = time.process_time()
    error = _refused(tmp_path, content_type, body)
    assert error.status == 400 and words in error.detail
    assert time.process_time() - start < 0.2  # the hand-written parser took > 1 s on these


def test_body_limit_and_memory_while_receiving(tmp_path):
    data = os.urandom(16 * 1024**2)
    content_type, body = attack_files.multipart_file(data)
    assert _refused(tmp_path, content_type, body, limit=1_000_000).status == 413  # declared length
    assert _refused(tmp_path, content_type, body, limit=1_000_000, declare_length=False).status == 413  # streamed
    request = _request(content_type, body)
    tracemalloc.start()
    try:
        asyncio.run(receive_upload(request, 1 << 30, tmp_path / "upload"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "upload").read_bytes() == data
    assert peak < 4 * 1024**2  # spooled to disk, never held whole (the old parser: twice the body)


def _package(path, task, metrics, name="unet", layout="lgg"):
    return manifest_only(path, task, metrics, name, layout)


def test_run_folder_serves_its_best_checkpoint_and_names_are_unique(tmp_path, monkeypatch):
    run = tmp_path / "run" / "train"
    for epoch, dice in ((1, 0.61), (2, 0.74), (3, 0.70)):
        _package(run / f"checkpoint_epoch_{epoch:04d}", "segmentation", {"dice": dice})
    other = _package(tmp_path / "other", "segmentation", {"dice": 0.5})
    classifier = _package(tmp_path / "best" / "classification", "classification", {"auc": 0.8}, "resnet18", "yes no")
    monkeypatch.setenv("TB_TEST_MODELS", f"{other}{os.pathsep}{tmp_path / 'best'}")
    found = resolve_packages([str(run), "${TB_TEST_MODELS:-nowhere}", f"Mine={other}"])
    assert found == {
        "unet_lgg": run / "checkpoint_epoch_0002",
        "unet_lgg_2": other,
        "resnet18_yes_no": classifier,
        "mine": other,
    }
    # The folder `tumorbench train --out` made (it holds train/, config.json, history.csv) serves the same checkpoint.
    (run.parent / "history.csv").write_text("epoch,dice\n")
    assert resolve_packages([str(run.parent)]) == {"unet_lgg": run / "checkpoint_epoch_0002"}
    _package(tmp_path / "gan", "gan", {})
    with pytest.raises(ValueError, match="cannot be served"):
        resolve_packages([str(tmp_path / "gan")])
    with pytest.raises(FileNotFoundError):
        resolve_packages([str(tmp_path / "missing")])


@pytest.mark.parametrize(
    "header, allowed, ok",
    [
        ("127.0.0.1:8000", LOOPBACK_HOSTS, True),
        ("localhost", LOOPBACK_HOSTS, True),
        ("[::1]:8000", LOOPBACK_HOSTS, True),
        ("evil.example:8000", LOOPBACK_HOSTS, False),  # DNS rebinding: the attacker's name, resolved to 127.0.0.1
        ("127.0.0.1.evil.example", LOOPBACK_HOSTS, False),
        (None, LOOPBACK_HOSTS, False),
        ("scanner.example.org", ("*",), True),
    ],
)
def test_host_allow_list(header, allowed, ok):
    assert host_allowed(header, allowed) is ok


def test_exposed_without_api_key_is_refused():
    assert exposure_problem(LOOPBACK_HOSTS, None, False) is None
    assert "no API key" in exposure_problem(("*",), None, False)
    assert "no API key" in exposure_problem(("10.0.0.5",), None, False)
    assert exposure_problem(("*",), "key", False) is None and exposure_problem(("*",), None, True) is None


def test_serve_refuses_a_newer_package_format_by_name_before_ray_starts(tmp_path):
    package = manifest_only(tmp_path / "future_pkg", "segmentation", {"dice": 0.5})
    manifest = json.loads((package / "model.json").read_text())
    (package / "model.json").write_text(json.dumps(manifest | {"format": "tumorbench-model/9"}))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tumorbench.cli", "serve", "--models", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert f"error: {package / 'model.json'}: model package format tumorbench-model/9 is newer" in done.stderr
    assert "Ray" not in done.stderr and "ray" not in done.stdout  # no local Ray was started
    assert time.perf_counter() - started < 60


@pytest.mark.parametrize("allowed, status", [(("*",), 404), (LOOPBACK_HOSTS, 421)])
def test_middleware_reads_this_replicas_hosts_and_counts(monkeypatch, allowed, status):
    # Serve ships the Ingress class by value: the middleware must find the replica's own settings and
    # counter through Serve (a module global written by Ingress.__init__ was a copy it never saw).
    from types import SimpleNamespace

    from starlette.testclient import TestClient

    from tumorbench.serving import http

    counted = []
    ingress = SimpleNamespace(allowed_hosts=allowed, telemetry=SimpleNamespace(count=lambda *a: counted.append(a)))
    monkeypatch.setattr(http.serve, "get_replica_context", lambda: SimpleNamespace(servable_object=ingress))
    response = TestClient(http.api, base_url="http://public.example").get("/no-such-route")
    assert response.status_code == status and counted == [("/no-such-route", status)]


def test_serve_config_is_read_as_serve_run_reads_it(tmp_path, monkeypatch):
    """`tumorbench serve --config serve/config.yaml` takes the same settings as `serve run` (and stops cleanly)."""
    import yaml

    from tumorbench.serving.settings import AppArgs, read_serve_config

    config = Path(__file__).resolve().parents[2] / "serve" / "config.yaml"
    raw = yaml.safe_load(config.read_text())
    args, where = read_serve_config(config)
    assert args == raw["applications"][0]["args"] and args["models"] == ["${TUMORBENCH_MODELS:-runs/best}"]
    assert where == {"host": "127.0.0.1", "port": 8000, "request_timeout_s": 60.0, "deployments": None}
    assert AppArgs(**args).max_batch_size == 16
    package = manifest_only(tmp_path / "future_pkg", "segmentation", {"dice": 0.5})
    manifest = json.loads((package / "model.json").read_text())
    (package / "model.json").write_text(json.dumps(manifest | {"format": "tumorbench-model/9"}))
    done = subprocess.run(
        [sys.executable, "-m", "tumorbench.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ | {"TUMORBENCH_MODELS": str(tmp_path)},
    )
    assert done.returncode == 2 and "tumorbench-model/9 is newer" in done.stderr  # the config's models, from the env
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({"applications": [{"import_path": "x:y"}]}))
    with pytest.raises(DataError, match="needs exactly one application"):
        read_serve_config(other)


def test_a_model_replica_takes_every_request_the_ingress_admits():
    """Serve's router holds what a full model replica cannot take and retries with a back-off: 64 admitted uploads
    against 32 ongoing left the cores idle (110 req/s where 32 clients made 187). The default covers what the
    ingress replicas admit; a setting of the user's wins."""
    from tumorbench.serving.settings import AppArgs

    base = {"models": ["x"]}
    assert AppArgs(**base).model_ongoing_requests() == 32  # 2 x batch 16 >= the 16 one ingress admits
    assert AppArgs(**base, max_concurrent_requests=72).model_ongoing_requests() == 72
    assert AppArgs(**base, max_concurrent_requests=24, ingress_replicas=2).model_ongoing_requests() == 48
    assert AppArgs(**base, max_concurrent_requests=72, max_ongoing_requests=20).model_ongoing_requests() == 20
