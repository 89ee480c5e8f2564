"""Time each candidate model's step on this machine before planning: the time model's constants, per model.

The constants of :mod:`tumorbench.study.timemodel` were measured on one machine. Another machine is not
uniformly faster or slower: on a second 2-core VM (2026-12-03) a U-Net step took 1.45x the constant while
the yes/no study's classifiers ran ~35% under theirs, so one probe model cannot scale a whole study (the
LGG study planned 13.7 min and took 18.2; yes/no, scaled by a U-Net probe, planned 14.1 and took 10.9).
Each distinct model of the study is built as its trials build it (``training.tasks.build_model``, without
pretrained weights: same architecture), and a few training steps and evaluation forwards are timed on
random tensors at the study's input or patch size, in one torch thread (the constants' unit). The ratio
to the constant at that size is the model's factor. Where the planner may scale the size down, each model is
timed at the smallest size it may choose too: the share of its cost that does not fall with the pixels is its
own (a 2D U-Net's step fell with the pixels from 128 to 64 px, 0.26-0.34x, where classifiers kept 0.41-0.62x;
one share for all, 0.4, planned the LGG ``--budget 15`` study's 96-px U-Net folds 1.3x too long, 2026-12-07).

A few seconds per model. Timed on the driver: on a cluster whose workers are other machines it is the
best estimate there is, and GPUs are not probed (the plan keeps ``timemodel.GPU_SPEEDUP``).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

from tumorbench.study.scaling import PATCHES_3D, SIZES_2D
from tumorbench.study.spec import Study
from tumorbench.study.timemodel import Factors, fixed_share, model_ms

FACTOR_RANGE = (0.2, 5.0)  # beyond this the probe itself is suspect (a loaded machine): clipped
MACHINE_RANGE = (0.5, 2.0)  # the whole machine against the calibration one: a narrower, safer range
BATCH = {2: 8, 3: 2}  # the calibration's 2D batch; two patches in 3D
# Timed after one untimed step (first-call set-up); the fastest is kept: the median of 3 moved by +-25% between
# runs here (segresnet_tiny 1.07x, 1.30x, 1.37x), other processes' bursts landing in one step or another.
STEPS = 4


def measure_step(
    model, task, batch: int, size: int, dims: int, in_channels: int, out_channels: int, steps: int = STEPS
):
    """Fastest wall ms per image of a training step (forward, task loss, backward, AdamW) and an eval forward."""
    import torch

    images = torch.randn(batch, in_channels, *([size] * dims))
    sample = {
        "label": torch.randint(0, max(2, out_channels), (batch,)),
        "mask": torch.rand(batch, 1, *images.shape[2:]) > 0.95,
    }
    target = task.batch_target(sample, torch.device("cpu"))
    loss_fn = task.loss(None, None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train() -> None:
        loss = loss_fn(model(images), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def timed(fn) -> float:
        fn()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times) * 1000 / batch

    model.train()
    train_ms = timed(train)
    model.eval()
    with torch.no_grad():
        eval_ms = timed(lambda: model(images))
    return train_ms, eval_ms


def probe_factors(study: Study, fp: dict[str, Any], size: int, dims: int) -> Factors:
    """Per distinct model of ``study``: its measured train/eval ms per image here and the factors over the constants.

    Returns:
        ``{model: {"train_ms", "eval_ms", "train", "eval"}}`` (``train``/``eval``: measured / constant, clipped),
        and where the plan may choose a smaller size, ``"size"``, ``"smaller"``, the ms there
        (``"smaller_train_ms"``, ``"smaller_eval_ms"``) and the shares of the train step and eval forward that
        did not fall with the pixels between the two (``"fixed_train"``, ``"fixed_eval"``).
    """
    import torch

    from tumorbench.tasks import get_task
    from tumorbench.training.tasks import build_model

    task = get_task(study.task)
    smaller = min((s for s in (PATCHES_3D if dims == 3 else SIZES_2D) if s < size), default=None)
    in_channels = int((study.config.get("preprocess") or {}).get("channels") or fp["channels"])
    out_channels = 1 if task.with_mask else max(2, len(fp.get("classes") or {}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the constants' unit: ms in one torch thread
    found: Factors = {}
    try:
        for candidate in study.candidates:
            name = candidate.config["model"]
            if name in found:
                continue
            config = study.train_config(candidate, data=study.data or "synthetic", out=study.name)
            model, _ = build_model(config.replace(pretrained=False), in_channels, out_channels)
            step = functools.partial(
                measure_step, model, task, BATCH[dims], dims=dims, in_channels=in_channels, out_channels=out_channels
            )
            found[name] = _factors(name, step, size, smaller, dims)
    finally:
        torch.set_num_threads(threads)
    return found


def _factors(name: str, step, size: int, smaller: int | None, dims: int) -> dict[str, float]:
    """One model's probe entry (:func:`probe_factors`); ``step(size=...)`` times it at a size."""
    train_ms, eval_ms = step(size=size)
    const_train, const_eval = model_ms(name, size, dims)
    found = {
        "train_ms": round(train_ms, 2),
        "eval_ms": round(eval_ms, 2),
        "train_measured": round(train_ms / const_train, 3),
        "train": _clip(train_ms / const_train),
        "eval": _clip(eval_ms / const_eval),
    }
    if smaller is None:
        return found
    try:
        small_train, small_eval = step(size=smaller)
    except RuntimeError:  # a model that cannot take the smaller input keeps the default share (its trials say why)
        return found
    return found | {
        "size": size,
        "smaller": smaller,
        "smaller_train_ms": round(small_train, 2),
        "smaller_eval_ms": round(small_eval, 2),
        "fixed_train": fixed_share(train_ms, small_train, smaller / size, dims),
        "fixed_eval": fixed_share(eval_ms, small_eval, smaller / size, dims),
    }


def machine_factor(factors: Factors | None) -> float:
    """This machine's speed against the one the constants were measured on: the geometric mean of the probed
    models' train factors (1 without a probe, as on GPUs). The time model's other CPU-bound constants (Ray
    start-up, fold set-up, decoding, scoring, baselines) scale with it: on 2026-12-06 the models probed at
    0.71-0.88x, and the LGG ``--budget 15`` study's trial start-up (20.6 s against 30 planned), fold set-up
    (2.5 s against 6) and epochs (8.3 s against 9.6) ran as far under the constants (planned 14.7 min, took 11.4).
    """
    ratios = [f["train"] for f in (factors or {}).values() if f.get("train")]
    if not ratios:
        return 1.0
    mean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return round(min(max(mean, MACHINE_RANGE[0]), MACHINE_RANGE[1]), 3)


def _clip(ratio: float) -> float:
    return round(min(max(ratio, FACTOR_RANGE[0]), FACTOR_RANGE[1]), 3)


def describe(factors: Factors) -> str:
    """One plan note: each model's step here against the time model's constant (and when it was clipped)."""
    parts = []
    for model, f in factors.items():
        measured = f.get("train_measured", f["train"])
        clipped = f" (measured {measured:.2f}x: clipped to {FACTOR_RANGE[0]:g}-{FACTOR_RANGE[1]:g}x)"
        parts.append(f"{model} {f['train']:.2f}x" + (clipped if _clip(measured) != measured else ""))
    machine = machine_factor(factors)
    shares = [f"{model} {f['fixed_train']:.2f}" for model, f in factors.items() if "fixed_train" in f]
    smaller = next((f["smaller"] for f in factors.values() if "smaller" in f), None)
    return (
        "step times measured here (train, vs the time model's constants): "
        + ", ".join(parts)
        + f"; start-up, set-up, decoding and scoring at their geometric mean, {machine:.2f}x"
        + (f"; share of a step that does not shrink with the size (timed at {smaller} too): " if shares else "")
        + ", ".join(shares)
    )
