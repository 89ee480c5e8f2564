"""A local S3 for tests: ``moto_server`` on loopback (beside this python, on PATH or ``$TUMORBENCH_MOTO_SERVER``).

``env()`` holds what a client needs (dummy credentials, ``AWS_ENDPOINT_URL``): pyarrow,
and so Ray Train/Tune, read them from the environment of each process.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def moto_server_path() -> str | None:
    for candidate in (
        os.environ.get("TUMORBENCH_MOTO_SERVER"),
        str(Path(sys.executable).parent / "moto_server"),
        shutil.which("moto_server"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


class LocalS3:
    """A running moto server; ``env`` for clients, ``make_bucket`` through pyarrow."""

    def __init__(self, process: subprocess.Popen, port: int):
        self.process, self.port = process, port
        self.endpoint = f"http://127.0.0.1:{port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def make_bucket(self, name: str) -> str:
        import pyarrow.fs

        fs = pyarrow.fs.S3FileSystem(
            endpoint_override=self.endpoint,
            access_key="testing",
            secret_key="testing",
            region="us-east-1",
            scheme="http",
            allow_bucket_creation=True,
        )
        fs.create_dir(name)
        return f"s3://{name}"


def start_local_s3(timeout_s: float = 60) -> LocalS3:
    server = moto_server_path()
    if server is None:
        pytest.skip("moto_server not installed (pip install 'moto[server]', the dev extra)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/moto-api/", timeout=2)
            return LocalS3(process, port)
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise RuntimeError(f"moto_server did not answer on port {port} within {timeout_s} s")


def stop_local_s3(s3: LocalS3) -> None:
    s3.process.terminate()
    try:
        s3.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        s3.process.kill()
