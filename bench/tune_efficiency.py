"""What ASHA saves: the same random search with and without early stopping, in one run.

Both searches use the same searcher (random, same seed, so the same
configurations in the same order), the same number of trials, the same data
(brain MRI yes/no, de-duplicated, one split file shared by both) and the same
model; each trial is a k-fold cross-validation in one Ray Train run that reports
every epoch, so ASHA (time: epochs spent) can stop a configuration inside its first fold.

Printed per scheduler: trials, folds trained, epochs spent, the best
``<metric>_mean`` among trials that finished every fold, wall time, and the
mean Ray Train overhead per fold of the trials that finished (their run's wall time minus
training and validation, over their folds: start-up once per trial, set-up, checkpoints, shutdown).

    python bench/tune_efficiency.py                                    # 12 trials x 3 folds x 4 epochs, ASHA rf 4
    python bench/tune_efficiency.py --num-samples 2 --epochs 1 --size 32   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[1]
_SHARED = Path(os.environ.get("TUMORBENCH_SHARED_DATA", _REPO_ROOT.parent / "shared" / "data"))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(_SHARED / "brain_mri_yes_no"), help="class-folder dataset")
    parser.add_argument("--model", default="resnet18_tiny")
    parser.add_argument("--size", type=int, default=64, help="images are resized to size x size (grey)")
    parser.add_argument("--num-samples", type=int, default=12, help="trials per search")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument(
        "--grace-period", type=int, default=None, help="ASHA grace period in epochs (default: the project's)"
    )
    parser.add_argument(
        "--reduction-factor", type=float, default=None, help="ASHA reduction factor (default: the project's)"
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0, help="searcher and training seed")
    parser.add_argument("--max-concurrent", type=int, default=1)
    parser.add_argument("--out", default=str(_REPO_ROOT / "runs" / "bench_tune_efficiency"))
    parser.add_argument("--json", help="write the table and every trial here")
    return parser.parse_args(argv)


def _space():
    from ray import tune

    # Wide enough that some draws are poor (a too-high or too-low rate), which ASHA should cut.
    return {
        "lr": tune.loguniform(1e-4, 5e-2),
        "batch_size": tune.choice([8, 16, 32]),
        "augment": tune.choice(["none", "light", "medium"]),
        "weight_decay": tune.loguniform(1e-5, 1e-2),
    }


def _overheads(rows: list[dict]) -> list[float]:
    from tumorbench.tuning.trial import read_state

    values = []
    for row in rows:
        if row["checkpoint"]:
            values += [f.overhead_seconds for f in read_state(row["checkpoint"])[0]]
    return values


def _summary(scheduler: str, rows: list[dict], wall: float, mode: str) -> dict:
    from tumorbench.tuning.search import best_row

    best = best_row(rows, mode)
    overheads = _overheads(rows)
    return {
        "scheduler": scheduler,
        "trials": len(rows),
        "errors": sum(r["status"] == "error" for r in rows),
        "stopped": sum(r["status"] == "stopped" for r in rows),
        "folds_trained": sum(r["folds_done"] for r in rows),
        "epochs_spent": sum(r["epochs_spent"] for r in rows),
        "best_mean": best["mean"] if best else float("nan"),
        "best_sd": best["sd"] if best else float("nan"),
        "best_params": best["params"] if best else None,
        "wall_s": wall,
        "train_overhead_s": statistics.mean(overheads) if overheads else float("nan"),
    }


def _table(summaries: list[dict], metric: str) -> str:
    head = (
        f"{'scheduler':<10}{'trials':>7}{'stopped':>8}{'errors':>7}{'folds trained':>14}{'epochs spent':>13}"
        f"{'best ' + metric + '_mean':>18}{'wall time':>11}{'Train overhead/fold':>21}"
    )
    lines = [head, "-" * len(head)]
    for s in summaries:
        lines.append(
            f"{s['scheduler']:<10}{s['trials']:>7}{s['stopped']:>8}{s['errors']:>7}{s['folds_trained']:>14}"
            f"{s['epochs_spent']:>13}{s['best_mean']:>12.4f} ± {s['best_sd']:.3f}{s['wall_s']:>10.0f}s"
            f"{s['train_overhead_s']:>20.1f}s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from tumorbench.tasks import get_task
    from tumorbench.training.config import TrainConfig
    from tumorbench.training.data import ensure_split_file, load_catalog, split_path
    from tumorbench.training.trainer import ensure_ray
    from tumorbench.transforms import PreprocessConfig
    from tumorbench.tuning.schedulers import ASHA_REDUCTION_FACTOR, asha_expected_share, asha_grace_epochs
    from tumorbench.tuning.search import run_search, trial_rows

    out = Path(args.out) / datetime.now().strftime("%Y%m%d-%H%M%S")
    base = TrainConfig(
        task="classification",
        model=args.model,
        data=args.data,
        out=str(out),
        n_folds=args.folds,
        epochs=args.epochs,
        seed=args.seed,
        warmup_epochs=0,
        dedupe=True,
        preprocess=PreprocessConfig(spatial_size=(args.size, args.size), channels=1),
    )
    ensure_split_file(base, load_catalog(base))  # one de-duplicated split for both searches
    base = base.replace(split_file=str(split_path(base)))
    metric, mode = base.selection_metric, get_task(base.task).mode()
    asha = (args.grace_period or asha_grace_epochs(args.epochs), args.reduction_factor or ASHA_REDUCTION_FACTOR)
    ensure_ray()
    summaries, trials = [], {}
    for scheduler in ("asha", "none"):
        started = time.perf_counter()
        grid = run_search(
            base,
            _space(),
            searcher="random",
            scheduler=scheduler,
            num_samples=args.num_samples,
            metric=metric,
            mode=mode,
            storage_path=out,
            name=scheduler,
            seed=args.seed,
            max_concurrent=args.max_concurrent,
            verbose=0,
            grace_period=asha[0],
            reduction_factor=asha[1],
        )
        rows = trial_rows(grid, metric, args.folds)
        summaries.append(_summary(scheduler, rows, time.perf_counter() - started, mode))
        trials[scheduler] = rows
        print(f"[bench] {scheduler}: {len(rows)} trials in {summaries[-1]['wall_s']:.0f}s", flush=True)
    configs = {name: sorted(str(r["params"]) for r in rows) for name, rows in trials.items()}
    same = configs["asha"] == configs["none"]
    print(
        f"\n{args.model} {args.size}x{args.size}, {args.folds} folds x {args.epochs} epochs, random search "
        f"seed {args.seed}, {args.num_samples} trials; same configurations in both: {same}; out {out}\n"
    )
    print(_table(summaries, metric))
    ratio = summaries[0]["epochs_spent"] / max(1, summaries[1]["epochs_spent"])
    print(
        f"\nASHA grace {asha[0]} epoch(s), reduction factor {asha[1]:g}: epochs asha / none = {ratio:.2f} "
        f"(expected {asha_expected_share(args.num_samples, args.folds * args.epochs, *asha):.2f}; target <= 0.40); "
        f"wall asha / none = {summaries[0]['wall_s'] / max(1e-9, summaries[1]['wall_s']):.2f}; best "
        f"{metric}_mean asha - none = {summaries[0]['best_mean'] - summaries[1]['best_mean']:+.4f}"
    )
    for s in summaries:
        print(f"best with {s['scheduler']}: {s['best_params']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "summaries": summaries, "trials": trials}, indent=1, default=str)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
