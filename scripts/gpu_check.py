"""GPU check: training speed and memory of the 2D U-Net in fp32 and with the project's AMP path.

Trains ``create_model("unet", spatial_dims=2, in_channels=3, out_channels=1)`` on
random tensors (batch 32, 256x256 by default) with the project's own training
step (``tumorbench.training.tasks.train_epoch``: autocast and GradScaler from
``Precision.for_device``, DiceCE in fp32, grad-norm clip, AdamW), once per
precision mode, and prints images/s, the AMP-vs-fp32 speed-up and the peak GPU
memory of each. Timing brackets the timed steps with ``torch.cuda.synchronize()``.

    python scripts/gpu_check.py                      # fp32 ("off") vs "auto" (bf16, or fp16 + GradScaler)
    python scripts/gpu_check.py --amp off,auto,fp16 --steps 100 --json runs/gpu_check.json

Exits with status 2 when no CUDA GPU is usable.
"""

from __future__ import annotations

import argparse
import json
import sys
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
    parser.add_argument("--amp", default="off,auto", help="precision modes, first is the reference (default: "
                        "%(default)s; choices: " + ",".join(AMP_CHOICES) + ")")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
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
    from tumorbench.training.tasks import Precision, make_loss, train_epoch

    if mode == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return {"mode": mode, "skipped": "bf16 not supported by this GPU"}
    # the project's settings for the step (lr, weight decay, grad clip, amp); no path is read or written
    config = TrainConfig(task="segmentation", model="unet", data=".", out=".", amp=mode, batch_size=args.batch_size)
    precision = Precision.for_device(mode, device)
    torch.manual_seed(0)
    model = create_model("unet", spatial_dims=2, in_channels=3, out_channels=1).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    loss_fn = make_loss(config, None)
    shape = (args.batch_size, 1, args.size, args.size)
    batch = {"image": torch.randn(shape[0], 3, *shape[2:], device=device),
             "mask": (torch.rand(shape, device=device) > 0.95).float()}
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
    result = {"mode": mode, "dtype": str(precision.dtype).replace("torch.", "") if precision.dtype else "float32",
              "grad_scaler": precision.scaler is not None, "images_per_s": args.steps * args.batch_size / seconds,
              "ms_per_step": 1000 * seconds / args.steps, "train_loss": stats["train_loss"]}
    if device.type == "cuda":
        result |= {"peak_allocated_mb": torch.cuda.max_memory_allocated(device) / 2**20,
                   "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / 2**20}
    del model, optimizer, batch
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
        memory = f", peak GPU memory {r['peak_allocated_mb']:.0f} MB allocated / {r['peak_reserved_mb']:.0f} MB " \
                 f"reserved" if "peak_allocated_mb" in r else ""
        lines.append(f"  {r['mode']:>4} ({r['dtype']}{', GradScaler' if r['grad_scaler'] else ''}): "
                     f"{r['images_per_s']:.1f} images/s, {r['ms_per_step']:.1f} ms/step{memory}, "
                     f"loss {r['train_loss']:.4f}")
    for r in done[1:]:
        ratio = r["images_per_s"] / done[0]["images_per_s"]
        lines.append(f"speed-up {r['mode']} vs {done[0]['mode']}: {ratio:.2f}x")
        if "peak_allocated_mb" in r:
            lines.append(f"memory {r['mode']} / {done[0]['mode']}: "
                         f"{r['peak_allocated_mb'] / done[0]['peak_allocated_mb']:.2f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    if args.cpu_smoke:
        device = torch.device("cpu")
        header = f"CPU smoke run (numbers mean nothing): torch {torch.__version__}"
    elif not torch.cuda.is_available():
        print(f"no CUDA GPU: torch {torch.__version__} sees none (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return NO_GPU
    else:
        device = torch.device("cuda")
        props = torch.cuda.get_device_properties(device)
        header = (f"GPU: {props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}), "
                  f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 "
                  f"{'supported' if torch.cuda.is_bf16_supported() else 'not supported'}, "
                  f"cudnn.benchmark={torch.backends.cudnn.benchmark}, "
                  f"TF32 conv={torch.backends.cudnn.allow_tf32} matmul={torch.backends.cuda.matmul.allow_tf32}")
    header += (f"\nunet 2D 3->1, random {args.batch_size}x3x{args.size}x{args.size}, {args.warmup} warm-up + "
               f"{args.steps} timed steps per mode, tumorbench.training.tasks.train_epoch")
    print(header, flush=True)
    results = []
    for mode in args.amp:
        results.append(measure(mode, args, device))
        print(f"  {mode}: done", flush=True)
    print(report(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"header": header, "args": {k: v for k, v in vars(args).items()
                                                                    if k != "json"}, "results": results}, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
