"""GPU benchmark (<= 5 minutes): what the project's GPU path does on this GPU, as JSON.

Sections, each with the project's own code:

1. ``amp``: the 2D U-Net (``create_model("unet", ...)``) on random 32x3x256x256 batches with
   ``tumorbench.training.tasks.train_epoch`` (autocast + GradScaler from ``Precision.for_device``,
   channels-last on CUDA), fp32 (``off``) vs ``auto`` (bf16, or fp16 + GradScaler): images/s,
   ms/step, peak memory.
2. ``lgg_epoch``: the real LGG pipeline (catalog -> split -> ``train_loader`` with the memory
   cache, pinned memory and loader processes sized to the CPUs) training the 2D U-Net at 256x256
   with AMP: seconds of the first epoch (cache fill) and of the second, and the GPU busy fraction
   (``nvidia-smi`` utilization sampled every 100 ms during the second epoch).
3. ``segresnet3d``: SegResNet 3D (4 -> 3 channels) on random 2x4x96x96x96 patches with AMP:
   patches/s.

    python scripts/gpu_check.py --json runs/gpu_check.json
    python scripts/gpu_check.py --dry-run            # what it would measure; exits 0 (no GPU needed)

Exits with status 2 when no CUDA GPU is usable (``--dry-run`` never needs one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NO_GPU = 2
AMP_CHOICES = ("off", "auto", "bf16", "fp16")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="image side (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=50, help="timed steps per mode (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (default: %(default)s)")
    parser.add_argument(
        "--amp",
        default="off,auto",
        help="precision modes, first is the reference (default: %(default)s; choices: " + ",".join(AMP_CHOICES) + ")",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument(
        "--lgg",
        type=Path,
        default=Path(os.environ.get("TUMORBENCH_SHARED_DATA", "../shared/data")) / "lgg",
        help="LGG folder for the epoch timing (section skipped when absent)",
    )
    parser.add_argument("--patch", type=int, default=96, help="3D patch side (default: %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=270, help="skip sections that would start later")
    parser.add_argument("--dry-run", action="store_true", help="print what would be measured and exit 0")
    # runs the same code on the CPU at tiny sizes, to test this script where there is no GPU
    parser.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.amp = [m.strip() for m in args.amp.split(",") if m.strip()]
    if not args.amp or set(args.amp) - set(AMP_CHOICES):
        parser.error(f"--amp must be a comma-separated subset of {','.join(AMP_CHOICES)}, got {args.amp}")
    if min(args.size, args.batch_size, args.steps) < 1 or args.warmup < 0 or args.size % 16:
        parser.error("--size must be a positive multiple of 16; --batch-size and --steps >= 1; --warmup >= 0")
    return args


def measure(mode: str, args: argparse.Namespace, device):
    """Train ``warmup + steps`` steps in one precision mode; returns its numbers."""
    import torch

    from tumorbench.models import create_model
    from tumorbench.training.config import TrainConfig
    from tumorbench.training.tasks import Precision, channels_last, make_loss, train_epoch

    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return {"mode": mode, "skipped": "bf16 not supported by this GPU"}
    # the project's settings for the step (lr, weight decay, grad clip, amp); no path is read or written
    config = TrainConfig(task="segmentation", model="unet", data=".", out=".", amp=mode, batch_size=args.batch_size)
    precision = Precision.for_device(mode, device)
    torch.manual_seed(0)
    model = channels_last(
        create_model("unet", spatial_dims=2, in_channels=3, out_channels=1).to(device), config, device
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loss_fn = make_loss(config, None)
    shape = (args.batch_size, 1, args.size, args.size)
    batch = {
        "image": torch.randn(shape[0], 3, *shape[2:], device=device),
        "mask": (torch.rand(shape, device=device) > 0.95).float(),
    }
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def run(steps: int) -> dict:
        return train_epoch(model, [batch] * steps, loss_fn, optimizer, scheduler, precision, config, device)

    if args.warmup:
        run(args.warmup)  # cuDNN autotuning, allocator growth, lazy CUDA init
    _sync(device)
    started = time.perf_counter()
    stats = run(args.steps)
    _sync(device)
    seconds = time.perf_counter() - started
    result = {
        "mode": mode,
        "dtype": str(precision.dtype).replace("torch.", "") if precision.dtype else "float32",
        "grad_scaler": precision.scaler is not None,
        "images_per_s": args.steps * args.batch_size / seconds,
        "ms_per_step": 1000 * seconds / args.steps,
        "train_loss": stats["train_loss"],
    }
    if device.type == "cuda":
        result |= {
            "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
            "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20,
        }
    model = optimizer = batch = None  # free GPU memory before the next mode (the closure holds the cells)
    return result


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def report(results: list[dict]) -> str:
    """The results as text: one line per mode, then each mode's speed-up over the first."""
    lines = []
    done = [r for r in results if "skipped" not in r]
    for r in results:
        if "skipped" in r:
            lines.append(f"  {r['mode']:>4}: skipped ({r['skipped']})")
            continue
        memory = (
            f", peak GPU memory {r['peak_allocated_mb']:.0f} MB allocated / {r['peak_reserved_mb']:.0f} MB reserved"
            if "peak_allocated_mb" in r
            else ""
        )
        lines.append(
            f"  {r['mode']:>4} ({r['dtype']}{', GradScaler' if r['grad_scaler'] else ''}): "
            f"{r['images_per_s']:.1f} images/s, {r['ms_per_step']:.1f} ms/step{memory}, "
            f"loss {r['train_loss']:.4f}"
        )
    for r in done[1:]:
        ratio = r["images_per_s"] / done[0]["images_per_s"]
        lines.append(f"speed-up {r['mode']} vs {done[0]['mode']}: {ratio:.2f}x")
        if "peak_allocated_mb" in r:
            lines.append(
                f"memory {r['mode']} / {done[0]['mode']}: {r['peak_allocated_mb'] / done[0]['peak_allocated_mb']:.2f}x"
            )
    return "\n".join(lines)


class BusySampler:
    """GPU utilization (%) sampled by ``nvidia-smi`` every 100 ms while the block runs; None without it."""

    def __enter__(self):
        self.samples: list[float] = []
        try:
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=utilization.gpu",
                    "--format=csv,noheader,nounits",
                    "-i",
                    "0",
                    "-lms",
                    "100",
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
        except OSError:
            self._proc = None
            return self
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def _read(self) -> None:
        for line in self._proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def busy_fraction(self) -> float | None:
        return sum(self.samples) / (100 * len(self.samples)) if self.samples else None


def lgg_epoch(args: argparse.Namespace, device) -> dict:
    """Two epochs of the real LGG pipeline (memory cache, pinned memory, loader processes) on the 2D U-Net."""
    import torch

    from tumorbench.training import data as fold_data
    from tumorbench.training.config import TrainConfig
    from tumorbench.training.tasks import Precision, build_model, channels_last, make_loss, train_epoch
    from tumorbench.transforms import PreprocessConfig

    if not args.lgg.is_dir():
        return {"skipped": f"no LGG data at {args.lgg}"}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as out:
        config = TrainConfig(
            task="segmentation",
            model="unet",
            data=str(args.lgg),
            out=out,
            layout="lgg",
            batch_size=16,
            n_folds=5,
            preprocess=PreprocessConfig(spatial_size=(256, 256)),
            amp="auto",
        )
        fold_data.ensure_split_file(config, fold_data.load_catalog(config))
        cases = fold_data.fold_cases(config)
        loader = fold_data.train_loader(config, cases, 0, 1, device=device)
        model = channels_last(build_model(config, 3, 1)[0].to(device), config, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        precision, loss_fn = Precision.for_device("auto", device), make_loss(config, None)
        times = []
        with BusySampler() as busy:
            for _ in range(2):
                _sync(device)
                started = time.perf_counter()
                stats = train_epoch(model, loader, loss_fn, optimizer, scheduler, precision, config, device)
                _sync(device)
                times.append(time.perf_counter() - started)
                busy.samples.clear() if len(times) == 1 else None  # busy fraction of the steady epoch only
        return {
            "train_slices": stats["train_images"],
            "loader_workers": loader.num_workers,
            "pin_memory": loader.pin_memory,
            "epoch1_s_cache_fill": times[0],
            "epoch2_s": times[1],
            "epoch2_images_per_s": stats["train_images"] / times[1],
            "gpu_busy_fraction": busy.busy_fraction(),
        }


def segresnet3d(args: argparse.Namespace, device, steps: int = 20) -> dict:
    """SegResNet 3D training throughput on random patches with AMP."""
    import torch

    from tumorbench.models import create_model
    from tumorbench.training.tasks import Precision

    model = create_model("segresnet", spatial_dims=3, in_channels=4, out_channels=3).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    precision = Precision.for_device("auto", device)
    patch = (2, 4, args.patch, args.patch, args.patch)
    images, target = torch.randn(patch, device=device), (torch.rand(2, 3, *patch[2:], device=device) > 0.9).float()

    def step() -> None:
        with precision.autocast(device):
            logits = model(images)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        (precision.scaler.scale(loss) if precision.scaler else loss).backward()
        if precision.scaler:
            precision.scaler.step(optimizer)
            precision.scaler.update()
        else:
            optimizer.step()

    for _ in range(3):
        step()
    _sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - started
    return {
        "patch": list(patch),
        "steps": steps,
        "patches_per_s": steps * patch[0] / seconds,
        "ms_per_step": 1000 * seconds / steps,
    }


def dry_run(args: argparse.Namespace) -> str:
    """What a run would measure (no GPU needed)."""
    return "\n".join(
        [
            "gpu_check dry run (no CUDA GPU here): on a GPU it would measure, within ~5 minutes:",
            f"  1. amp: 2D U-Net train steps on random {args.batch_size}x3x{args.size}x{args.size}, "
            f"{args.warmup} warm-up"
            f" + {args.steps} timed, modes {','.join(args.amp)} (channels-last): images/s, ms/step, peak memory",
            f"  2. lgg_epoch: real LGG slices from {args.lgg} at 256x256, batch 16, memory cache, pinned memory, "
            f"loader processes = CPUs - 1 ({max(0, (os.cpu_count() or 1) - 1)} here), AMP: epoch 1 (cache fill) and "
            f"epoch 2 seconds, GPU busy fraction (nvidia-smi every 100 ms)",
            f"  3. segresnet3d: SegResNet 3D 4->3 on random 2x4x{args.patch}^3 patches, AMP: patches/s",
            f"  JSON to {args.json or '(stdout only; pass --json)'}; sections starting after {args.max_seconds:g} s "
            f"are skipped",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.dry_run:
        print(dry_run(args))
        return 0
    import torch

    if args.cpu_smoke:
        device = torch.device("cpu")
        header = f"CPU smoke run (numbers mean nothing): torch {torch.__version__}"
    elif not torch.cuda.is_available():
        print(f"no CUDA GPU: torch {torch.__version__} sees none (torch.cuda.is_available() is False)", file=sys.stderr)
        return NO_GPU
    else:
        device = torch.device("cuda")
        props = torch.cuda.get_device_properties(device)
        header = (
            f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}), "
            f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 "
            f"{'supported' if torch.cuda.is_bf16_supported() else 'not supported'}, "
            f"cudnn.benchmark={torch.backends.cudnn.benchmark}, "
            f"TF32 conv={torch.backends.cudnn.allow_tf32} matmul={torch.backends.cuda.matmul.allow_tf32}"
        )
    header += (
        f"\nunet 2D 3->1, random {args.batch_size}x3x{args.size}x{args.size}, {args.warmup} warm-up + "
        f"{args.steps} timed steps per mode, tumorbench.training.tasks.train_epoch"
    )
    print(header, flush=True)
    started, results = time.perf_counter(), []
    for mode in args.amp:
        results.append(measure(mode, args, device))
        print(f"  {mode}: done", flush=True)
    print(report(results))
    sections = {}
    for name, run in (("lgg_epoch", lgg_epoch), ("segresnet3d", segresnet3d)):
        if time.perf_counter() - started > args.max_seconds:
            sections[name] = {"skipped": f"past --max-seconds {args.max_seconds:g}"}
            continue
        sections[name] = run(args, device)
        print(f"  {name}: {json.dumps(sections[name], default=str)}", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "header": header,
                    "args": {k: str(v) for k, v in vars(args).items() if k != "json"},
                    "amp": results,
                    **sections,
                    "seconds": time.perf_counter() - started,
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
