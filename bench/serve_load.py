"""Load benchmark of the Serve app: batched vs unbatched serving vs the raw forward pass, on loopback.

Starts Ray and the app (``tumorbench.serving.app:build_app`` deployed from a config, as ``serve run``
does) with one model package, then for each setup drives ``POST /v1/<task>`` with the same
file at several client concurrencies (asyncio + aiohttp), each level bounded by a request
count and a time cap:

- ``legacy``: the request path before issue 11, for comparison: a Ray started with Serve's
  defaults, requests through Serve's proxy, ``fast_path: false`` (every request preprocessed alone
  in the ingress by the package's MONAI chain), one model call per request (``group_model_calls: false``);
  its model replica batches as ``batched`` does
  (:mod:`tumorbench.serving.batcher`, not the ``@serve.batch`` of then), which flatters it;
- ``batched``: batches of up to ``--max-batch-size`` (default 16); 2D resize + normalization
  batched in the model deployment (``fast_path: true``, the default); the requests that queue in the
  ingress while the model is busy go in one call (``group_model_calls: true``, the default);
- ``unbatched``: the same replicas reconfigured live to a batch size of 1 (user_config): one request per
  forward pass and, as the ingress learns the batch size from the model's answers, per call;
- ``floor``: ``GET /healthz`` on the same port: the ingress without an upload or a model, the
  ceiling of any request path on this machine;
- ``raw``: ``Predictor.predict_batch`` on the preprocessed input in this process, batches of
  ``min(clients, max batch size)``; latency is the batch's forward time;
- ``proxied`` (only when asked for in ``--setups``): ``batched`` through Serve's proxy.

After ``legacy``, Ray starts again in Serve's throughput mode (``tumorbench.serving.runner.THROUGHPUT_ENV``,
as ``tumorbench serve`` starts it; ``--default-serve``: Ray's defaults for every setup): ``batched``,
``unbatched`` and ``floor`` go to the ingress replica's own port (direct ingress), ``proxied`` through
Serve's proxy.

Prints requests/s, p50/p95/p99 latency, errors, the replicas' peak RSS (``/v1/stats``), and the
ratios batched/legacy, batched/unbatched, batched/raw and batched p99/p50 at 32 clients (or the
largest level run).
``--url`` measures an app that is already running (its current settings) instead. ``--repeats N`` runs
every setup N rounds in turn: the machine's speed drifts between levels minutes apart (a shared VM here: the
batched 32-client level ran at 136 and 211 req/s in two runs of the same code), so the table shows each
level's median round and the ratios are medians of each round's ratios, with the sign test's interval from 6 rounds on.

    python bench/serve_load.py                                   # full run: a few minutes
    python bench/serve_load.py --repeats 3                       # the ratios as medians of 3 rounds
    python bench/serve_load.py --levels 1,8 --requests 20 --time-cap 5   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from procfs import cpu_ms_per_request, cpu_seconds  # bench/, beside this script
from rounds import lower_median, median_ratio
from tumorbench.paths import shared_data

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUN = REPO_ROOT / "runs" / "lgg_unet" / "train"
DEFAULT_DATA = shared_data() / "lgg"  # $TUMORBENCH_SHARED_DATA, else ../shared/data beside the checkout
_HEADERS: dict[str, str] = {}  # X-API-Key for --url apps that need one


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--package",
        type=Path,
        default=None,
        help=f"model package or run folder (default: {DEFAULT_RUN} if present, else a 64x64 2D unet)",
    )
    parser.add_argument(
        "--image", type=Path, default=None, help="file to upload (default: an LGG slice or a synthetic PNG)"
    )
    parser.add_argument(
        "--url", default=None, help="measure a running app at this URL (loopback) instead of starting one"
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("TUMORBENCH_API_KEY"),
        help="sent as X-API-Key (default: $TUMORBENCH_API_KEY)",
    )
    parser.add_argument("--levels", default="1,8,32,64", help="client concurrencies")
    parser.add_argument("--requests", type=int, default=200, help="requests per level")
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per level at most")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=10.0)
    parser.add_argument(
        "--mask", default="png", choices=("png", "rle", "none"), help="segment: the mask encoding asked for (?mask=)"
    )
    parser.add_argument("--setups", default="legacy,batched,unbatched,raw,floor")
    parser.add_argument("--ingress-replicas", type=int, default=1, help="ingress replicas (e.g. one per CPU)")
    parser.add_argument("--model-replicas", type=int, default=1, help="replicas of the model deployment")
    parser.add_argument(
        "--torch-threads", type=int, default=None, help="torch threads per model replica (default: torch's)"
    )
    parser.add_argument(
        "--default-serve", action="store_true", help="start Ray with Serve's defaults, not its throughput mode"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="rounds of every setup, one after another (a shared VM's speed drifts): the table shows each level's "
        "median round and every round's req/s, the ratios are medians of each round's ratios",
    )
    args = parser.parse_args()
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost", "http://[::1]")):
        parser.error("--url must be a loopback address")
    return args


def _default_package(tmp: Path) -> Path:
    if DEFAULT_RUN.is_dir():
        return DEFAULT_RUN
    from tumorbench.models import create_model
    from tumorbench.package import ModelManifest
    from tumorbench.package.weights import save_package

    kwargs = {"spatial_dims": 2, "in_channels": 3, "out_channels": 1}
    manifest = ModelManifest(
        name="unet",
        task="segmentation",
        model_kwargs=kwargs,
        spatial_dims=2,
        data_dims=2,
        in_channels=3,
        out_channels=1,
        preprocess={"spatial_size": [64, 64]},
        data={"layout": "bench"},
    )
    return save_package(tmp / "unet64", create_model("unet", **kwargs), manifest)


def _default_image(tmp: Path) -> Path:
    slices = sorted(p for p in DEFAULT_DATA.glob("*/*.png") if not p.name.endswith("_mask.png"))
    if slices:
        return slices[len(slices) // 2]
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp / "synthetic.png")
    return tmp / "synthetic.png"


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    values = np.percentile(np.asarray(latencies) * 1000, [50, 95, 99])
    return {"p50_ms": float(values[0]), "p95_ms": float(values[1]), "p99_ms": float(values[2])}


async def _drive(url: str, route: str, payload: bytes, clients: int, total: int, cap_s: float) -> dict:
    """``total`` uploads by ``clients`` concurrent loops, stopping at ``cap_s`` seconds."""
    import aiohttp

    latencies: list[float] = []
    server: list[dict] = []  # the answers' timing_ms: where the time goes inside the app
    errors = 0
    sent = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=120), headers=_HEADERS
    ) as session:

        async def one() -> bool:
            form = aiohttp.FormData()
            form.add_field("file", payload, filename="upload", content_type="application/octet-stream")
            start = time.perf_counter()
            call = session.get(url + route) if route == "/healthz" else session.post(url + route, data=form)
            async with call as response:
                body = await response.read()
                latencies.append(time.perf_counter() - start)
                if response.status == 200 and len(server) < 2000:
                    server.append(json.loads(body).get("timing_ms", {}))
                return response.status == 200

        async def loop(deadline: float) -> None:
            nonlocal sent, errors
            while sent < total and time.perf_counter() < deadline:
                sent += 1
                try:
                    errors += 0 if await one() else 1
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1

        for _ in range(min(clients, 8)):  # warm-up, not counted
            await one()
        latencies.clear()
        server.clear()
        start = time.perf_counter()
        await asyncio.gather(*(loop(start + cap_s) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "req_per_s": len(latencies) / elapsed if elapsed else 0.0,
        **_percentiles(latencies),
        "server_ms": {
            k: round(float(np.mean([t[k] for t in server if k in t])), 1) for k in (server[0] if server else {})
        },
    }


def _raw(predictor, image: Path, clients: int, total: int, cap_s: float, max_batch: int) -> dict:
    prepared = predictor.preprocessor.prepare_file(image)
    size = min(clients, max_batch)
    batch = [prepared.image] * size
    predictor.predict_batch(batch)  # warm-up
    latencies, done, start = [], 0, time.perf_counter()
    while done < total and time.perf_counter() - start < cap_s:
        t = time.perf_counter()
        predictor.predict_batch(batch)
        latencies += [time.perf_counter() - t] * size
        done += size
    elapsed = time.perf_counter() - start
    return {"clients": clients, "requests": done, "errors": 0, "req_per_s": done / elapsed, **_percentiles(latencies)}


CPU_GROUPS = (("Ingress", "ingress"), ("ServeReplica", "model"), ("ProxyActor", "proxy"), ("ray", "ray"))


def _stats(url: str) -> dict:
    import requests

    return requests.get(url + "/v1/stats", headers=_HEADERS, timeout=60).json()


def _batches(stats: dict) -> dict:
    return {n: m["batch_sizes"] for n, m in stats["models"].items()}


def _calls(stats: dict) -> dict[str, int]:
    """Model calls the ingress made so far and the requests they carried (``tumorbench.serving.calls``)."""
    counts = stats["ingress"].get("model_calls", {}).values()
    return {k: sum(c[k] for c in counts) for k in ("calls", "requests")}


def _peak(stats: dict) -> str:
    models = "/".join(f"{m['peak_rss_mb']:.0f}" for m in stats["models"].values())
    return f"{models} MB (ingress {stats['ingress']['peak_rss_mb']:.0f} MB)"


def _wait_for(proxy: str, size: int, fast: bool, direct: bool, timeout_s: float = 120) -> str:
    """The URL to measure, once the replicas run the batch size and request path asked for.

    A redeploy replaces the ingress replica: under direct ingress the new one listens on a new port.
    """
    from tumorbench.serving.runner import ingress_urls

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            url = (ingress_urls() or [proxy])[-1] if direct else proxy
            stats = _stats(url)
            if bool(stats["ingress"]["batched_models"]) == fast and all(
                m["max_batch_size"] == size for m in stats["models"].values()
            ):
                return url
        except (ValueError, KeyError, OSError):  # replicas being replaced
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"replicas never reported max_batch_size {size}, fast path {fast}")
        time.sleep(0.5)


def _median_rows(rows: list[dict]) -> list[dict]:
    """Each (setup, clients) level's median round by req/s (the lower one of an even count), with every round's."""
    levels: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        levels.setdefault((r["setup"], r["clients"]), []).append(r)
    out = []
    for runs in levels.values():
        median = lower_median(runs, key=lambda r: r["req_per_s"])
        out.append({**median, "by_round": [round(r["req_per_s"], 1) for r in runs]})
    return out


def _ratios(rows: list[dict], at: int) -> None:
    """batched / each other setup and p99 / p50 at ``at`` clients: per round, and their median."""
    rounds = sorted({r.get("round", 1) for r in rows})
    by = {(r.get("round", 1), r["setup"], r["clients"]): r for r in rows}
    for other in ("legacy", "proxied", "unbatched", "floor", "raw"):
        pairs = [(by.get((n, "batched", at)), by.get((n, other, at))) for n in rounds]
        ratios = [b["req_per_s"] / o["req_per_s"] for b, o in pairs if b and o and o["req_per_s"]]
        if ratios:
            print(f"batched / {other} req/s at {at} clients: {median_ratio(ratios)}")
    for setup in ("legacy", "batched"):
        tails = [r["p99_ms"] / r["p50_ms"] for n in rounds if (r := by.get((n, setup, at))) and r["p50_ms"]]
        if tails:
            print(f"{setup} p99 / p50 at {at} clients: {median_ratio(tails, unit='')}")


def _print(rows: list[dict]) -> None:
    table = _median_rows(rows)
    several = any(len(r["by_round"]) > 1 for r in table)
    print(
        f"\n{'setup':10s} {'clients':>7s} {'requests':>8s} {'errors':>6s} {'req/s':>8s} {'p50 ms':>8s} "
        f"{'p95 ms':>8s} {'p99 ms':>8s}  peak RSS" + ("  (req/s of each round)" if several else "")
    )
    for r in table:
        print(
            f"{r['setup']:10s} {r['clients']:7d} {r['requests']:8d} {r['errors']:6d} {r['req_per_s']:8.1f} "
            f"{r['p50_ms']:8.1f} {r['p95_ms']:8.1f} {r['p99_ms']:8.1f}  {r.get('peak', '')}"
            + (f"  ({', '.join(map(str, r['by_round']))})" if several else "")
        )
    groups = ("client", "proxy", "ingress", "model", "ray")
    print(f"\nCPU ms per request ({', '.join(groups)}: the processes' user + system time over the level)")
    for r in table:
        if "cpu_ms" in r:
            parts = "  ".join(f"{g} {r['cpu_ms'].get(g, 0.0):6.2f}" for g in groups)
            print(f"{r['setup']:10s} {r['clients']:7d}  total {sum(r['cpu_ms'].values()):6.2f}  {parts}")
    levels = sorted({r["clients"] for r in rows})
    _ratios(rows, 32 if 32 in levels else levels[-1])


SERVED = ("legacy", "proxied", "batched", "unbatched", "floor")


def _served(args, setups: list[str], levels: list[int], package: Path, route: str, payload: bytes, throughput: bool):
    """Rows of the ``setups`` measured on one app, on a Ray started in Serve's throughput mode or with its defaults."""
    import ray
    from ray import serve

    from tumorbench.serving.runner import THROUGHPUT_ENV, deploy

    saved = {key: os.environ.pop(key, None) for key in THROUGHPUT_ENV}  # Serve reads them as Ray starts
    if throughput:  # values exported by the caller win, as in use_throughput_mode
        os.environ.update({key: saved[key] or value for key, value in THROUGHPUT_ENV.items()})
    ray.init(include_dashboard=False, log_to_driver=False)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # Admission above the largest client level: this measures throughput, not load shedding.
    app_args = {
        "models": [f"bench={package}"],
        "max_batch_size": args.max_batch_size,
        "batch_wait_timeout_s": args.batch_wait_ms / 1000,
        "max_upload_mb": 64,
        "max_concurrent_requests": max(levels) + 8,
        "ingress_replicas": args.ingress_replicas,
        "num_replicas": args.model_replicas,
        "torch_threads": args.torch_threads,
    }
    rows = []
    for setup in setups:
        fast, size, direct = setup != "legacy", 1 if setup == "unbatched" else args.max_batch_size, setup in SERVED[2:]
        override = {
            "name": "model_bench",
            "user_config": {"max_batch_size": size, "batch_wait_timeout_s": args.batch_wait_ms / 1000},
        }
        # A new fast_path replaces the replicas; a new user_config reconfigures them in place.
        deploy({**app_args, "fast_path": fast, "group_model_calls": fast}, deployments=[override], port=port)
        target = _wait_for(url, size, fast, direct)
        mode = "throughput mode" if throughput else "Serve's defaults"
        print(f"{setup}: {target} ({'Serve proxy' if target == url else 'direct ingress'}, {mode})", flush=True)
        for clients in levels:
            before, calls_before = cpu_seconds(CPU_GROUPS), _calls(_stats(target))
            result = asyncio.run(
                _drive(
                    target, "/healthz" if setup == "floor" else route, payload, clients, args.requests, args.time_cap
                )
            )
            cpu = cpu_ms_per_request(before, cpu_seconds(CPU_GROUPS), result["requests"])
            stats = _stats(target)
            calls_after = _calls(stats)
            calls = {k: calls_after[k] - calls_before[k] for k in calls_before}
            rows.append(
                {"setup": setup, **result, "peak": _peak(stats), "batch_sizes": _batches(stats), "cpu_ms": cpu}
                | {"requests_per_model_call": round(calls["requests"] / max(calls["calls"], 1), 2)}
            )
            print(rows[-1], flush=True)
    serve.shutdown()
    ray.shutdown()
    for key, value in saved.items():
        os.environ.pop(key, None)
        if value is not None:
            os.environ[key] = value
    return rows


def _round(args, setups: list[str], levels: list[int], package: Path, image: Path, route: str, payload: bytes):
    """One round: every setup at every level (``--url``: that app's current settings), then the raw model."""
    rows: list[dict] = []
    if args.url is None:
        # legacy on a Ray started with Serve's defaults (the whole path before issue 11), the others in throughput mode
        phases = [(SERVED, False)] if args.default_serve else [(SERVED[:1], False), (SERVED[1:], True)]
        for names, throughput in phases:
            if wanted := [s for s in names if s in setups]:
                rows += _served(args, wanted, levels, package, route, payload, throughput)
    else:
        for clients in levels:
            result = asyncio.run(_drive(args.url, route, payload, clients, args.requests, args.time_cap))
            rows.append({"setup": "batched", **result, "peak": _peak(_stats(args.url))})
            print(rows[-1], flush=True)
    if "raw" in setups:
        from tumorbench.inference import Predictor
        from tumorbench.serving.app import peak_rss_mb

        predictor = Predictor.from_package(package)
        for clients in levels:
            rows.append(
                {
                    "setup": "raw",
                    **_raw(predictor, image, clients, args.requests, args.time_cap, args.max_batch_size),
                    "peak": f"{peak_rss_mb():.0f} MB (this process)",
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    args = _parse()
    levels = [int(x) for x in args.levels.split(",")]
    if args.api_key:  # also what an app started here requires when TUMORBENCH_API_KEY is set
        _HEADERS["X-API-Key"] = args.api_key
    setups = args.setups.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="serve_load_"))
    package = args.package or _default_package(tmp)
    image = args.image or _default_image(tmp)
    from tumorbench.serving.app import resolve_packages

    package = next(iter(resolve_packages([str(package)]).values()))  # a run folder -> its best checkpoint
    task = json.loads((package / "model.json").read_text())["task"]
    route = "/v1/classify" if task == "classification" else f"/v1/segment?mask={args.mask}"
    payload = image.read_bytes()
    print(f"package {package} ({task}), upload {image} ({len(payload):,} bytes), {os.cpu_count()} CPUs, {route}")
    rows: list[dict] = []
    for round_ in range(1, args.repeats + 1):
        if args.repeats > 1:
            print(f"round {round_} of {args.repeats}", flush=True)
        for row in _round(args, setups, levels, package, image, route, payload):
            rows.append({**row, "round": round_})
    _print(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
