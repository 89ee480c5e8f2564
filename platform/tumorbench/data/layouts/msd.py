"""``msd``: a Medical Segmentation Decathlon task, the cases its ``dataset.json`` lists."""

from __future__ import annotations

import json
from pathlib import Path

from tumorbench.data.layouts.common import Problems, row
from tumorbench.errors import DataError


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    spec_path = root / "dataset.json"
    try:
        spec = json.loads(spec_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(spec_path, f"cannot read the Decathlon dataset description: {exc}") from exc
    modalities = spec.get("modality") or {"0": "image"}
    channels = tuple(modalities[k] for k in sorted(modalities, key=int))
    entries = [(e, True) for e in spec.get("training", [])]
    entries += [({"image": e} if isinstance(e, str) else e, False) for e in spec.get("test", [])]
    rows = []
    for entry, labelled in entries:
        image = (root / entry["image"]).resolve()
        if not image.exists():
            problems.add(image, "listed in dataset.json but missing")
            continue
        mask = (root / entry["label"]).resolve() if labelled and entry.get("label") else None
        if mask is not None and not mask.exists():
            problems.add(mask, f"label of {image.name} listed in dataset.json but missing")
            mask = None
        case_id = image.name.split(".")[0]
        rows.append(row(case_id, case_id, "msd", [image], channels, mask=mask))
    return rows
