"""``lgg``: case folders of 2D slices, each with its ``_mask`` (Buda et al.'s LGG set)."""

from __future__ import annotations

from pathlib import Path

from tumorbench.data.layouts.common import Problems, is_image, row, visible_dirs

LGG_CHANNELS = ("pre-contrast", "flair", "post-contrast")


def _lgg_patient(folder_name: str) -> str:
    # Folders are TCGA_<site>_<patient>_<scan date>; one patient may have several dates.
    parts = folder_name.split("_")
    return "_".join(parts[:3]) if len(parts) >= 4 and parts[0] == "TCGA" else folder_name


def scan(root: Path, problems: Problems, **_) -> list[dict]:
    rows = []
    for folder in visible_dirs(root):
        files = {p.name: p for p in folder.iterdir() if is_image(p)}
        for _, path in sorted(files.items()):
            if path.stem.endswith("_mask"):
                if path.name.replace("_mask", "") not in files:
                    problems.add(path, "mask without its image")
                continue
            mask = folder / f"{path.stem}_mask{path.suffix}"
            if not mask.exists():
                problems.add(path, f"slice without its mask (expected {mask.name})")
                continue
            index = path.stem.rsplit("_", 1)[-1]
            # LGG names slices after their folder; other case folders may all hold a "slice_1"
            case_id = path.stem if path.stem.startswith(f"{folder.name}_") else f"{folder.name}/{path.stem}"
            rows.append(
                row(
                    case_id,
                    _lgg_patient(folder.name),
                    "lgg",
                    [path],
                    LGG_CHANNELS,
                    mask=mask,
                    slice_index=int(index) if index.isdigit() else -1,
                    study=folder.name,
                )
            )
    return rows
