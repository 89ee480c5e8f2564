"""Data pipeline benchmark: throughput and memory of the 2D training pipeline per cache mode.

Runs the project's own pipeline (``catalog.scan`` -> ``cases_from_catalog`` ->
``build_transforms`` -> ``make_dataset`` -> ``monai.data.DataLoader``) over the LGG
slices (3-channel 256x256 image + binary mask, z-score, "light" augmentation) for
the cache modes ``none``, ``memory`` (``CacheDataset``) and ``disk``
(``PersistentDataset`` in a temporary folder). Each mode runs in its own freshly
spawned process, so the peak RSS of one mode never leaks into another's.

Epoch 1 includes building the dataset (the memory cache fills in its constructor)
and the disk cache's writes; epoch 2 is the steady state a long training run sees.

    python bench/data_pipeline.py                       # all cases, all modes
    python bench/data_pipeline.py --cases 600 --workers 2 --spatial-size 128 --json runs/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

MODES = ("none", "memory", "disk")
_REPO_ROOT = Path(__file__).resolve().parents[1]
_SHARED = Path(os.environ.get("TUMORBENCH_SHARED_DATA", _REPO_ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class BenchConfig:
    """What one mode's run measures (sent to the spawned process, so plain values only)."""

    data: str
    cases: int | None = None
    batch_size: int = 16
    workers: int = 0
    spatial_size: int | None = None
    augment: str = "light"
    threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.cases is not None and self.cases < 1:
            raise ValueError(f"--cases must be >= 1, got {self.cases}")
        if self.batch_size < 1 or self.workers < 0 or self.threads < 1:
            raise ValueError("--batch-size and --threads must be >= 1, --workers >= 0")
        if self.spatial_size is not None and self.spatial_size < 1:
            raise ValueError(f"--spatial-size must be >= 1, got {self.spatial_size}")


@dataclass
class ModeResult:
    """Measurements of one cache mode; rates in samples/s, memory in MB."""

    mode: str
    samples: int
    epoch1_s: float
    epoch2_s: float
    epoch1_cpu_s: float
    epoch2_cpu_s: float
    epoch1_samples_per_s: float
    epoch2_samples_per_s: float
    epoch2_samples_per_cpu_s: float
    baseline_rss_mb: float
    peak_rss_mb: float
    rss_over_baseline_mb: float
    loader_workers_peak_rss_mb: float | None = None
    disk_cache_mb: float | None = None
    batch_shapes: dict = field(default_factory=dict)


def _max_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(who).ru_maxrss / scale


def _folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def _clocks() -> tuple[float, float]:
    # CPU time counts the loader workers too (children count once reaped, at each epoch's end); on a
    # shared machine it is the figure that other people's jobs do not distort
    t = os.times()
    return time.perf_counter(), t.user + t.system + t.children_user + t.children_system


def _since(start: tuple[float, float]) -> tuple[float, float]:
    now = _clocks()
    return now[0] - start[0], now[1] - start[1]


def _epoch(loader, shapes: dict) -> int:
    samples = 0
    for batch in loader:
        samples += batch["image"].shape[0]
        shapes.setdefault("image", list(batch["image"].shape))
        shapes.setdefault("mask", list(batch["mask"].shape))
    return samples


def _pipeline(cfg: BenchConfig) -> tuple[list[dict], object]:
    from tumorbench.data.catalog import scan
    from tumorbench.data.datasets import cases_from_catalog
    from tumorbench.transforms import AugmentConfig, PreprocessConfig, build_transforms

    cases = cases_from_catalog(scan(cfg.data, "lgg"))[: cfg.cases]
    size = None if cfg.spatial_size is None else (cfg.spatial_size, cfg.spatial_size)
    chain = build_transforms(
        PreprocessConfig(normalize="zscore", spatial_size=size),
        AugmentConfig.preset(cfg.augment),
        spatial_dims=2,
        train=True,
        seed=cfg.seed,
    )
    chain(cases[0])  # lazy imports and first-call set-up are not what is being measured
    return cases, chain


def run_mode(mode: str, cfg: BenchConfig) -> ModeResult:
    """Time two epochs of one cache mode; meant to run alone in a fresh process."""
    import torch
    from monai.data import DataLoader

    from tumorbench.data.datasets import make_dataset

    # one 256x256 sample gains nothing from intra-op threads, and on a busy 2-core
    # machine their spin-waits cut throughput more than tenfold (seen: 55 -> 2.7 samples/s)
    torch.set_num_threads(cfg.threads)
    cases, chain = _pipeline(cfg)
    baseline = _max_rss_mb()
    # this process was spawned, which its loader workers would inherit, re-importing
    # torch and MONAI every epoch; a training script on Linux forks them
    context = "fork" if cfg.workers and "fork" in get_all_start_methods() else None
    with tempfile.TemporaryDirectory(prefix="tumorbench-bench-") as cache_dir:
        shapes: dict = {}
        start = _clocks()
        dataset = make_dataset(
            cases, chain, cache=mode, cache_dir=cache_dir if mode == "disk" else None, num_workers=cfg.workers
        )
        loader = DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            shuffle=True,
            num_workers=cfg.workers,
            multiprocessing_context=context,
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        samples = _epoch(loader, shapes)
        epoch1 = _since(start)
        start = _clocks()
        _epoch(loader, shapes)
        epoch2 = _since(start)
        disk_mb = _folder_mb(Path(cache_dir)) if mode == "disk" else None
    peak = _max_rss_mb()
    workers_peak = _max_rss_mb(resource.RUSAGE_CHILDREN) if cfg.workers else None
    return ModeResult(
        mode,
        samples,
        epoch1[0],
        epoch2[0],
        epoch1[1],
        epoch2[1],
        samples / epoch1[0],
        samples / epoch2[0],
        samples / epoch2[1],
        baseline,
        peak,
        peak - baseline,
        workers_peak,
        disk_mb,
        shapes,
    )


def run_isolated(mode: str, cfg: BenchConfig) -> ModeResult:
    """Run :func:`run_mode` in a new spawned process, so its ``ru_maxrss`` is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_mode, mode, cfg).result()


def format_table(results: list[ModeResult]) -> str:
    """The results as a Markdown table; speed-up compares epoch 2 with mode ``none``."""
    ref = next((r.epoch2_samples_per_s for r in results if r.mode == "none"), None)
    head = (
        "mode",
        "epoch1 samples/s",
        "epoch2 samples/s",
        "speed-up vs none",
        "peak RSS MB",
        "RSS over baseline MB",
        "epoch2 samples/CPU-s",
    )
    rows = [head, tuple("---" for _ in head)]
    for r in results:
        speedup = f"{r.epoch2_samples_per_s / ref:.2f}x" if ref else "n/a"
        rows.append(
            (
                r.mode,
                f"{r.epoch1_samples_per_s:.1f}",
                f"{r.epoch2_samples_per_s:.1f}",
                speedup,
                f"{r.peak_rss_mb:.0f}",
                f"{r.rss_over_baseline_mb:.0f}",
                f"{r.epoch2_samples_per_cpu_s:.1f}",
            )
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _parse(argv: list[str] | None) -> tuple[argparse.Namespace, BenchConfig]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=_SHARED / "lgg", help="LGG folder (default: %(default)s)")
    parser.add_argument("--cases", type=int, default=None, help="first N cases (default: all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers and memory-cache fill threads")
    parser.add_argument("--spatial-size", type=int, default=None, help="resize slices to N x N (default: keep 256)")
    parser.add_argument("--augment", choices=("none", "light", "medium", "strong"), default="light")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process (default: 1)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of %(default)s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes must be a comma-separated subset of {','.join(MODES)}, got {args.modes}")
    if not args.data.is_dir():
        parser.exit(2, f"error: LGG data not found at {args.data}; pass --data PATH or set TUMORBENCH_SHARED_DATA\n")
    try:
        cfg = BenchConfig(
            str(args.data),
            args.cases,
            args.batch_size,
            args.workers,
            args.spatial_size,
            args.augment,
            args.threads,
            args.seed,
        )
    except ValueError as err:
        parser.error(str(err))
    return args, cfg


def main(argv: list[str] | None = None) -> int:
    """Run every requested mode, print the table, optionally write JSON."""
    args, cfg = _parse(argv)
    size = f"{cfg.spatial_size}x{cfg.spatial_size}" if cfg.spatial_size else "256x256 (native)"
    print(
        f"LGG {cfg.data}: cases={cfg.cases or 'all'} batch={cfg.batch_size} workers={cfg.workers} size={size} "
        f"augment={cfg.augment} threads={cfg.threads} cpus={os.cpu_count()} python={platform.python_version()}",
        flush=True,
    )
    results = []
    for mode in args.modes:
        started = time.perf_counter()
        results.append(run_isolated(mode, cfg))
        print(
            f"  {mode}: done in {time.perf_counter() - started:.1f} s (process start and imports included)", flush=True
        )
    print()
    print(format_table(results))
    print(
        "\nepoch 1 includes filling the cache; speed-up is epoch 2 over mode none; baseline RSS is the peak "
        "after imports, catalog scan and one warm-up sample;\nsamples/CPU-s divides by the CPU time of the "
        "process and its loader workers, which other jobs on the machine do not inflate as they do wall time"
    )
    for r in results:
        if r.disk_cache_mb is not None:
            print(f"disk cache: {r.disk_cache_mb:.0f} MB for {r.samples} cases")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"config": asdict(cfg), "results": [asdict(r) for r in results]}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
