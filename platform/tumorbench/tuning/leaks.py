"""Placement groups left behind by a Train run that Tune stopped: found and removed by the search's driver.

Ray Train V2 (Ray 2.60) aborts a run by first stopping its ``PlacementGroupCleaner`` and then
removing the workers' placement group. When Tune ends the trial's process in between (ASHA or
the budget stopping a trial; likelier on a busy machine), nothing removes the group: its CPUs
stay reserved and the next trial's workers wait for them for ever. Seen here: a 24-trial ASHA
search (``bench/tune_efficiency.py``) stalled at its third trial behind the 1.9 CPUs of the
second, stopped one. The race is known upstream (review of ray-project/ray#65447). tumorbench no longer
starts that cleaner (:func:`tumorbench.raycompat.torch_trainer`): every search sweeps, and this also frees
the group of a run whose trial process died.

:func:`sweeping` sweeps in a thread beside ``Tuner.fit``. A group whose creating actor (a Train
controller) has died is a leak for certain and is freed at the next pass
(:func:`tumorbench.raycompat.groups_of_dead_actors`). Otherwise a group is an orphan
(:func:`orphaned_groups`) when it belongs to this job, is created, holds no actor (alive, pending or
restarting) and is not a trial's own group (Tune stages those before their actor starts): Train starts
a run's workers as soon as their group exists, so one still empty after ``grace_s`` is a leak.

When ``Tuner.fit`` returns, :meth:`Sweeper.settle` frees at once what the search's last stopped trial
left: a controller killed while it restarts its workers asks for a new group as it dies. Seen here: ASHA
stopped a search's last trial, the group appeared 60 ms later, and the next search's first trial waited
for its CPUs for 8 minutes, retrying every 60 s; the search's sweeper had ended with it.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

SWEEP_INTERVAL_S = 5.0
ORPHAN_GRACE_S = 20.0
SETTLE_TIMEOUT_S = 30.0  # for the stopped trials' Train controllers to exit (Ray kills them asynchronously)
_LIMIT = 10_000  # the State API's page: far more groups and actors than a search has
# Every state of a group that still holds or waits for resources (raycompat.groups_of_dead_actors lists these)
LIVE_STATES = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")


def _resources(bundle: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in (bundle.get("unit_resources") or {}).items() if float(v) > 0}


def _job() -> tuple[str, str]:
    """The GCS address and this job's id."""
    import ray

    context = ray.get_runtime_context()
    return context.gcs_address, context.get_job_id()


def _live_actors(**equal: str) -> list:
    from ray.util.state import list_actors

    address, _ = _job()
    filters = [("state", "!=", "DEAD"), *((key, "=", value) for key, value in equal.items())]
    return list_actors(address=address, filters=filters, detail=True, limit=_LIMIT)


def _train_controllers() -> set[str]:
    """Ids of this job's live Train controllers."""
    return {actor.actor_id for actor in _live_actors(job_id=_job()[1], class_name="TrainController")}


def _groups(job_id: str | None = None) -> list:
    from ray.util.state import list_placement_groups

    address, own_job = _job()
    filters = [("creator_job_id", "=", job_id or own_job)]
    return list_placement_groups(address=address, filters=filters, detail=True, limit=_LIMIT)


def _dead_creators() -> list[str]:
    """:func:`tumorbench.raycompat.groups_of_dead_actors` of this job; none when Ray's table cannot be read
    (the empty-for-``grace_s`` rule still frees them)."""
    from tumorbench.raycompat import groups_of_dead_actors

    try:
        return groups_of_dead_actors(_job()[1])
    except Exception:  # noqa: BLE001 - a private table (a Ray upgrade may move it) or a GCS hiccup
        return []


def orphaned_groups(
    trial_bundle: dict[str, float], job_id: str | None = None, states: tuple[str, ...] = ("CREATED",)
) -> set[str]:
    """Ids of this job's placement groups in ``states`` that no live actor uses and that are not trials' own."""
    groups = _groups(job_id)
    used = {actor.placement_group_id for actor in _live_actors() if actor.placement_group_id}
    trial = {k: float(v) for k, v in trial_bundle.items() if float(v) > 0}
    return {
        group.placement_group_id
        for group in groups
        if group.state in states
        and group.placement_group_id not in used
        and not (len(group.bundles or []) == 1 and _resources(group.bundles[0]) == trial)
    }


class Sweeper:
    """Removes a group once it has been an orphan for ``grace_s`` (two sightings at least)."""

    def __init__(self, trial_bundle: dict[str, float], grace_s: float = ORPHAN_GRACE_S) -> None:
        self.trial_bundle, self.grace_s = dict(trial_bundle), grace_s
        self.first_seen: dict[str, float] = {}
        self.removed: list[str] = []

    def sweep(self, now: float | None = None) -> list[str]:
        """One pass: the ids removed now (a dead controller's groups at once, other orphans after the grace)."""
        from ray.util.state.exception import RayStateApiException

        now = time.monotonic() if now is None else now
        removed = self._remove(_dead_creators())
        try:
            orphans = orphaned_groups(self.trial_bundle) - set(removed)
        except RayStateApiException:  # the dashboard busy or restarting: next pass
            return removed
        self.first_seen = {pg: self.first_seen.get(pg, now) for pg in orphans}
        due = [pg_id for pg_id, since in self.first_seen.items() if now - since >= self.grace_s]
        for pg_id in due:
            del self.first_seen[pg_id]
        return removed + self._remove(due)

    def settle(
        self, before: set[str], controllers: set[str], timeout_s: float = SETTLE_TIMEOUT_S, poll_s: float = 1.0
    ) -> list[str]:
        """After the search: once its Train controllers have exited, free at once the groups they left.

        Nothing of the search runs any more, so no grace; a group still pending is freed too (its creator
        is gone and it would hold its CPUs once placed). What existed before the search is not its own:
        groups in ``before`` are left, and controllers in ``controllers`` are not waited for (a cut run's
        controller can outlive its trial). If one of the search's controllers still lives after
        ``timeout_s``, only the groups of dead controllers are freed, a leak for certain.
        """
        deadline = time.monotonic() + timeout_s
        while _train_controllers() - controllers:
            if time.monotonic() > deadline:
                return self._remove(_dead_creators())
            time.sleep(poll_s)
        time.sleep(poll_s)  # a group asked for just before its controller died: registered by now
        left = orphaned_groups(self.trial_bundle, states=("CREATED", "PENDING")) - before
        return self._remove(sorted(left | set(_dead_creators())))

    def _remove(self, pg_ids: list[str]) -> list[str]:
        from ray import PlacementGroupID
        from ray.util import placement_group_table, remove_placement_group
        from ray.util.placement_group import PlacementGroup

        removed = []
        for pg_id in pg_ids:
            group = PlacementGroup(PlacementGroupID.from_hex(pg_id))
            if placement_group_table(group).get("state") in LIVE_STATES:
                remove_placement_group(group)
                removed.append(pg_id)
        self.removed += removed
        return removed


def _announce(pg_ids: list[str]) -> None:
    for pg_id in pg_ids:
        print(
            f"[tumorbench] freed placement group {pg_id[:8]}... left reserved by a stopped trial's Train "
            "run (Ray Train's abort race); the next trial can start",
            flush=True,
        )


@contextlib.contextmanager
def sweeping(trial_bundle: dict[str, float], interval_s: float = SWEEP_INTERVAL_S) -> Iterator[Sweeper]:
    """Sweep leaked Train placement groups every ``interval_s`` while the block (``Tuner.fit``) runs, and
    settle what is left when it ends (:meth:`Sweeper.settle`)."""
    sweeper, done = Sweeper(trial_bundle), threading.Event()
    try:
        before: set[str] | None = {g.placement_group_id for g in _groups() if g.state in ("CREATED", "PENDING")}
        controllers = _train_controllers()
    except Exception:  # noqa: BLE001 - the State API busy: the search runs, swept but not settled
        before = None

    def loop() -> None:
        while not done.wait(interval_s):
            try:
                _announce(sweeper.sweep())
            except Exception:  # noqa: BLE001 - a failed pass (GCS busy, a group removed meanwhile): the next one
                continue

    thread = threading.Thread(target=loop, name="tumorbench-pg-sweeper", daemon=True)
    thread.start()
    try:
        yield sweeper
    finally:
        done.set()
        thread.join(timeout=interval_s + 30)
        try:
            if before is not None:
                _announce(sweeper.settle(before, controllers))
        except Exception:  # noqa: BLE001 - the search's own result or error matters more; the next search sweeps
            pass
