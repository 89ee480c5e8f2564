"""The Serve app's HTTP helpers and package discovery, without Ray: multipart parsing, model names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from model_packages import manifest_only
from tumorbench.serving.packages import resolve_packages
from tumorbench.serving.protocol import ApiError, parse_upload


def _multipart(files: dict) -> tuple[str, bytes]:
    prepared = requests.Request("POST", "http://x/", files=files).prepare()
    return prepared.headers["Content-Type"], prepared.body


def test_multipart_file_bytes_survive_exactly():
    data = os.urandom(3000) + b"\r\n--boundary-lookalike\r\n\r\n" + os.urandom(500) + b"\r\n"
    content_type, body = _multipart({"note": ("n.txt", b"hi"), "file": ("scan.nii.gz", data)})
    assert parse_upload(content_type, body) == data
    assert parse_upload("application/octet-stream", data) == data  # raw bodies pass as they are


@pytest.mark.parametrize("content_type, body, status, words", [
    ("multipart/form-data; boundary=b", b"", 400, "empty request body"),
    ("text/plain", b"hello", 415, "unsupported content type"),
    ("multipart/form-data", b"--b\r\n", 400, "without a boundary"),
    ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nab", 400,
     "closing boundary missing"),
    ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=\"img\"\r\n\r\nab\r\n--b--\r\n",
     400, "no field 'file' (fields: img)"),
    ("multipart/form-data; boundary=b", b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n\r\n--b--\r\n",
     400, "is empty"),
])
def test_malformed_uploads(content_type, body, status, words):
    with pytest.raises(ApiError) as caught:
        parse_upload(content_type, body)
    assert caught.value.status == status and words in caught.value.detail


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
    assert found == {"unet_lgg": run / "checkpoint_epoch_0002", "unet_lgg_2": other,
                     "resnet18_yes_no": classifier, "mine": other}
    # The folder `tumorbench train --out` made (it holds train/, config.json, history.csv) serves the same checkpoint.
    (run.parent / "history.csv").write_text("epoch,dice\n")
    assert resolve_packages([str(run.parent)]) == {"unet_lgg": run / "checkpoint_epoch_0002"}
    _package(tmp_path / "gan", "gan", {})
    with pytest.raises(ValueError, match="cannot be served"):
        resolve_packages([str(tmp_path / "gan")])
    with pytest.raises(FileNotFoundError):
        resolve_packages([str(tmp_path / "missing")])


def test_serve_refuses_a_newer_package_format_by_name_before_ray_starts(tmp_path):
    package = manifest_only(tmp_path / "future_pkg", "segmentation", {"dice": 0.5})
    manifest = json.loads((package / "model.json").read_text())
    (package / "model.json").write_text(json.dumps(manifest | {"format": "tumorbench-model/9"}))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tumorbench.cli", "serve", "--models", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"error: {package / 'model.json'}: model package format tumorbench-model/9 is newer" in done.stderr
    assert "Ray" not in done.stderr and "ray" not in done.stdout  # no local Ray was started
    assert time.perf_counter() - started < 60
