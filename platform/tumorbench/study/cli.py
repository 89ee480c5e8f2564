"""The comparison study's command line: ``tumorbench compare`` and ``experiments/compare.py`` both run :func:`main`.

    tumorbench compare                                      # embedded synthetic study, local Ray
    tumorbench compare --study lgg --preset default
    tumorbench compare --data PATH                          # any dataset: layout and task detected
    tumorbench compare --data PATH --budget 30              # planned to finish in 30 minutes
    tumorbench compare --data PATH --dry-run                # the plan and its estimate only; Ray not started
    ray job submit --working-dir . -- python experiments/compare.py --preset smoke
    tumorbench compare --preset smoke --storage s3://BUCKET/runs/smoke
    ray submit --tmux cluster.yaml experiments/compare.py -- --study brats --preset full --gpus-per-trial 2 \\
        --data /home/ray/data/brats --storage s3://BUCKET/runs/brats-full --out /home/ray/results/brats-full

Connects to ``--address`` / ``RAY_ADDRESS`` when given, else to the cluster ``ray start`` made on
this machine (how ``ray submit`` runs it on the head), and starts a local Ray otherwise.
Results (leaderboard, folds, predictions, statistics, manifest, report.html and the
winning model package under ``best/<task>/``) go to ``--out``. Trial records and every
checkpoint go to ``--storage`` (default ``$TUMORBENCH_STORAGE``, else ``--out``), which also
gets a copy of the results: on a cluster of several nodes it must be object storage
(``s3://``, ``gs://``) or a folder on a mount every node shares. Shipped studies read real data
from ``$TUMORBENCH_SHARED_DATA`` (default: ``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

from tumorbench.data.catalog import LAYOUTS


def generic_study(
    data: str, preset: str, layout: str = "auto", task: str | None = None, foreground: tuple[int, ...] | None = None
):
    """A sensible comparison for a dataset nobody configured: layout, 2D/3D and task detected (study/generic.py)."""
    from tumorbench.study.generic import generic_study as detect_and_build

    return detect_and_build(data, preset, layout, task, foreground)


def _labels(text: str) -> tuple[int, ...]:
    try:
        labels = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: mask labels as integers, e.g. 2 or 2,3") from None
    if not labels or min(labels) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: mask labels >= 1, e.g. 2 or 2,3")
    return labels


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Which model detects these tumors best, by how much, and is the difference real?",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--study", default=None, help="synthetic (default without --data), lgg, brain_yes_no, lidc, brats"
    )
    parser.add_argument("--preset", default="default", choices=["smoke", "default", "full"])
    parser.add_argument("--data", default=None, help="Dataset root (overrides the study's; alone: generic study)")
    parser.add_argument(
        "--layout",
        default="auto",
        choices=("auto", *LAYOUTS),
        help="How --data is laid out (default: detected; `tumorbench data check PATH` says which and why)",
    )
    parser.add_argument(
        "--task",
        default=None,
        choices=("classification", "segmentation"),
        help="With --data: what to compare models on when the data has both class labels and masks "
        "(default: classification)",
    )
    parser.add_argument(
        "--foreground-labels",
        type=_labels,
        default=None,
        metavar="LABELS",
        help="With --data, segmentation: the mask labels to segment, e.g. 2 for the tumour of liver (1) + tumour "
        "(2) masks; the others are background (default: the labels dataset.json names as lesions, else all)",
    )
    parser.add_argument("--out", default=None, help="Results folder (default: results/<study>-<preset>)")
    parser.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster (default: the one `ray start` made here, else a new local one)",
    )
    parser.add_argument("--resume", action="store_true", help="Continue an interrupted study; finished trials stay")
    parser.add_argument("--seed", type=int, default=None, help="Override the study's seed")
    parser.add_argument(
        "--require-deid",
        action="store_true",
        help="Refuse DICOM data still carrying identifying tags (run `tumorbench data deid` first)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="MINUTES",
        help="Time budget: the planner sizes the study to it (default: the preset's cap, "
        "55 min for default) and the searches stop on time",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="Print the plan (fingerprint, sizes, estimate) and exit without starting Ray",
    )
    parser.add_argument(
        "--test",
        default=None,
        help="A locked test set (same layout): final models retrained on every training patient are scored on it once",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Checkpoints, trial records and a copy of the results: a folder every node sees or "
        "s3://bucket/prefix, gs://bucket/prefix (default: $TUMORBENCH_STORAGE, else --out)",
    )
    group = parser.add_argument_group("resources per trial (default: sized from the cluster as it is)")
    group.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPUs each trial's workers hold together; asks an autoscaler for GPU nodes (0: CPU only)",
    )
    group.add_argument("--cpus-per-trial", type=float, default=None, help="CPUs each trial's workers hold together")
    group.add_argument("--concurrent-trials", type=int, default=None, help="Trials running at once")
    group.add_argument(
        "--gpu-wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="How long to wait for GPU nodes to join (default: 900 with an autoscaler, 0 without)",
    )
    return parser.parse_args(argv)


def _capacity(args: argparse.Namespace):
    """A named cluster's capacity (it is joined: the study runs there anyway), else this machine's."""
    from tumorbench.study.capacity import Capacity

    if args.address and not args.dry_run:
        from tumorbench.training.trainer import ensure_ray

        ensure_ray(args.address)
        return Capacity.from_ray()
    return Capacity.local()


def resources_from(args: argparse.Namespace):
    """The per-trial ``Resources`` the options ask for (unset: sized from the cluster)."""
    from tumorbench.tuning.resources import Resources

    return Resources(
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial,
        concurrent_trials=args.concurrent_trials,
        gpu_wait_s=args.gpu_wait,
    )


def build_study(args: argparse.Namespace):
    """The study the arguments name (a shipped one, or the generic study of ``--data``)."""
    from tumorbench.study import presets

    if args.study is None and args.data:
        study = generic_study(args.data, args.preset, args.layout, args.task, args.foreground_labels)
    else:
        name = args.study or "synthetic"
        for given, option in ((args.task, "--task"), (args.foreground_labels, "--foreground-labels")):
            if given is not None:
                raise SystemExit(f"error: {option} applies to --data without --study (study {name!r} has its own)")
        if name not in presets.STUDIES:
            raise SystemExit(f"error: unknown study {name!r} (choose from {', '.join(presets.STUDIES)})")
        study = presets.STUDIES[name](args.preset)
        if args.data:
            study = replace(study, data=str(Path(args.data).resolve()), synthetic=None)
        if args.layout != "auto":
            study = replace(study, layout=args.layout)
    if args.seed is not None:
        study = replace(study, seed=args.seed)
    if args.test:
        study = replace(study, test=str(Path(args.test).resolve()))
    return replace(study, require_deid=True) if args.require_deid else study


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run a comparison study; 0 on success, 2 on a tumorbench error (printed on one line)."""
    args = parse_args(argv, prog)
    from tumorbench.errors import TumorbenchError
    from tumorbench.study.runner import plan_study, run_study

    try:
        study = build_study(args)
        out = Path(args.out or f"results/{study.name}-{args.preset}")
        if args.budget is not None and args.budget <= 0:
            raise SystemExit("error: --budget must be a positive number of minutes")
        plan, fingerprint, planned, test = plan_study(
            study, out, budget_minutes=args.budget, preset=args.preset, capacity=_capacity(args)
        )
        if args.dry_run:
            from tumorbench.data.fingerprint import format_fingerprint

            print(format_fingerprint(fingerprint))
            print(plan.format(), flush=True)
            return 0
        summary = run_study(
            planned,
            out,
            preset=args.preset,
            resume=args.resume,
            address=args.address,
            plan=plan,
            fingerprint=fingerprint,
            storage_uri=args.storage,
            resources=resources_from(args),
            test=test,
        )
    except TumorbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[tumorbench] results in {out.resolve()} (open report.html); storage {summary['storage']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
