"""The search driver frees a placement group a stopped trial's Train run left reserved (tuning.leaks)."""

from __future__ import annotations

import time

import pytest

from tumorbench.tuning.leaks import Sweeper, orphaned_groups, sweeping

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


def test_what_a_search_leaves_is_freed_as_it_ends_and_older_groups_are_kept(ray_session):
    """A trial's controller killed while it restarts its workers asks for a group as it dies: the search's
    last stopped trial left one after the sweeper's last pass, and the next search waited for its CPUs."""
    ray = ray_session
    from ray.util import placement_group, placement_group_table

    older = placement_group([{"CPU": 0.2}])  # the job's before the search: not the search's to free
    ray.get(older.ready())
    leaked = None
    try:
        with sweeping({"CPU": 0.1}, interval_s=600.0) as sweeper:  # no pass while the block runs
            leaked = placement_group([{"CPU": 0.5}])
            ray.get(leaked.ready())
        # (and any group a dead Train controller of an earlier test left: the session's Ray is shared)
        assert leaked.id.hex() in sweeper.removed and older.id.hex() not in sweeper.removed
        assert placement_group_table(leaked)["state"] == "REMOVED"
        assert placement_group_table(older)["state"] == "CREATED"
    finally:
        _free(older, leaked)  # a failed assertion must not leave the next tests' trials without CPUs


def test_only_dead_controllers_groups_are_settled_while_a_train_run_of_the_search_goes_on(ray_session, monkeypatch):
    ray = ray_session
    from ray.util import placement_group, placement_group_table

    from tumorbench.tuning import leaks

    group = placement_group([{"CPU": 0.5}])  # a run started meanwhile: its group is empty for a moment
    ray.get(group.ready())
    try:
        monkeypatch.setattr(leaks, "_train_controllers", lambda: {"a controller of this search"})
        freed = Sweeper({"CPU": 0.1}).settle(set(), set(), timeout_s=0.2, poll_s=0.05)
        assert group.id.hex() not in freed  # only dead controllers' groups, if an earlier test left any
        assert placement_group_table(group)["state"] == "CREATED"
    finally:
        _free(group)


def test_a_dead_controllers_group_is_freed_at_the_next_pass_without_grace(ray_session):
    """The GCS keeps a group whose creating actor died until the job ends: a leak for certain, no grace needed."""
    ray = ray_session
    from ray.util import placement_group, placement_group_table
    from ray.util.placement_group import PlacementGroup

    from tumorbench.raycompat import groups_of_dead_actors

    @ray.remote(num_cpus=0)
    class Controller:  # as Train's: it makes its workers' group
        def make(self) -> str:
            group = placement_group([{"CPU": 0.5}])
            ray.get(group.ready())
            return group.id.hex()

    drivers = placement_group([{"CPU": 0.2}])  # the driver's own: no creating actor, never listed
    controller = Controller.remote()
    made = ray.get(controller.make.remote())
    job = ray.get_runtime_context().get_job_id()
    try:
        assert made not in groups_of_dead_actors(job)  # its creator lives
        ray.kill(controller)
        deadline = time.monotonic() + 30
        while made not in groups_of_dead_actors(job) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert made in groups_of_dead_actors(job) and drivers.id.hex() not in groups_of_dead_actors(job)
        assert made in Sweeper({"CPU": 0.1}, grace_s=1e9).sweep()
        assert placement_group_table(PlacementGroup(ray.PlacementGroupID.from_hex(made)))["state"] == "REMOVED"
        assert placement_group_table(drivers)["state"] == "CREATED"
    finally:
        _free(drivers)


def _free(*groups) -> None:
    from ray.util import placement_group_table, remove_placement_group

    for group in groups:
        if group is not None and placement_group_table(group).get("state") not in (None, "REMOVED"):
            remove_placement_group(group)
