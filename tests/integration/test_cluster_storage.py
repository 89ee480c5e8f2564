"""Studies on storage other than the driver's disk: S3 (a moto server on loopback) and GPU requests.

The longer cluster checks (a whole smoke study on S3 and its resume, a second node with
a private results folder, a declared GPU, a node lost mid-trial) are in
``scripts/cluster_checks.py``; their output is in the issue's closing note.
"""

from __future__ import annotations

import time

import pytest

from conftest import tiny_search_config, write_blob_folders
from tumorbench import storage
from tumorbench.training.config import TrainConfig, TrainConfigError
from tumorbench.tuning.resources import Resources
from tumorbench.tuning.search import run_search, trial_rows
from tumorbench.tuning.trial import read_state

pytestmark = [pytest.mark.ray, pytest.mark.slow]
tune = pytest.importorskip("ray.tune")


@pytest.fixture()
def ray_with_s3(local_s3):
    """Ray started by ``ensure_ray`` with the S3 endpoint in the environment (it goes to the workers).

    The session's Ray was started without it, so it is replaced for this test and restored after.
    """
    import ray

    from tumorbench.training.trainer import ensure_ray, job_env

    ray.shutdown()
    ensure_ray(address="local", num_cpus=2)
    env = ray.get_runtime_context().runtime_env["env_vars"]
    assert env["AWS_ENDPOINT_URL"] == local_s3[0].endpoint
    assert env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.2"  # Train collects reports every 0.2 s, not every 2 s
    yield local_s3
    ray.shutdown()
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=True,
        log_to_driver=False,
        object_store_memory=512 * 1024**2,
        runtime_env={"env_vars": job_env()},
    )


def _base(tmp_path) -> TrainConfig:
    data = tmp_path / "data"
    write_blob_folders(data, n=8)
    return tiny_search_config(data, tmp_path / "unused")


def test_search_on_s3_keeps_checkpoints_there_and_resumes_from_them(ray_session, ray_with_s3, tmp_path):
    _, bucket = ray_with_s3
    base, root = _base(tmp_path), f"{bucket}/searches"
    kwargs = {
        "searcher": "random",
        "scheduler": "none",
        "num_samples": 1,
        "storage_path": root,
        "name": "s3",
        "workdir": tmp_path / "work",
        "verbose": 0,
    }
    grid = run_search(base, {"lr": tune.choice([3e-3])}, **kwargs)
    assert not grid.errors
    [row] = trial_rows(grid, "auc", 2)
    assert row["status"] == "done" and row["checkpoint"].startswith(f"{bucket}/searches/s3/{row['trial']}/")
    files = storage.listing(f"{root}/s3")
    for fold in (0, 1):
        prefix = f"{row['trial']}/fold_{fold}/"
        assert {f"{prefix}best/model.pt", f"{prefix}best/val_predictions.json", f"{prefix}fold_result.json"} <= set(
            files
        )
        assert f"{prefix}history.csv" in files, "the fold's history is copied next to its checkpoints"
        # nested selection: the outer fold's predictions and the inner-chosen weights, read back from S3
        assert {f"{prefix}outer/predictions.json", f"{prefix}outer/chosen_weights.pt"} <= set(files)
    assert not list((tmp_path / "work").rglob("outer")), "nothing of the outer folds is kept on the local disk"
    # one Train run for both folds, on S3: it keeps its latest checkpoint only, to resume from
    assert f"{row['trial']}/train/fold_1_epoch_0000/training_state.pt" in files
    assert not [name for name in files if "fold_0_epoch_" in name]
    assert f"{row['trial']}/result.json" in files and "tuner.pkl" in files
    # The trial checkpoint read back from S3: both folds, their best checkpoints on S3 too.
    folds, oof = read_state(row["checkpoint"])
    assert [f.fold for f in folds] == [0, 1] and all(f.checkpoint.startswith(bucket) for f in folds)
    assert {r["fold"] for r in oof} == {0, 1} and len(oof) == 16
    before = {name: storage.read_text(f"{root}/s3/{name}") for name in files if name.endswith("history.csv")}

    started = time.perf_counter()
    again = run_search(base, {"lr": tune.choice([3e-3])}, **kwargs, resume=True)
    [same] = trial_rows(again, "auc", 2)
    assert same["trial"] == row["trial"] and same["mean"] == pytest.approx(row["mean"])
    # Nothing finished is trained again: the histories on S3 are unchanged.
    assert {name: storage.read_text(f"{root}/s3/{name}") for name in before} == before
    assert time.perf_counter() - started < 60


def test_gpu_request_on_a_cluster_that_cannot_get_gpus_is_refused(ray_session, tmp_path):
    started = time.perf_counter()
    expected = r"needs 1 CPU \+ 1 GPU, but no node .* \(at most 2 CPU \+ 0 GPU\) and no autoscaler runs here"
    with pytest.raises(TrainConfigError, match=expected) as error:
        run_search(
            _base(tmp_path),
            {},
            storage_path=tmp_path / "searches",
            name="gpu",
            verbose=0,
            resources=Resources(gpus_per_trial=1),
        )
    assert "--gpus-per-trial 0" in str(error.value)
    assert time.perf_counter() - started < 30  # refused, not left pending
