"""A real two-node Ray cluster on loopback runs the main job through ``ray job submit``.

Each node gets its own ``--temp-dir``. In Ray's default temp dir, the address file
``ray start --head`` writes would make every later ``ray.init()`` on this machine
(other tests, other users) join this cluster; and two nodes sharing one temp dir
share one session folder, where the worker node's runtime-env agent deletes the
job's working directory from under the driver when its own references end.
Only the processes this test started are stopped (never ``ray stop``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.ray, pytest.mark.slow]

JOB_TIMEOUT_S = 25 * 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ray_env() -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # Job entrypoints run `python` from PATH: it must be this environment's, with ray and tumorbench.
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    # Loopback-only test cluster: no token auth (Ray 2.60 would ask every CLI client for it).
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    return env


def _ray(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    ray_cli = str(Path(sys.executable).parent / "ray")
    return subprocess.run([ray_cli, *args], env=env, capture_output=True, text=True, timeout=timeout)


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can read."""
    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        table[int(proc.name)] = (parent, cmdline)
    return table


def _cluster_pids(markers: tuple[str, ...]) -> set[int]:
    """This cluster's processes: those naming its temp dirs or GCS port, and their descendants.

    Agents rename themselves (``ray::DashboardAgent``), so they are found as children.
    """
    table = _processes()
    found = {pid for pid, (_, cmd) in table.items() if any(m in cmd for m in markers)} - {os.getpid()}
    while True:
        children = {pid for pid, (parent, _) in table.items() if parent in found} - found - {os.getpid()}
        if not children:
            return found
        found |= children


def _stop_cluster(markers: tuple[str, ...]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _cluster_pids(markers):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 15
        while _cluster_pids(markers) and time.time() < deadline:
            time.sleep(0.5)


@pytest.fixture()
def two_node_cluster():
    """Head (1 CPU, job API on loopback) plus one worker node (1 CPU); yields (dashboard URL, env)."""
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the ray CLI is not installed beside this python")
    # Short paths: Ray's unix sockets live under the temp dirs (108-byte limit).
    head_dir, worker_dir = (tempfile.mkdtemp(prefix=f"tbray{role}", dir="/tmp") for role in ("h", "w"))
    env = _ray_env()
    gcs_port, dash_port = _free_port(), _free_port()
    common = ["--num-cpus", "1", "--num-gpus", "0", "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    try:
        head = _ray(
            "start",
            "--head",
            "--port",
            str(gcs_port),
            "--temp-dir",
            head_dir,
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(dash_port),
            "--dashboard-agent-listen-port",
            str(_free_port()),
            "--ray-client-server-port",
            str(_free_port()),
            *common,
            env=env,
        )
        assert head.returncode == 0, head.stdout + head.stderr
        worker = _ray(
            "start",
            "--address",
            f"127.0.0.1:{gcs_port}",
            "--temp-dir",
            worker_dir,
            "--dashboard-agent-listen-port",
            str(_free_port()),
            *common,
            env=env,
        )
        assert worker.returncode == 0, worker.stdout + worker.stderr
        yield f"http://127.0.0.1:{dash_port}", f"127.0.0.1:{gcs_port}", env
    finally:
        _stop_cluster((head_dir, worker_dir, f"--address=127.0.0.1:{gcs_port} ", f":{gcs_port} --host"))
        for temp_dir in (head_dir, worker_dir):
            shutil.rmtree(temp_dir, ignore_errors=True)


def _alive_nodes(gcs_address: str, env: dict[str, str]) -> int:
    probe = (
        f"import ray; ray.init(address={gcs_address!r}, log_to_driver=False); "
        "print(sum(n['Alive'] for n in ray.nodes()))"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


def test_compare_smoke_runs_as_a_job_on_two_nodes(two_node_cluster, tmp_path):
    dashboard, gcs_address, env = two_node_cluster
    assert _alive_nodes(gcs_address, env) == 2

    out = tmp_path / "results"
    submit = _ray(
        "job",
        "submit",
        "--address",
        dashboard,
        "--working-dir",
        str(REPO_ROOT),
        "--",
        "python",
        "experiments/compare.py",
        "--preset",
        "smoke",
        "--out",
        str(out),
        env=env,
        timeout=JOB_TIMEOUT_S,
    )
    log = submit.stdout + submit.stderr
    assert submit.returncode == 0, log[-5000:]
    assert "succeeded" in log, log[-5000:]

    for name in (
        "leaderboard.csv",
        "folds.csv",
        "predictions.csv",
        "stats.csv",
        "trials.csv",
        "manifest.json",
        "report.html",
        "best/segmentation/model.json",
    ):
        assert (out / name).is_file(), f"{name} missing; job log:\n{log[-3000:]}"
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"unet", "attention_unet", "segresnet", "otsu", "kmeans"} <= set(board["model"])
    assert board["dice_mean"].between(0, 1).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["preset"] == "smoke" and manifest["split"]["folds"] == 2
    # The job's driver joined this cluster (it did not start a local Ray of its own).
    port = gcs_address.rsplit(":", 1)[1]
    assert re.search(rf"Ray cluster [\w.]+:{port}: 2 nodes, 2 CPUs", log), log[-5000:]
