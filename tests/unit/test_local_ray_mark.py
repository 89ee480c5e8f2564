"""training.trainer's mark of a Ray started here: set for a local Ray, passed to its workers, dropped on a join."""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

from tumorbench.training import trainer  # noqa: E402


@pytest.fixture()
def fake_ray(monkeypatch):
    """``ray.init`` recorded instead of run; the environment restored after the test."""
    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    # what ensure_ray sets in this process, so that it is undone after (setenv records a missing name, delenv does not)
    touched = ("RAY_USAGE_STATS_ENABLED", "RAY_worker_niceness", trainer.PREEMPTION_WATCHER_ENV)
    for name in (trainer.LOCAL_RAY_ENV, "RAY_prestart_worker_first_driver", *touched):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    return calls


def test_a_local_ray_marks_this_process_and_its_workers(fake_ray, monkeypatch):
    monkeypatch.setattr("tumorbench.raycompat.cluster_address", lambda address: None)
    trainer.ensure_ray(num_cpus=2)
    assert fake_ray[0]["address"] == "local"
    assert fake_ray[0]["runtime_env"]["env_vars"][trainer.LOCAL_RAY_ENV] == "1"
    assert trainer.on_local_ray()
    assert trainer.os.environ["RAY_prestart_worker_first_driver"] == "0"


def test_joining_a_cluster_drops_the_mark_a_local_ray_left(fake_ray, monkeypatch):
    monkeypatch.setenv(trainer.LOCAL_RAY_ENV, "1")  # this process had started a local Ray before
    trainer.ensure_ray("10.0.0.7:6379")
    assert fake_ray[0]["address"] == "10.0.0.7:6379"
    assert trainer.LOCAL_RAY_ENV not in fake_ray[0]["runtime_env"]["env_vars"]
    assert not trainer.on_local_ray()
    assert trainer.LOCAL_RAY_ENV not in trainer.job_env()
