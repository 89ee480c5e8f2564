"""Calibrate the study planner's time model: ms per image for each model family on this machine.

For each model: build it as a study would (``tumorbench.models.create_model``), then time
``--steps`` training steps (forward, DiceCE or cross-entropy, backward, AdamW) and as many
evaluation forwards on random tensors at ``--size`` (2D) with ``--threads`` torch threads
(a Ray Train worker holding ~1 CPU runs one: Ray sets ``OMP_NUM_THREADS`` to its CPUs).
Prints train and eval ms per image at that size in CPU time (what an idle core gives; wall
time beside it shows how loaded the machine was), the numbers ``tumorbench.study.timemodel``
keeps in ``MS_PER_IMAGE`` (scaled by pixel count for other sizes).

    python bench/plan_calibration.py
    python bench/plan_calibration.py --models unet,resnet18 --size 128 --json runs/plan_calibration.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_MODELS = "unet,attention_unet,resnet18,resnet18_tiny,efficientnet_b0,tf_efficientnet_lite0"


def measure(name: str, size: int, batch: int, steps: int) -> dict:
    import torch

    from tumorbench.models import create_model, model_info

    segmentation = model_info(name).task == "segmentation"
    accepted = model_info(name).default_kwargs  # named each model's way, as tasks.model_kwargs does
    sizes = {"spatial_dims": 2, "in_channels": 3, "in_chans": 3, "out_channels": 1, "num_classes": 2}
    kwargs = {k: v for k, v in sizes.items() if k in accepted}
    model = create_model(name, **kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(batch, 3, size, size)
    if segmentation:
        from monai.losses import DiceCELoss

        target, loss_fn = (torch.rand(batch, 1, size, size) > 0.95).float(), DiceCELoss(sigmoid=True, batch=True)
    else:
        target, loss_fn = torch.randint(0, 2, (batch,)), torch.nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(fn) -> tuple[float, float]:
        fn()  # first-call set-up
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            fn()
        scale = 1000 / (steps * batch)
        return (time.perf_counter() - wall) * scale, (time.process_time() - cpu) * scale

    model.train()
    train_wall, train_cpu = timed(step)
    model.eval()
    with torch.no_grad():
        eval_wall, eval_cpu = timed(lambda: model(images))
    # CPU time of one thread is what an idle core gives; wall time shows how loaded the machine was
    return {
        "model": name,
        "size": size,
        "batch": batch,
        "train_ms_per_image": round(train_cpu, 2),
        "eval_ms_per_image": round(eval_cpu, 2),
        "train_wall_ms": round(train_wall, 2),
        "eval_wall_ms": round(eval_wall, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows.append(measure(name, args.size, args.batch_size, args.steps))
        r = rows[-1]
        print(
            f"{name:<24} train {r['train_ms_per_image']:7.1f} ms/img   eval {r['eval_ms_per_image']:6.1f} ms/img "
            f"CPU time (wall {r['train_wall_ms']:.1f} / {r['eval_wall_ms']:.1f})   ({args.size}x{args.size}, "
            f"batch {args.batch_size}, {args.threads} thread(s))",
            flush=True,
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
