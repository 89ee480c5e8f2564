"""Placement groups left behind by a Train run that Tune stopped: found and removed by the search's driver.

Ray Train V2 (Ray 2.60) aborts a run by first stopping its ``PlacementGroupCleaner`` and then
removing the workers' placement group. When Tune ends the trial's process in between (ASHA or
the budget stopping a trial; likelier on a busy machine), nothing removes the group: its CPUs
stay reserved and the next trial's workers wait for them for ever. Seen here: a 24-trial ASHA
search (``bench/tune_efficiency.py``) stalled at its third trial behind the 1.9 CPUs of the
second, stopped one. The race is known upstream (review of ray-project/ray#65447).

:func:`sweeping` runs :func:`orphaned_groups` in a thread beside ``Tuner.fit``. A group is
an orphan when it belongs to this job, is created, holds no actor (alive, pending or restarting)
and is not a trial's own group (Tune stages those before their actor starts): Train starts a
run's workers as soon as their group exists, so one still empty after ``grace_s`` is a leak.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

SWEEP_INTERVAL_S = 5.0
ORPHAN_GRACE_S = 20.0
_LIMIT = 10_000  # the State API's page: far more groups and actors than a search has


def _resources(bundle: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in (bundle.get("unit_resources") or {}).items() if float(v) > 0}


def orphaned_groups(trial_bundle: dict[str, float], job_id: str | None = None) -> set[str]:
    """Ids of this job's created placement groups that no live actor uses and that are not trials' own."""
    import ray
    from ray.util.state import list_actors, list_placement_groups

    context = ray.get_runtime_context()
    address, job_id = context.gcs_address, job_id or context.get_job_id()
    filters = [("state", "=", "CREATED"), ("creator_job_id", "=", job_id)]
    groups = list_placement_groups(address=address, filters=filters, detail=True, limit=_LIMIT)
    live = list_actors(address=address, filters=[("state", "!=", "DEAD")], detail=True, limit=_LIMIT)
    used = {actor.placement_group_id for actor in live if actor.placement_group_id}
    trial = {k: float(v) for k, v in trial_bundle.items() if float(v) > 0}
    return {
        group.placement_group_id
        for group in groups
        if group.placement_group_id not in used
        and not (len(group.bundles or []) == 1 and _resources(group.bundles[0]) == trial)
    }


class Sweeper:
    """Removes a group once it has been an orphan for ``grace_s`` (two sightings at least)."""

    def __init__(self, trial_bundle: dict[str, float], grace_s: float = ORPHAN_GRACE_S) -> None:
        self.trial_bundle, self.grace_s = dict(trial_bundle), grace_s
        self.first_seen: dict[str, float] = {}
        self.removed: list[str] = []

    def sweep(self, now: float | None = None) -> list[str]:
        """One pass: the ids removed now."""
        from ray import PlacementGroupID
        from ray.util import placement_group_table, remove_placement_group
        from ray.util.placement_group import PlacementGroup
        from ray.util.state.exception import RayStateApiException

        now = time.monotonic() if now is None else now
        try:
            orphans = orphaned_groups(self.trial_bundle)
        except RayStateApiException:  # the dashboard busy or restarting: next pass
            return []
        self.first_seen = {pg: self.first_seen.get(pg, now) for pg in orphans}
        removed = []
        for pg_id, since in list(self.first_seen.items()):
            if now - since < self.grace_s:
                continue
            group = PlacementGroup(PlacementGroupID.from_hex(pg_id))
            if placement_group_table(group).get("state") == "CREATED":
                remove_placement_group(group)
                removed.append(pg_id)
            del self.first_seen[pg_id]
        self.removed += removed
        return removed


@contextlib.contextmanager
def sweeping(trial_bundle: dict[str, float], interval_s: float = SWEEP_INTERVAL_S) -> Iterator[Sweeper]:
    """Sweep leaked Train placement groups every ``interval_s`` while the block (``Tuner.fit``) runs."""
    sweeper, done = Sweeper(trial_bundle), threading.Event()

    def loop() -> None:
        while not done.wait(interval_s):
            try:
                freed = sweeper.sweep()
            except Exception:  # noqa: BLE001 - a failed pass (GCS busy, a group removed meanwhile): the next one
                continue
            for pg_id in freed:
                print(
                    f"[tumorbench] freed placement group {pg_id[:8]}... left reserved by a stopped trial's Train "
                    "run (Ray Train's abort race); the next trial can start",
                    flush=True,
                )

    thread = threading.Thread(target=loop, name="tumorbench-pg-sweeper", daemon=True)
    thread.start()
    try:
        yield sweeper
    finally:
        done.set()
        thread.join(timeout=interval_s + 30)
