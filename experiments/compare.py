"""tumorbench's main job: which model detects these tumors best, by how much, and is the difference real?

    python experiments/compare.py                                  # embedded synthetic study, local Ray
    python experiments/compare.py --study lgg --preset default
    python experiments/compare.py --data PATH                      # any dataset: layout and task detected
    ray submit cluster.yaml experiments/compare.py -- --preset full --study brats
    ray job submit --working-dir . -- python experiments/compare.py --preset smoke

Connects to ``--address`` / ``RAY_ADDRESS`` when given, else to the cluster ``ray start`` made on
this machine (how ``ray submit`` runs it on the head), and starts a local Ray otherwise.
Results (leaderboard, folds, predictions, statistics, manifest, report.html and the
winning model package under ``best/<task>/``) go to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _import_studies():
    """``studies.py`` beside this file, or in the installed repository (``ray submit`` copies this file alone)."""
    here = Path(__file__).resolve().parent
    candidates = [here]
    try:
        import tumorbench

        candidates.append(Path(tumorbench.__file__).resolve().parents[2] / "experiments")
    except ImportError:
        pass
    for folder in candidates:
        if (folder / "studies.py").exists():
            sys.path.insert(0, str(folder))
            import studies

            return studies
    raise SystemExit("error: experiments/studies.py not found beside compare.py or in the installed repository")


def generic_study(data: str, preset: str):
    """A sensible comparison for a dataset nobody configured: layout and task are detected."""
    from tumorbench.data.catalog import scan

    studies = _import_studies()
    frame = scan(data)
    layout = frame.attrs["layout"]
    task = "classification" if frame["label"].notna().any() else "segmentation"
    print(f"[tumorbench] {data}: layout {layout} ({frame.attrs['layout_evidence']}), task {task}", flush=True)
    template = studies.brain_yes_no(preset) if task == "classification" else (
        studies.synthetic(preset) if layout in ("brats", "msd", "dicom") else studies.lgg(preset))
    from dataclasses import replace

    return replace(template, name=f"generic-{Path(data).name}", data=str(Path(data).resolve()), layout=layout,
                   synthetic=None)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--study", default=None, help="synthetic (default without --data), lgg, brain_yes_no, "
                                                      "lidc, brats")
    parser.add_argument("--preset", default="default", choices=["smoke", "default", "full"])
    parser.add_argument("--data", default=None, help="Dataset root (overrides the study's; alone: generic study)")
    parser.add_argument("--out", default=None, help="Results folder (default: results/<study>-<preset>)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), help="Ray cluster (default: the one `ray start` made here, else a new local one)")
    parser.add_argument("--resume", action="store_true", help="Continue an interrupted study; finished trials stay")
    parser.add_argument("--seed", type=int, default=None, help="Override the study's seed")
    parser.add_argument("--require-deid", action="store_true",
                        help="Refuse DICOM data still carrying identifying tags (run `tumorbench data deid` first)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from dataclasses import replace

    from tumorbench.errors import TumorbenchError
    from tumorbench.study.runner import run_study

    try:
        if args.study is None and args.data:
            study = generic_study(args.data, args.preset)
        else:
            studies = _import_studies()
            name = args.study or "synthetic"
            if name not in studies.STUDIES:
                raise SystemExit(f"error: unknown study {name!r} (choose from {', '.join(studies.STUDIES)})")
            study = studies.STUDIES[name](args.preset)
            if args.data:
                study = replace(study, data=str(Path(args.data).resolve()), synthetic=None)
        if args.seed is not None:
            study = replace(study, seed=args.seed)
        if args.require_deid:
            study = replace(study, require_deid=True)
        out = Path(args.out or f"results/{study.name}-{args.preset}")
        run_study(study, out, preset=args.preset, resume=args.resume, address=args.address)
    except TumorbenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"[tumorbench] results in {out.resolve()} (open report.html)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
