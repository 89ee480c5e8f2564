"""Explanation scores of one trained fold model on its out-of-fold patients, one row per patient.

Grad-CAM of the fold's checkpoint (a model package from ``tumorbench train``) on the validation
patients of that fold (the split file the run used), each by its slice with the most tumor:
pointing game, energy in tumor, deletion / insertion AUC, then the randomisation check
(Adebayo et al. 2018; three re-initialised copies) over those cases.

    python bench/explain_fold.py --package runs/lgg/train/checkpoint_... --data ../shared/data/lgg \\
        --split-file runs/lgg/splits.json --fold 0 --cases 8 --out runs/lgg_explain
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from tumorbench.data.catalog import scan
from tumorbench.explain.study import explanation_summary, write_explanations
from tumorbench.package import read_manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--layout", default="auto")
    parser.add_argument("--split-file", type=Path, required=True)
    parser.add_argument("--fold", type=int, default=None, help="default: the fold the package was trained for")
    parser.add_argument("--cases", type=int, default=8, help="patients (segmentation) / cases explained")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    manifest = read_manifest(args.package)
    frame = scan(args.data, args.layout)
    doc = json.loads(args.split_file.read_text())
    args.fold = _held_out_fold(manifest.split or {}, doc, args.fold)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    records = {manifest.name: [SimpleNamespace(fold=args.fold, checkpoint=str(args.package))]}
    table = write_explanations(
        args.out, manifest.task, records, frame, doc, [manifest.name], args.cases, manifest.class_names
    )
    seconds = time.perf_counter() - start
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        # Patients are numbered, not named: identifiers stay in explanations.csv, out of logs.
        shown = table.drop(columns=["model", "method", "case_id", "patient_id"])
        shown.insert(1, "patient", [f"#{k}" for k in range(1, len(shown) + 1)])
        print(shown.round(3).to_string(index=False))
        print(explanation_summary(table).round(3).to_string(index=False))
    print(
        f"{len(table)} cases explained in {seconds:.1f} s; wrote {args.out / 'explanations.csv'} and "
        f"{args.out / 'explanations'}"
    )


def _held_out_fold(trained: dict, doc: dict, fold: int | None) -> int:
    """The fold whose patients the package never trained on: explaining another fold scores training cases."""
    if trained.get("hash") and trained["hash"] != doc.get("hash"):
        raise SystemExit(f"error: the package was trained on another split (hash {trained['hash'][:12]}...)")
    if fold is None:
        if trained.get("fold") is None:
            raise SystemExit("error: the package does not record its fold; give --fold")
        return int(trained["fold"])
    if trained.get("fold") is not None and int(trained["fold"]) != fold:
        raise SystemExit(f"error: the package is fold {trained['fold']}'s model; fold {fold}'s patients trained it")
    return fold


if __name__ == "__main__":
    main()
