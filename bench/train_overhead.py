"""Training framework overhead: a plain PyTorch loop vs Ray Train with 1 and 2 workers.

All three modes train the same 2D ``unet`` (3 -> 1 channels, DiceCE loss, AdamW,
grad-norm clip 1.0, as ``tumorbench.training.tasks`` does) on the same LGG slices,
preloaded once into memory tensors (a temporary ``.pt`` file each process loads),
so data loading does not hide the framework's cost. Each mode runs as its own
fresh Python process, so its start-up includes imports and its peak RSS is its own.

- start-up: plain = launching the process -> first step done (imports, model build,
  data load included); Ray = ``trainer.fit()`` called -> first step done on every
  worker (``ray.init`` is timed separately).
- steady img/s: images after the ``--warmup`` steps over the time they took; with
  2 workers each trains ``--steps`` batches of its own shard, so the global rate
  is ``workers * steps * batch / max(worker durations)``.
- peak RSS: ``ru_maxrss`` of every training process plus the Ray driver; the Ray
  daemons (GCS, raylet, idle workers, agents) are shown apart, as the sum of
  their VmHWM read from /proc right after ``fit()`` returns.

- ``--repeats N``: the modes run interleaved N times, each round in another of their orders
  (plain, ray-1, ray-2; plain, ray-2, ray-1; ...: all 6 in 6 rounds), so a drift of the machine's
  speed (a shared VM: ±10% between runs here) falls on every mode alike, and no mode always runs
  right after the same one.
  The table shows each mode's median run and every run's img/s; the ratios are medians of the
  ratios within each round, with a distribution-free 95% interval from 6 rounds on.

    python bench/train_overhead.py
    python bench/train_overhead.py --steps 40 --warmup 5 --json runs/bench_train_overhead.json
    python bench/train_overhead.py --steps 150 --warmup 50 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from overhead_report import format_table, ratios
from procfs import descendants_hwm_mb  # bench/, beside this script
from rounds import lower_median, round_order

MODES = ("plain", "ray-1", "ray-2")
RAY_CPUS = 2  # the Ray instance is sized like the 2-core machine this was written for
CPU_PER_WORKER = 0.95  # two workers fit in RAY_CPUS and leave a sliver to the driver
_REPO_ROOT = Path(__file__).resolve().parents[1]
_SHARED = Path(os.environ.get("TUMORBENCH_SHARED_DATA", _REPO_ROOT.parent / "shared" / "data"))


@dataclass(frozen=True)
class OverheadConfig:
    """What every mode trains on (sent to the child processes as JSON)."""

    data_file: str
    size: int = 128
    batch_size: int = 8
    steps: int = 40
    warmup: int = 5
    threads: int | None = None  # None: cores / training processes
    lr: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 16:
            raise ValueError(f"--size must be a multiple of 16 (the U-Net downsamples 4 times), got {self.size}")
        if self.batch_size < 1 or self.steps < 1 or self.warmup < 1:
            raise ValueError("--batch-size, --steps and --warmup must be >= 1 (the first step is start-up)")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")

    def threads_for(self, processes: int) -> int:
        """Torch intra-op threads per training process: all cores shared out, unless fixed."""
        return self.threads or max(1, (os.cpu_count() or 1) // processes)


@dataclass
class ModeResult:
    """One mode's measurements; times in s, rates in images/s, memory in MB."""

    mode: str
    workers: int
    threads: int
    startup_s: float
    steady_images_per_s: float
    peak_rss_mb: float  # sum over the training processes and the Ray driver
    process_rss_mb: dict = field(default_factory=dict)
    ray_init_s: float | None = None
    teardown_s: float | None = None  # last step done -> fit() returned
    ray_daemons_hwm_mb: float | None = None
    ray_daemons_by_name: dict = field(default_factory=dict)
    rss_after_imports_mb: dict = field(default_factory=dict)
    sum_worker_images_per_s: float | None = None
    final_loss: float | None = None


def _max_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


# ---------------------------------------------------------------- data


def preload(data: Path, size: int, slices: int, seed: int) -> tuple[dict, str]:
    """``slices`` LGG slices (z-scored, resized to ``size``) as tensors; random ones if ``data`` is missing."""
    import numpy as np
    import torch

    if data.is_dir():
        from tumorbench.data.catalog import scan
        from tumorbench.data.datasets import cases_from_catalog
        from tumorbench.transforms import PreprocessConfig, build_transforms

        cases = cases_from_catalog(scan(str(data), "lgg"))
        chain = build_transforms(PreprocessConfig(normalize="zscore", spatial_size=(size, size)), spatial_dims=2)
        # evenly spread over the sorted cases, so many patients (and tumor / no-tumor slices) are in
        picks = np.unique(np.linspace(0, len(cases) - 1, min(slices, len(cases))).round().astype(int))
        samples = [chain(dict(cases[i])) for i in picks]
        # plain arrays: MONAI's MetaTensor would not load with weights_only=True
        image = torch.from_numpy(np.stack([np.asarray(s["image"], dtype=np.float32) for s in samples]))
        mask = torch.from_numpy(np.stack([np.asarray(s["mask"]) > 0 for s in samples]).astype(np.float32))
        source = f"LGG {data}: {len(samples)} of {len(cases)} slices"
    else:
        generator = torch.Generator().manual_seed(seed)
        image = torch.randn(slices, 3, size, size, generator=generator)
        mask = (torch.rand(slices, 1, size, size, generator=generator) > 0.95).float()
        source = f"SYNTHETIC random tensors ({slices} slices): no LGG data at {data}"
    return {"image": image.contiguous(), "mask": mask.contiguous()}, source


def _batches(n: int, cfg: OverheadConfig, rank: int, world: int):
    """Index batches over this rank's shard, reshuffled each pass (like DistributedSampler)."""
    import torch

    shard = torch.arange(n)[rank::world]
    generator = torch.Generator().manual_seed(cfg.seed * 1000 + rank)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(cfg.warmup + cfg.steps):
        while len(order) < cfg.batch_size:
            order = torch.cat([order, shard[torch.randperm(len(shard), generator=generator)]])
        yield order[: cfg.batch_size]
        order = order[cfg.batch_size :]


# ---------------------------------------------------------------- the training run itself


def train_steps(cfg: OverheadConfig, threads: int, rank: int = 0, world: int = 1, prepare=None) -> dict:
    """Build the model, then time ``warmup + steps`` training steps; returns this process's record."""
    import torch
    from monai.losses import DiceCELoss

    from tumorbench.models import create_model

    after_imports = _max_rss_mb()  # torch + MONAI imports alone are most of a process's peak
    torch.set_num_threads(threads)
    tensors = torch.load(cfg.data_file, weights_only=True)
    torch.manual_seed(cfg.seed)
    model = create_model("unet", spatial_dims=2, in_channels=3, out_channels=1)
    if prepare is not None:
        model = prepare(model)
    model.train()
    loss_fn = DiceCELoss(sigmoid=True, batch=True)  # what tasks.make_loss uses for segmentation
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    first_step = steady_start = 0.0
    for step, index in enumerate(_batches(len(tensors["image"]), cfg, rank, world)):
        loss = loss_fn(model(tensors["image"][index]), tensors["mask"][index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        value = float(loss.detach())  # also makes sure the step is finished
        if step == 0:
            first_step = time.time()
        if step == cfg.warmup - 1:
            steady_start = time.perf_counter()
    steady = time.perf_counter() - steady_start
    return {
        "rank": rank,
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        "first_step_time": first_step,
        "last_step_time": time.time(),
        "steady_s": steady,
        "images": cfg.steps * cfg.batch_size,
        "final_loss": value,
        "peak_rss_mb": _max_rss_mb(),
        "rss_after_imports_mb": after_imports,
    }


def ray_worker(loop_config: dict) -> None:
    """Ray Train worker: the same steps on this rank's shard; rank 0 reports every rank's record."""
    import ray.train
    import ray.train.torch

    from tumorbench.training.validation import gather

    cfg = OverheadConfig(**loop_config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    record = train_steps(cfg, loop_config["threads"], rank, world, ray.train.torch.prepare_model)
    records = gather([record])  # after the timed steps, so the collective costs nothing measured
    if rank != 0:
        ray.train.report({})
        return
    # Ray Train V2 keeps (for Result.metrics) only metrics reported with a checkpoint: attach an empty one
    with tempfile.TemporaryDirectory() as directory:
        ray.train.report({"records": records}, checkpoint=ray.train.Checkpoint.from_directory(directory))


def run_plain(cfg: OverheadConfig, launched: float) -> ModeResult:
    """The plain loop, in this (fresh) process; ``launched`` is when the parent started it."""
    record = train_steps(cfg, cfg.threads_for(1))
    return ModeResult(
        "plain",
        1,
        record["threads"],
        record["first_step_time"] - launched,
        record["images"] / record["steady_s"],
        record["peak_rss_mb"],
        {"plain": record["peak_rss_mb"]},
        final_loss=record["final_loss"],
        rss_after_imports_mb={"plain": record["rss_after_imports_mb"]},
    )


def run_ray(cfg: OverheadConfig, workers: int) -> ModeResult:
    """Ray Train on a fresh local Ray instance, driven from this (fresh) process, set up as studies start it."""
    from tumorbench.training.trainer import job_env, local_ray_env, on_local_ray

    local_ray_env()  # workers at normal priority, as tumorbench's own ray.init starts them
    import ray
    from ray.train import LoggingConfig, RunConfig, ScalingConfig

    from tumorbench.raycompat import torch_trainer  # Train's trainer less the helper actors studies do without

    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=RAY_CPUS,
        include_dashboard=True,
        log_to_driver=False,
        object_store_memory=512 * 1024**2,
        runtime_env={"env_vars": job_env()},  # Train's report polling as studies run it
    )
    ray_init_s = time.perf_counter() - started
    try:
        with tempfile.TemporaryDirectory(prefix="tumorbench-overhead-") as storage:
            trainer = torch_trainer(autoscaling=not on_local_ray())(
                ray_worker,
                train_loop_config={"cfg": asdict(cfg), "threads": cfg.threads_for(workers)},
                scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": CPU_PER_WORKER}),
                run_config=RunConfig(
                    name="overhead", storage_path=storage, logging_config=LoggingConfig(log_level="WARNING")
                ),
            )
            fit_called = time.time()
            result = trainer.fit()
            fit_returned = time.time()
        records = result.metrics["records"]
        daemons = descendants_hwm_mb(os.getpid(), exclude={r["pid"] for r in records})
    finally:
        ray.shutdown()
    rss = {"driver": _max_rss_mb()} | {f"worker{r['rank']}": r["peak_rss_mb"] for r in records}
    images = sum(r["images"] for r in records)
    return ModeResult(
        f"ray-{workers}",
        workers,
        records[0]["threads"],
        max(r["first_step_time"] for r in records) - fit_called,
        images / max(r["steady_s"] for r in records),
        sum(rss.values()),
        rss,
        ray_init_s=ray_init_s,
        teardown_s=fit_returned - max(r["last_step_time"] for r in records),
        ray_daemons_hwm_mb=sum(daemons.values()) if daemons else None,
        ray_daemons_by_name=daemons,
        rss_after_imports_mb={f"worker{r['rank']}": r["rss_after_imports_mb"] for r in records},
        sum_worker_images_per_s=sum(r["images"] / r["steady_s"] for r in records),
        final_loss=records[0]["final_loss"],
    )


# ---------------------------------------------------------------- driver


def launch(mode: str, cfg: OverheadConfig, workdir: Path, timeout: float) -> ModeResult:
    """Run one mode as a fresh ``python`` process and read its result file."""
    out = workdir / f"{mode}.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        mode,
        "--child-config",
        json.dumps(asdict(cfg)),
        "--child-out",
        str(out),
        "--child-launched",
        repr(time.time()),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 or not out.exists():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-40:])
        raise RuntimeError(f"mode {mode} failed (exit {done.returncode}):\n{tail}")
    return ModeResult(**json.loads(out.read_text()))


def child_main(args: argparse.Namespace) -> int:
    cfg = OverheadConfig(**json.loads(args.child_config))
    result = (
        run_plain(cfg, args.child_launched) if args.child == "plain" else run_ray(cfg, int(args.child.split("-")[1]))
    )
    Path(args.child_out).write_text(json.dumps(asdict(result)))
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=_SHARED / "lgg", help="LGG folder (default: %(default)s)")
    parser.add_argument("--size", type=int, default=128, help="slices resized to N x N (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="per process (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per process (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first, >= 1 (default: %(default)s)")
    parser.add_argument("--slices", type=int, default=256, help="slices preloaded (default: %(default)s)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per training process (default: cores / training processes)",
    )
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of %(default)s")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per mode (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every mode, interleaved (default: 1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    for name, kind in (("--child", str), ("--child-config", str), ("--child-out", str), ("--child-launched", float)):
        parser.add_argument(name, type=kind, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return args
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes must be a comma-separated subset of {','.join(MODES)}, got {args.modes}")
    if args.slices < 1:
        parser.error("--slices must be >= 1")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    try:
        args.cfg = OverheadConfig("", args.size, args.batch_size, args.steps, args.warmup, args.threads, seed=args.seed)
    except ValueError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    """Preload the data, run every mode in its own process, print the table and ratios."""
    args = _parse(argv)
    if args.child:
        return child_main(args)
    import torch

    with tempfile.TemporaryDirectory(prefix="tumorbench-overhead-") as workdir:
        tensors, source = preload(args.data, args.size, args.slices, args.seed)
        data_file = Path(workdir) / "data.pt"
        torch.save(tensors, data_file)
        cfg = OverheadConfig(str(data_file), **{k: v for k, v in asdict(args.cfg).items() if k != "data_file"})
        threads = {m: cfg.threads_for(1 if m == "plain" else int(m[-1])) for m in args.modes}
        print(f"data: {source}; {tuple(tensors['image'].shape)} images in memory", flush=True)
        print(
            f"unet 2D 3->1, DiceCE, AdamW; batch {cfg.batch_size} per process, {cfg.warmup} warm-up + {cfg.steps} "
            f"timed steps; cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f} torch={torch.__version__} "
            f"python={platform.python_version()}",
            flush=True,
        )
        print(
            "torch threads per training process: "
            + ", ".join(f"{m}={t}" for m, t in threads.items())
            + f"; Ray: num_cpus={RAY_CPUS}, {CPU_PER_WORKER} CPU per worker",
            flush=True,
        )
        rounds: list[dict[str, ModeResult]] = []
        for n in range(args.repeats):
            rounds.append({})
            for mode in round_order(args.modes, n):
                started = time.perf_counter()
                rounds[-1][mode] = launch(mode, cfg, Path(workdir), args.timeout)
                print(f"  {mode}: done in {time.perf_counter() - started:.1f} s (round {n + 1})", flush=True)
    runs = {mode: [one[mode].steady_images_per_s for one in rounds] for mode in args.modes}
    results = [lower_median([one[mode] for one in rounds], key=lambda r: r.steady_images_per_s) for mode in args.modes]
    print()
    print(format_table(results, runs if args.repeats > 1 else None))
    print()
    print("\n".join(ratios(results, rounds)))
    print(
        "\nstart-up: plain = process launch -> first step done; ray = fit() called -> first step done on all "
        "workers (ray.init apart). Peak RSS sums the training processes and the Ray driver; the Ray daemons "
        "(VmHWM, after fit) are not in the sum."
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "config": asdict(cfg) | {"data_file": None},
                    "data": source,
                    "threads": threads,
                    "cpus": os.cpu_count(),
                    "results": [asdict(r) for r in results],
                    "rounds": [{mode: asdict(r) for mode, r in one.items()} for one in rounds],
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
