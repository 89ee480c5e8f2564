"""Shared fixtures: the real data folder (skipped when absent) and one Ray per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("TUMORBENCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not present")
    return path


@pytest.fixture(scope="session")
def lgg_root() -> Path:
    """The LGG slice dataset (39 patients)."""
    return _shared("lgg")


@pytest.fixture(scope="session")
def brats_root() -> Path:
    """Three BraTS volumes in 2018, 2021 and 2023 naming."""
    return _shared("brats")


@pytest.fixture(scope="session")
def yes_no_root() -> Path:
    """The brain MRI yes/no class-folder dataset (253 images, with duplicates)."""
    return _shared("brain_mri_yes_no")


@pytest.fixture(scope="session")
def lidc_root() -> Path:
    """LIDC nodule crops with malignancy ratings."""
    return _shared("lidc_nodules")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for every test marked ``ray`` in the session."""
    ray = pytest.importorskip("ray")
    from tumorbench.serving.runner import use_throughput_mode
    from tumorbench.training.trainer import job_env, local_ray_env

    local_ray_env()  # as tumorbench's ensure_ray: workers not starved by load, no preemption watcher

    use_throughput_mode()  # Serve as `tumorbench serve` runs it: direct ingress beside the proxy
    if not ray.is_initialized():
        # "local": never join a cluster `ray start` left on this machine.
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=True,  # the State API Train's placement-group cleaner needs (tumorbench's ensure_ray)
            log_to_driver=False,
            object_store_memory=512 * 1024**2,
            runtime_env={"env_vars": job_env()},  # as ensure_ray: Train collects reports every 0.2 s, not 2 s
        )
    yield ray
    ray.shutdown()


def load_script(relative: str):
    """A repository script (``scripts/...``, ``bench/...``: not importable packages) loaded as a module."""
    import importlib.util

    path = REPO_ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as the importlib recipe does: dataclasses look their module up there
    sys.path.insert(0, str(path.parent))  # as ``python path`` does: a script imports the modules beside it
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def write_busi_folders(root: Path) -> None:
    """BUSI's layout: class folders, each image with its ``_mask`` beside it, ``_mask_1`` for a second lesion."""
    from PIL import Image

    def png(path: Path, value: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), value).save(path)

    for cls, n in (("benign", 3), ("malignant", 2), ("normal", 2)):
        for i in range(1, n + 1):
            png(root / cls / f"{cls} ({i}).png", 40 * i)
            png(root / cls / f"{cls} ({i})_mask.png", 0 if cls == "normal" else 255)
    png(root / "benign" / "benign (2)_mask_1.png", 255)


def write_blob_folders(root: Path, n: int = 12) -> None:
    """A tiny class-folder dataset: 'yes' images hold a bright disc, 'no' images are noise only."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    for cls in ("no", "yes"):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            image = rng.normal(60, 10, (32, 32))
            if cls == "yes":
                cy, cx = rng.integers(10, 22, 2)
                image[(yy - cy) ** 2 + (xx - cx) ** 2 < 25] += 120
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / cls / f"{cls}{i}.png")


def tiny_search_config(data: Path, out: Path):
    """The cheapest k-fold trial: ``resnet18_tiny`` on :func:`write_blob_folders` data, 2 folds x 1 epoch."""
    from tumorbench.training.config import TrainConfig
    from tumorbench.transforms import AugmentConfig

    return TrainConfig(
        task="classification",
        model="resnet18_tiny",
        data=str(data),
        out=str(out),
        n_folds=2,
        epochs=1,
        batch_size=8,
        warmup_epochs=0,
        augment=AugmentConfig(),
        max_failures=0,
    )


@pytest.fixture()
def local_s3(monkeypatch):
    """A moto S3 server on loopback with one bucket; its client settings are in this process's environment.

    Yields (server, ``s3://bucket`` URI).
    """
    from tests.object_store import start_local_s3, stop_local_s3

    s3 = start_local_s3()
    try:
        for key, value in s3.env.items():
            monkeypatch.setenv(key, value)
        yield s3, s3.make_bucket("tumorbench-test")
    finally:
        stop_local_s3(s3)
