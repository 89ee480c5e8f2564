"""The search driver frees a placement group a stopped trial's Train run left reserved (tuning.leaks)."""

from __future__ import annotations

import pytest

from tumorbench.tuning.leaks import Sweeper, orphaned_groups

pytestmark = pytest.mark.ray


def test_an_empty_worker_group_is_freed_after_the_grace_and_nothing_else(ray_session):
    ray = ray_session
    from ray.util import placement_group, placement_group_table, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    leaked = placement_group([{"CPU": 0.5}])  # what the abort race leaves: a worker group, no workers
    staged = placement_group([{"CPU": 0.1}])  # a trial's own group before its actor starts: Tune's
    busy = placement_group([{"CPU": 0.5}])  # a running worker group
    ray.get([leaked.ready(), staged.ready(), busy.ready()])

    @ray.remote(num_cpus=0.5)
    class Worker:
        def ping(self) -> int:
            return 1

    worker = Worker.options(scheduling_strategy=PlacementGroupSchedulingStrategy(busy)).remote()
    assert ray.get(worker.ping.remote()) == 1
    try:
        assert leaked.id.hex() in orphaned_groups({"CPU": 0.1})
        assert {staged.id.hex(), busy.id.hex()}.isdisjoint(orphaned_groups({"CPU": 0.1}))
        sweeper = Sweeper({"CPU": 0.1}, grace_s=10.0)
        assert sweeper.sweep(now=100.0) == []  # first sighting: within the grace
        assert sweeper.sweep(now=111.0) == [leaked.id.hex()]
        states = {name: placement_group_table(g)["state"] for name, g in (("l", leaked), ("s", staged), ("b", busy))}
        assert states == {"l": "REMOVED", "s": "CREATED", "b": "CREATED"}
        assert ray.get(worker.ping.remote()) == 1
    finally:
        ray.kill(worker)
        for group in (staged, busy):
            remove_placement_group(group)
