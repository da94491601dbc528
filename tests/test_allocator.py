"""galdeblend.allocator: freed tensors stay in the process on glibc."""

import platform
import subprocess
import sys

import pytest

from galdeblend import allocator
from galdeblend.allocator import retain_freed_memory

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

# Page faults of 20 steps that each make eight 4 MiB tensors (8192 pages in all) and free
# them, after a first such step: without the setting glibc trims the freed heap top and
# every step faults all its pages again (measured: 20 steps' worth).
STEPS = """
import resource, torch
from galdeblend.allocator import retain_freed_memory
accepted = retain_freed_memory()
def step():
    activations = [torch.ones(2**20) for _ in range(8)]
    del activations
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(accepted, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not GLIBC, reason="mallopt thresholds are glibc's")
def test_freed_tensors_are_reused_without_page_faults():
    out = subprocess.run(
        [sys.executable, "-c", STEPS], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == "True"
    assert int(out[1]) < 2 * 8192


def test_other_platforms_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert retain_freed_memory() is False
