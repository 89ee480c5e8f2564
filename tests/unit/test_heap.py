"""tumorbench.heap: freed large blocks stay in the process instead of being faulted in again (glibc)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

PAGES = (64 << 20) // 4096  # one 64 MiB array, in 4 KiB pages
ROUNDS = 10

PROGRAM = f"""
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from tumorbench.heap import keep_freed_memory
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range({ROUNDS}):
    block = np.ones(64 << 20, dtype=np.uint8)  # every page written
    del block
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults(mode: str) -> int:
    env = os.environ | {"NUMPY_MADVISE_HUGEPAGE": "0"}  # numpy's own huge pages would hide the faults
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], capture_output=True, text=True, check=True, env=env)
    return int(done.stdout.strip())


def test_a_large_block_freed_and_allocated_again_is_faulted_in_once_not_every_time():
    # glibc's default: a 64 MiB block is a mapping of its own, unmapped when freed, so every page faults every round
    assert faults("default") >= ROUNDS * PAGES * 0.9
    # kept: the first round's pages are reused (some slack for numpy's and the interpreter's own)
    assert faults("keep") <= 1.5 * PAGES
