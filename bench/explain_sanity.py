"""Sanity of the explanation methods on images whose class is decided by a bright disc.

Trains the tests' 3-layer CNN (tests/unit/test_explain.py, registered there as ``test_blobnet``) in
process for 40 full-batch steps, then prints per method: accuracy, pointing game and energy in the
disc over the positive test images, mean deletion / insertion AUC, and the randomisation check
against three re-initialised copies (and the pointing game of those copies).

    PYTHONPATH=platform:tests/unit python bench/explain_sanity.py
"""

from __future__ import annotations

import time

import numpy as np
import test_explain as t  # tests/unit on PYTHONPATH: the same data and model as the test
import torch

from tumorbench.explain import (
    ExplainConfig,
    Explainer,
    curve_auc,
    energy_in_mask,
    perturbation_curve,
    pointing_game,
    randomisation_check,
    randomized_copy,
)


def main() -> None:
    factory = t.blobnet.__wrapped__()  # registers the CNN
    name = next(factory)
    start = time.perf_counter()
    model = t.trained.__wrapped__(name)
    print(f"trained {name} in {time.perf_counter() - start:.1f} s")
    images, labels, masks = t.blob_images(40, seed=1)
    with torch.no_grad():
        accuracy = float((model(images).argmax(1) == labels).float().mean())
    positive = [i for i in range(len(images)) if labels[i] == 1]
    print(f"test accuracy {accuracy:.3f} on {len(images)} images; {len(positive)} with a disc explained")
    for method in ("gradcam", "gradcampp", "occlusion"):
        explainer = Explainer(model, name, "classification", ExplainConfig(method), positive_index=1)
        heat = [explainer.heatmap(images[i]) for i in positive]
        curves = {"deletion": [], "insertion": []}
        for h, i in zip(heat, positive):
            scorer = explainer.scorer(images[i][None])
            for mode in curves:
                curve = perturbation_curve(
                    lambda b, e=explainer, s=scorer: e.score(torch.as_tensor(b), s), images[i].numpy(), h, mode
                )
                curves[mode].append(curve_auc(curve))
        randomised, hits = [], []
        for seed in range(3):
            copy = Explainer(randomized_copy(model, seed), name, "classification", ExplainConfig(method), 1)
            maps = [copy.heatmap(images[i]) for i in positive]
            randomised += maps
            hits += [pointing_game(h, masks[i]) for h, i in zip(maps, positive)]
        check = randomisation_check(heat * 3, randomised)
        print(
            f"{method:9s} pointing {np.mean([pointing_game(h, masks[i]) for h, i in zip(heat, positive)]):.2f}  "
            f"energy in disc {np.mean([energy_in_mask(h, masks[i]) for h, i in zip(heat, positive)]):.2f}  "
            f"deletion AUC {np.mean(curves['deletion']):.3f}  insertion AUC {np.mean(curves['insertion']):.3f}  | "
            f"randomised: pointing {np.mean(hits):.2f}, rank corr {check.rank_corr:.3f}, SSIM {check.ssim:.3f}, "
            f"flagged {check.flagged}"
        )
    brightness = [np.clip(images[i, 0].numpy(), 0, None) for i in positive]
    control = randomisation_check(brightness, brightness)
    print(
        f"control (image brightness as the 'explanation'): rank corr {control.rank_corr:.3f}, "
        f"SSIM {control.ssim:.3f}, flagged {control.flagged}"
    )


if __name__ == "__main__":
    main()
