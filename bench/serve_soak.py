"""Soak and fault test of the Serve app on loopback: mixed good and hostile uploads, then a killed model replica.

Starts a local Ray and the app with one untrained 2D segmentation package (``tests/model_packages.py``),
then sends ``--requests`` uploads from ``--clients`` threads, ``--bad`` of them malformed or hostile
(``tests/attack_files.py``: the rows of issue 11's table, small versions). Checks: no 5xx but
deliberate 503s, every good answer's mask equal to the offline ``Predictor``'s, replica RSS growth
(``/v1/stats``), no upload files left in the temporary directory. Then kills the model replica
(``ray.kill``) while requests are in flight: they get 503 quickly, Serve restarts the replica, and
the requests after the restart succeed. Run it under the machine's heavy-work lock:

    flock /tmp/tumorbench-heavy.lock timeout 900 python bench/serve_soak.py --requests 1000 --clients 32
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import io
import os
import random
import socket
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "tests"), str(REPO_ROOT / "platform")]


def _bad_inputs() -> list[tuple[str, bytes]]:
    import numpy as np

    import attack_files as af

    return [
        ("deflated DICOM", af.deflated_dicom(16)),
        ("extra frames", af.extra_frames_dicom(8)),
        ("TIFF chain", af.tiff_chain(4096)),
        ("RGB PNG over max_pixels", af.rgb_png(8000, 5000)),
        ("PHI zip, duplicate", af.phi_dicom_zip(duplicate=True)),
        ("PHI zip, two series", af.phi_dicom_zip(two_series=True)),
        ("NIfTI RGB24", af.nifti_bytes(np.zeros((8, 8, 8, 3)), dtype_code=128)),
        ("PixelSpacing 0", af.dicom_with(PixelSpacing=[0, 0])),
        ("not an image", b"hello" * 100),
        ("truncated PNG", af.rgb_png(64, 64)[:80]),
    ]


def _post(session, url: str, data: bytes) -> tuple[int, float, dict]:
    start = time.perf_counter()
    try:
        response = session.post(url + "/v1/segment", files={"file": ("DOE_JOHN_MRN123456.bin", data)}, timeout=120)
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        return response.status_code, time.perf_counter() - start, body
    except (OSError, ValueError) as exc:  # requests errors are OSErrors: a dropped connection is reported
        return -1, time.perf_counter() - start, {"exception": type(exc).__name__}


def _mask(body: dict):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]["data"])))) > 0


def _soak(url: str, good: bytes, expected, args) -> dict:
    import requests

    bad = _bad_inputs()
    rng = random.Random(0)
    plan = [("good", good) if rng.random() >= args.bad else rng.choice(bad) for _ in range(args.requests)]
    session = requests.Session()
    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(lambda item: (item[0], *_post(session, url, item[1])), plan))
    codes = collections.Counter((name == "good", code) for name, code, _, _ in results)
    wrong = sum(
        1 for name, code, _, body in results if name == "good" and code == 200 and not (_mask(body) == expected).all()
    )
    server_errors = [(name, code, body) for name, code, _, body in results if code >= 500 and code != 503 or code < 0]
    phi = sum(1 for _, _, _, body in results if any(s in str(body) for s in ("DOE", "MRN123456")))
    return {
        "codes": {f"{'good' if g else 'bad'} {c}": n for (g, c), n in sorted(codes.items())},
        "wrong_masks": wrong,
        "5xx_not_503": server_errors[:5],
        "n_5xx_not_503": len(server_errors),
        "responses_with_phi": phi,
    }


def _kill_model(url: str, good: bytes, clients: int, seconds: float = 20.0, kill_after: float = 2.0) -> dict:
    """Clients upload without pause for ``seconds``; the model replica is killed ``kill_after`` seconds in.

    ``seconds``: long enough for Serve to start a new replica (torch import and warm-up: ~10 s on 2 cores).
    A watcher polls ``/v1/stats`` until it names a new replica pid: from then on (``replica_back_s``)
    every request must succeed. Requests sent between the kill and that moment may get 503, quickly.
    """
    import ray
    import requests

    session = requests.Session()
    names = [
        (n["name"], n["namespace"])
        for n in ray.util.list_named_actors(all_namespaces=True)
        if "SERVE_REPLICA" in n["name"] and "model_" in n["name"]
    ]
    pid_before = _replica_pid(session, url, timeout=30)
    begin = time.monotonic()
    kill_at, stop = begin + kill_after, begin + seconds

    def client() -> list[tuple[float, int, float]]:
        out = []
        while time.monotonic() < stop:
            sent = time.monotonic()
            code, took, _ = _post(session, url, good)
            out.append((sent - kill_at, code, took))  # sent relative to the kill
        return out

    def watcher() -> float | None:
        """Seconds after the kill at which ``/v1/stats`` first answers from a new replica."""
        time.sleep(max(0.0, kill_at - time.monotonic()))
        while time.monotonic() < stop:
            if _replica_pid(session, url, timeout=1.0) not in (None, pid_before):
                return time.monotonic() - kill_at
            time.sleep(0.1)
        return None

    with concurrent.futures.ThreadPoolExecutor(clients + 1) as pool:
        back_future = pool.submit(watcher)
        futures = [pool.submit(client) for _ in range(clients)]
        time.sleep(max(0.0, kill_at - time.monotonic()))
        ray.kill(ray.get_actor(*names[0]), no_restart=False)
        results = [r for f in futures for r in f.result()]
        back = back_future.result()
    return _fault_summary(names[0][0], results, back, f"{pid_before} -> {_replica_pid(session, url, timeout=30)}")


def _replica_pid(session, url: str, timeout: float) -> int | None:
    """The model replica's pid as ``/v1/stats`` reports it; None while it does not answer in ``timeout``."""
    try:
        reply = session.get(url + "/v1/stats", timeout=timeout)
        return next(iter(reply.json()["models"].values()))["pid"] if reply.ok else None
    except Exception:  # noqa: BLE001 - no answer in time, or an error reply: the replica is not back yet
        return None


def _fault_summary(killed: str, results: list, back: float | None, pids: str) -> dict:
    """What happened around the kill: in-flight requests, 503s (how fast), and whether all succeeded once back."""
    in_flight = [(code, took) for sent, code, took in results if sent < 0 < sent + took]
    after = sorted((sent, code) for sent, code, _ in results if sent >= 0)
    failed_once_back = [round(sent, 2) for sent, code in after if back is not None and sent >= back and code != 200]
    return {
        "killed": killed,
        "replica_pid": pids,
        "in_flight_at_kill": dict(collections.Counter(code for code, _ in in_flight)),
        "slowest_in_flight_s": round(max((t for _, t in in_flight), default=0.0), 2),
        "sent_after_kill": dict(collections.Counter(code for _, code in after)),
        "slowest_503_s": round(max((took for _, code, took in results if code == 503), default=0.0), 2),
        "last_503_sent_s": max((round(sent, 2) for sent, code in after if code == 503), default=None),
        "replica_back_s": None if back is None else round(back, 2),
        "not_200_once_back": failed_once_back[:5],
        "all_200_once_back": back is not None and not failed_once_back,
    }


def _grep_logs(ray) -> dict:
    """Occurrences of the fake patient's name / MRN in every log file of this Ray session."""
    logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    files = [p for p in logs.rglob("*") if p.is_file() and p.suffix in (".log", ".out", ".err")]
    text = "\n".join(p.read_text(errors="replace") for p in files)
    hits = {s: text.count(s) for s in ("DOE_JOHN", "DOE^JOHN", "MRN123456", "19610415")}
    return {"log_files": len(files), "characters": len(text), "hits": hits}


def _upload_files() -> set[Path]:
    """Files in the ingress replicas' upload folders and in the readers' scratch folders."""
    root = Path(tempfile.gettempdir())
    return {p for pattern in ("tumorbench-upload-*/*", "tumorbench-read-*") for p in root.glob(pattern)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--bad", type=float, default=0.3, help="share of malformed / hostile uploads")
    parser.add_argument(
        "--default-serve", action="store_true", help="start Ray with Serve's defaults, not its throughput mode"
    )
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import requests
    from ray import serve

    from model_packages import SEG2D, make_package, synthetic_png
    from tumorbench.inference import Predictor
    from tumorbench.serving.runner import deploy, ingress_urls, use_throughput_mode

    tmp = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    package = make_package(tmp / "seg2d", SEG2D)
    good = synthetic_png(tmp / "slice.png").read_bytes()
    expected = Predictor.from_package(package).predict_file(tmp / "slice.png").mask[0] > 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    before_files = _upload_files()
    if not args.default_serve:
        use_throughput_mode()  # as `tumorbench serve` starts Ray (the proxy still answers on `port`)
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=512 * 1024**2
    )
    try:
        os.chdir(REPO_ROOT)
        deploy(
            {
                "models": [f"seg2d={package}"],
                "cpus_per_replica": 0.1,
                "ingress_cpus": 0.1,
                "torch_threads": 1,
                "max_concurrent_requests": args.clients,
            },
            port=port,
        )
        url = (ingress_urls() or [f"http://127.0.0.1:{port}"])[0]  # the ingress's own port in throughput mode
        print(f"app at {url}")
        stats = requests.get(url + "/v1/stats", timeout=30).json()
        start = time.perf_counter()
        soak = _soak(url, good, expected, args)
        after = requests.get(url + "/v1/stats", timeout=30).json()
        growth = {
            "ingress": after["ingress"]["peak_rss_mb"] - stats["ingress"]["peak_rss_mb"],
            **{n: m["peak_rss_mb"] - stats["models"][n]["peak_rss_mb"] for n, m in after["models"].items()},
        }
        left = _upload_files() - before_files
        print(
            f"soak: {args.requests} requests, {args.clients} clients, {args.bad:.0%} bad, "
            f"{time.perf_counter() - start:.1f} s"
        )
        print(
            f"  codes {soak['codes']}\n  wrong masks {soak['wrong_masks']}, 5xx other than 503: "
            f"{soak['n_5xx_not_503']} {soak['5xx_not_503']}, responses with PHI {soak['responses_with_phi']}"
        )
        print(f"  peak RSS growth MB { ({k: round(v, 1) for k, v in growth.items()}) }, upload files left {len(left)}")
        print("fault:", _kill_model(url, good, min(args.clients, 8)))
        print("PHI grep of the logs:", _grep_logs(ray))
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
