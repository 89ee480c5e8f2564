"""What the bench scripts read of Linux ``/proc``: processes' CPU time and peak memory, grouped."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def descendants_hwm_mb(root: int, exclude: set[int]) -> dict[str, float]:
    """Peak RSS (VmHWM) of ``root``'s descendant processes, summed by process name (empty without /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        children.setdefault(ppid, []).append(int(stat.parent.name))
    by_name: dict[str, float] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        if pid in exclude:
            continue
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in lines if ":" in line)
        name = fields.get("Name", "?").strip()
        by_name[name] = by_name.get(name, 0.0) + int(fields.get("VmHWM", "0 kB").split()[0]) / 1024
    return by_name


def cpu_seconds(groups: Iterable[tuple[str, str]]) -> dict[str, float]:
    """CPU seconds used so far by this process (``client``) and by the processes of ``groups``.

    ``groups``: ``(text in the command line, group name)`` pairs, the first that matches wins. Read
    before and after a load, it says where the CPU went on the machine.
    """
    groups = list(groups)
    ticks, me, out = os.sysconf("SC_CLK_TCK"), os.getpid(), {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            title = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile
            continue
        pid = int(stat.parent.name)
        group = "client" if pid == me else next((g for key, g in groups if key in title), None)
        if group:  # utime + stime, fields 14 and 15 of stat (11 and 12 after the command name)
            out[group] = out.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


def cpu_ms_per_request(before: dict[str, float], after: dict[str, float], requests: int) -> dict[str, float]:
    """Each group's CPU ms per request between two :func:`cpu_seconds` readings (a replaced process counts 0)."""
    return {g: round(1000 * max(0.0, after[g] - before.get(g, 0.0)) / max(requests, 1), 2) for g in after}
