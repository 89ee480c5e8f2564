"""Cluster checks on one machine, too long for the test suite: S3 storage, private disks, GPUs, node loss.

    python scripts/cluster_checks.py s3-study      # smoke study on S3 (moto), --resume from a new --out, listing
    python scripts/cluster_checks.py private-fs    # 2 nodes, the worker's results folder private; local refused, S3 ok
    python scripts/cluster_checks.py gpu           # trials placed on a node with a declared GPU; no-GPU message
    python scripts/cluster_checks.py node-loss     # the worker node's raylet killed mid-fold; the fold resumes

Each check starts its own Ray nodes (own ``--temp-dir``, own ports) and stops only the processes it
started. S3 is ``moto_server`` on loopback (the ``dev`` extra; or ``$TUMORBENCH_MOTO_SERVER``).
Run under the machine's heavy lock: ``flock /tmp/tumorbench-heavy.lock timeout 1800 python ...``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "platform"), str(REPO / "tests")]

from tests.integration.test_cluster import (  # noqa: E402 (after the sys.path lines)
    _cluster_pids,
    _free_port,
    _ray,
    _ray_env,
    _stop_cluster,
)
from tests.object_store import start_local_s3, stop_local_s3  # noqa: E402

PYTHON = sys.executable
COMPARE = str(REPO / "experiments" / "compare.py")


def say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def run(cmd: list[str], env: dict[str, str], timeout: float = 1500) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    lines = (done.stdout + done.stderr).splitlines()
    keep = [
        line for line in lines if line.startswith(("[check]", "[tumorbench]", "error", "model", "  ")) or "|" in line
    ]
    print("\n".join(keep[-40:]), flush=True)
    print(f"(exit {done.returncode}, {time.perf_counter() - started:.0f} s)", flush=True)
    return done


@contextmanager
def local_s3():
    s3 = start_local_s3()
    os.environ.update(s3.env)  # this script lists the bucket too
    try:
        yield s3, s3.make_bucket("tumorbench-checks")
    finally:
        stop_local_s3(s3)


@contextmanager
def cluster(nodes: list[dict], env: dict[str, str]):
    """Ray nodes on loopback: the first is the head. Each dict: cpus, gpus, and ``wrap`` (a command prefix)."""
    dirs = [tempfile.mkdtemp(prefix=f"tbck{i}", dir="/tmp") for i in range(len(nodes) + 2)]
    gcs = _free_port()
    markers = tuple(dirs) + (f"--address=127.0.0.1:{gcs} ", f":{gcs} --host")
    state = {"gcs": f"127.0.0.1:{gcs}", "dirs": dirs, "markers": markers, "env": env}
    try:
        for i, node in enumerate(nodes):
            start_node(state, i, node)
        yield state
    finally:
        _stop_cluster(markers)
        for folder in dirs:
            shutil.rmtree(folder, ignore_errors=True)


def start_node(state: dict, index: int, node: dict) -> None:
    common = [
        "--num-cpus",
        str(node.get("cpus", 1)),
        "--num-gpus",
        str(node.get("gpus", 0)),
        "--node-ip-address",
        "127.0.0.1",
        "--disable-usage-stats",
        "--temp-dir",
        state["dirs"][index],
        "--dashboard-agent-listen-port",
        str(_free_port()),
    ]
    if index == 0:
        args = [
            "start",
            "--head",
            "--port",
            state["gcs"].split(":")[1],
            "--include-dashboard",
            "true",
            "--dashboard-host",
            "127.0.0.1",
            "--dashboard-port",
            str(_free_port()),
            "--ray-client-server-port",
            str(_free_port()),
            *common,
        ]
    else:
        args = ["start", "--address", state["gcs"], *common]
    if node.get("wrap"):
        ray_cli = str(Path(PYTHON).parent / "ray")
        script = node["wrap"] + " && exec " + " ".join([ray_cli, *args])
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            env=state["env"],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    else:
        done = _ray(*args, env=state["env"])
    assert done.returncode == 0, done.stdout + done.stderr
    print(f"[check] node {index} up: {node}", flush=True)


def synthetic_data(root: Path) -> str:
    from tumorbench.data.synthetic import make_study

    if not root.exists():
        make_study("brain-mri", root, cases=12, seed=0)
    return str(root)


def listing_summary(location: str) -> None:
    from tumorbench import storage

    files = storage.listing(location)
    print(f"[check] {location}: {len(files)} objects", flush=True)
    shown = [f for f in files if f.count("/") <= 1 or "/fold_0/" in f and "trial_" in f and "/unet/" in f"/{f}"]
    for name in shown[:60]:
        print(f"    {name}")


def check_s3_study(work: Path) -> None:
    with local_s3() as (s3, bucket):
        env = _ray_env() | s3.env | {"PYTHONPATH": f"{REPO / 'platform'}:{REPO}"}
        uri = f"{bucket}/smoke"
        say("smoke study with --storage on S3")
        first = run([PYTHON, COMPARE, "--preset", "smoke", "--out", str(work / "first"), "--storage", uri], env)
        assert first.returncode == 0
        say("driver restarted elsewhere: --resume with a new --out reads the finished trials from S3")
        again = run(
            [PYTHON, COMPARE, "--preset", "smoke", "--out", str(work / "second"), "--storage", uri, "--resume"], env
        )
        assert again.returncode == 0
        listing_summary(uri)


def check_private_fs(work: Path) -> None:
    results = work / "results"  # the worker node gets an empty tmpfs here: a disk of its own
    results.mkdir(parents=True)
    data = synthetic_data(work / "data")
    with local_s3() as (s3, bucket):
        env = _ray_env() | s3.env | {"PYTHONPATH": f"{REPO / 'platform'}:{REPO}"}
        nodes = [{"cpus": 1}, {"cpus": 1, "wrap": f"mount -t tmpfs tmpfs {results}"}]
        with cluster(nodes, env) as state:
            args = [PYTHON, COMPARE, "--preset", "smoke", "--data", data, "--address", state["gcs"]]
            say("two nodes, --storage a folder on the head only: refused before any trial")
            refused = run([*args, "--out", str(results / "local")], env, timeout=600)
            assert refused.returncode == 2 and "cannot see" in refused.stderr, refused.stderr[-2000:]
            say("the same cluster with --storage on S3")
            works = run([*args, "--out", str(results / "s3"), "--storage", f"{bucket}/private"], env)
            assert works.returncode == 0
            worker_logs = Path(state["dirs"][1]) / "session_latest" / "logs"
            trains = [p.name for p in worker_logs.glob("worker-*.out") if "RayTrainWorker" in p.read_text()]
            print(f"[check] Train worker processes that ran on the private-disk node: {len(trains)}", flush=True)
        listing_summary(f"{bucket}/private")


def _gpu_search(gcs: str, work: Path, gpus: float) -> str:
    """A one-trial search asking for ``gpus`` per trial; returns the node ids its Train workers ran on."""
    code = f"""
import ray, sys
sys.path[:0] = {[str(REPO), str(REPO / "platform"), str(REPO / "tests")]!r}
from conftest import write_blob_folders
from pathlib import Path
from ray import tune
from ray.util.state import list_actors
from tumorbench.training.config import TrainConfig
from tumorbench.transforms import AugmentConfig
from tumorbench.tuning.resources import Resources
from tumorbench.tuning.search import run_search, trial_rows
ray.init(address={gcs!r}, log_to_driver=False)
data = Path({str(work / "blobs")!r})
if not data.exists():
    write_blob_folders(data, n=8)
base = TrainConfig(task="classification", model="resnet18_tiny", data=str(data), out=str(data) + "-unused",
                   n_folds=2, epochs=1, batch_size=8, warmup_epochs=0, augment=AugmentConfig())
grid = run_search(base, {{}}, num_samples=1, storage_path={str(work / "searches")!r}, name="gpu{gpus:g}", verbose=0,
                  resources=Resources(gpus_per_trial={gpus}, cpus_per_trial=0.5))  # one trial (the default is 8)
rows = trial_rows(grid, "auc", 2)
print("[check] trial", rows[0]["status"], "auc_mean", round(rows[0]["mean"], 4), "error", rows[0]["error"])
for node in ray.nodes():
    print("[check] node", node["NodeID"], "GPU", node["Resources"].get("GPU", 0), "CPU", node["Resources"].get("CPU"))
gpu_nodes = {{n["NodeID"] for n in ray.nodes() if n["Resources"].get("GPU", 0) > 0}}
for actor in list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=100, detail=True):
    print("[check] RayTrainWorker actor on", "the GPU node" if actor.node_id in gpu_nodes else "a node without GPU",
          actor.node_id, actor.state)
"""
    return code


def worker_lines(state: dict, needle: str) -> list[tuple[int, str]]:
    """(node index, line) of every line holding ``needle`` in the Ray worker logs of each node of ``state``."""
    found = []
    for index, folder in enumerate(state["dirs"]):
        for path in sorted((Path(folder) / "session_latest" / "logs").glob("worker-*.out")):
            found += [(index, line.strip()) for line in path.read_text(errors="replace").splitlines() if needle in line]
    return found


def check_gpu(work: Path) -> None:
    env = _ray_env() | {"PYTHONPATH": f"{REPO / 'platform'}:{REPO}"}
    with cluster([{"cpus": 1}, {"cpus": 1, "gpus": 1}], env) as state:
        say("head without GPU + a node started with --num-gpus 1 (declared; no CUDA here): --gpus-per-trial 1")
        done = run([PYTHON, "-c", _gpu_search(state["gcs"], work, 1)], env, timeout=900)
        assert done.returncode == 0 and "[check] trial done" in done.stdout, done.stderr[-3000:]
        placed = worker_lines(state, "Train worker")
        for index, line in placed:
            print(f"[check] node {index} ({'--num-gpus 1' if index == 1 else 'head, no GPU'}) worker log: {line}")
        assert placed and all(index == 1 and "GPU ids ['0']" in line for index, line in placed), placed
    say("a cluster with no GPU and no autoscaler (a new local Ray): compare.py --gpus-per-trial 1")
    args = ["--preset", "smoke", "--address", "local", "--out", str(work / "nogpu"), "--gpus-per-trial", "1"]
    refused = run([PYTHON, COMPARE, *args], env, timeout=600)
    print(refused.stderr.strip().splitlines()[-1] if refused.stderr.strip() else "", flush=True)
    assert refused.returncode == 2


def _kill_node(state: dict, index: int) -> None:
    """SIGKILL the node's raylet and everything under it (found by its own --temp-dir): a machine gone."""
    import signal

    pids = _cluster_pids((state["dirs"][index],))
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print(f"[check] SIGKILL to {len(pids)} processes of node {index}", flush=True)


def _wait_first_epoch(searches: Path, fold: int, proc: subprocess.Popen, timeout_s: float = 900) -> Path:
    """The folder of ``fold`` once its first epoch is reported: history row written, checkpoint on storage.

    The controller writes the history row after it has registered the report's checkpoint, so the fold
    then has a checkpoint to resume from and all its other epochs still to train.
    """
    deadline = time.time() + timeout_s
    while time.time() < deadline and proc.poll() is None:
        for history in searches.glob(f"*/trial_*/fold_{fold}/history.csv"):
            rows = history.read_text().splitlines()[1:]
            if rows and (history.parent / "train" / "checkpoint_epoch_0000" / "model.pt").exists():
                return history.parent
        time.sleep(0.1)
    raise AssertionError(f"fold {fold} never reported an epoch")


def _epochs(fold: Path) -> list[int]:
    import csv

    with (fold / "history.csv").open(newline="") as handle:
        return [int(float(row["epoch"])) for row in csv.DictReader(handle)]


def check_node_loss(work: Path) -> None:
    """A study on head (driver; 1 CPU) + node 1 (2 CPUs): a Train worker of 1.5 CPUs fits node 1 only.
    Node 1 is killed right after fold 1's first epoch (5 of its 6 epochs to go); node 2 replaces it."""
    from tumorbench import storage

    out = work / "study"
    env = _ray_env() | {"PYTHONPATH": f"{REPO / 'platform'}:{REPO}", "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "120"}
    with cluster([{"cpus": 1}, {"cpus": 2}], env) as state:
        proc = subprocess.Popen(
            [PYTHON, "-c", _node_loss_study(state["gcs"], out)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        fold = _wait_first_epoch(out / "searches", 1, proc)
        placed = worker_lines(state, "fold 1: Train worker")
        print(f"[check] fold 1 running on: {[f'node {i}: {line}' for i, line in placed]}", flush=True)
        print(
            f"[check] killing node 1 during {fold.relative_to(out)}: epochs reported {_epochs(fold)} of 6, "
            f"checkpoints {sorted(p.name for p in (fold / 'train').glob('checkpoint_*'))}, "
            f"outer results written: {(fold / 'outer' / 'metrics.json').exists()}",
            flush=True,
        )
        _kill_node(state, 1)
        time.sleep(5)
        start_node(state, 2, {"cpus": 2})
        proc.wait(timeout=1200)
        reader.join(timeout=10)
        for index, line in worker_lines(state, "resumed from checkpoint") + worker_lines(state, "Train worker"):
            print(f"[check] node {index} worker log: {line}", flush=True)
        _print_restart_evidence(Path(state["dirs"][0]) / "session_latest" / "logs")
        for done in sorted(fold.parent.glob("fold_*")):
            print(f"[check] {done.relative_to(out)}: epochs in history.csv {_epochs(done)}", flush=True)
        print(f"[check] checkpoints of fold 1: {sorted({n.split('/')[0] for n in storage.listing(fold / 'train')})}")
        print("".join(lines[-40:]), flush=True)
        assert proc.returncode == 0


def _print_restart_evidence(logs: Path) -> None:
    """What Ray Train and Tune logged on the head about the lost worker and the restart."""
    needles = ("restor", "Restor", "resum", "Resum", "fail", "Fail", "died", "retry", "Retry")
    shown = 0
    for path in sorted(logs.rglob("*")):
        if not path.is_file() or path.suffix not in (".out", ".err", ".log") or shown >= 12:
            continue
        for line in path.read_text(errors="replace").splitlines():
            if any(n in line for n in needles) and ("rain" in line or "rial" in line or "orker" in line):
                print(f"[check] {path.name}: {line.strip()[:300]}", flush=True)
                shown += 1
                if shown >= 12:
                    break


def _node_loss_study(gcs: str, out: Path) -> str:
    return f"""
import dataclasses
from tumorbench.study.presets import synthetic
from tumorbench.study.runner import run_study
from tumorbench.tuning.resources import Resources
smoke = synthetic("smoke")  # one model and the two baselines; 6 epochs of 16 patches: a fold lasts a while
patch = {{"mode": "patch3d", "patch_size": [32, 32, 32], "num_samples": 16}}
config = smoke.config | {{"epochs": 6, "sampling": patch, "max_failures": 2, "keep_checkpoints": 10}}
study = dataclasses.replace(smoke, name="node-loss", candidates=smoke.candidates[:1], config=config, explain_cases=0)
run_study(study, {str(out)!r}, preset="smoke", address={gcs!r}, resources=Resources(cpus_per_trial=1.5))
"""


CHECKS = {"s3-study": check_s3_study, "private-fs": check_private_fs, "gpu": check_gpu, "node-loss": check_node_loss}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("check", choices=[*CHECKS, "all"])
    parser.add_argument("--work", default=None, help="Working folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    for name in CHECKS if args.check == "all" else [args.check]:
        work = Path(args.work or tempfile.mkdtemp(prefix="tbchecks-")) / name
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        CHECKS[name](work)
        print(f"[check] {name} passed in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
