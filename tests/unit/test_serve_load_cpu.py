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
    bench = load_script("bench/serve_load.py")
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
        before = bench._cpu_seconds()
        _burn(0.3)
        assert child.stdout.readline().strip() == "done"
        after = bench._cpu_seconds()
    finally:
        child.kill()
        child.wait()
    per_request = bench._cpu_ms_per_request(before, after, 4)
    # 300 ms in this process (the clients) and up to 400 ms in the child, over 4 requests; clock ticks of 10 ms
    assert per_request["client"] == pytest.approx(75, abs=10)
    # 400 ms over 4, plus whatever part of the child's start-up falls after the first reading
    assert 80 <= per_request["ingress"] <= 130
    assert bench._cpu_ms_per_request({"model": 5.0}, {"model": 2.0}, 1) == {"model": 0.0}  # a replaced replica
