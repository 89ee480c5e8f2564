"""``bench/serve_load.py``'s CPU accounting: each process group's CPU seconds from /proc, per request."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.conftest import load_script


def _burn(seconds: float) -> None:
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux /proc")
def test_cpu_seconds_are_grouped_by_process_and_divided_per_request():
    groups = load_script("bench/serve_load.py").CPU_GROUPS
    procfs = load_script("bench/procfs.py")
    # A stand-in for the ingress replica: Ray titles it "ray::ServeReplica:<app>:Ingress".
    burn = (
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\nprint('done', flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", burn + "time.sleep(30)", "ServeReplica:tumorbench:Ingress"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        before = procfs.cpu_seconds(groups)
        _burn(0.3)
        assert child.stdout.readline().strip() == "done"
        after = procfs.cpu_seconds(groups)
    finally:
        child.kill()
        child.wait()
    per_request = procfs.cpu_ms_per_request(before, after, 4)
    # 300 ms in this process (the clients) and up to 400 ms in the child, over 4 requests; clock ticks of 10 ms
    assert per_request["client"] == pytest.approx(75, abs=10)
    # 400 ms over 4, plus whatever part of the child's start-up falls after the first reading
    assert 80 <= per_request["ingress"] <= 130
    assert procfs.cpu_ms_per_request({"model": 5.0}, {"model": 2.0}, 1) == {"model": 0.0}  # a replaced replica


def test_rounds_print_each_levels_median_round_and_the_median_of_each_rounds_ratio(capsys):
    bench = load_script("bench/serve_load.py")

    def level(setup, rps, round_, p50=10.0, p99=15.0):
        timing = {"p50_ms": p50, "p95_ms": p99, "p99_ms": p99}
        return {
            "setup": setup,
            "clients": 32,
            "requests": 100,
            "errors": 0,
            "req_per_s": rps,
            "round": round_,
            **timing,
        }

    rows = [
        level("legacy", 60.0, 1),
        level("batched", 210.0, 1, p99=13.0),
        level("legacy", 80.0, 2),
        level("batched", 136.0, 2, p99=14.0),  # a slow round: 1.70x on its own
        level("legacy", 65.0, 3),
        level("batched", 215.0, 3, p99=16.0),
    ]
    table = bench._median_rows(rows)
    assert [(r["setup"], r["req_per_s"], r["by_round"]) for r in table] == [
        ("legacy", 65.0, [60.0, 80.0, 65.0]),
        ("batched", 210.0, [210.0, 136.0, 215.0]),
    ]
    bench._ratios(rows, 32)
    out = capsys.readouterr().out.splitlines()
    # per round 3.50, 1.70, 3.31: the median round's ratio, not the ratio of the medians (210 / 65 = 3.23)
    assert out[0] == "batched / legacy req/s at 32 clients: 3.31x (median of 3 rounds: 3.50, 1.70, 3.31)"
    assert out[-1] == "batched p99 / p50 at 32 clients: 1.40 (median of 3 rounds: 1.30, 1.40, 1.60)"
