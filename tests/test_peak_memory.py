"""``metarl.peak_memory``: the summed peak resident memory that progress.csv records."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from metarl.peak_memory import peak_rss_kib, peak_rss_mib

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")


def _vm(field: str, pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(field)


def test_the_peak_is_at_least_what_the_process_holds_now_and_grows_with_a_large_allocation() -> None:
    before = peak_rss_kib()
    assert before is not None and before >= _vm("VmRSS") * 0.99
    block = bytearray(64 * 2**20)  # 64 MiB, touched
    for i in range(0, len(block), 4096):
        block[i] = 1
    after, now = peak_rss_kib(), _vm("VmRSS")
    assert now >= 64 * 1024  # the block is resident
    assert after is not None and after >= now * 0.99 and after >= before
    del block


def test_workers_are_added_and_unreadable_pids_left_out() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(32 * 2**20); time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _vm("VmHWM", child.pid) < 32 * 1024:
            time.sleep(0.05)
        own, theirs = peak_rss_kib(), peak_rss_kib(child.pid)
        assert own is not None and theirs is not None and theirs >= 32 * 1024
        total = peak_rss_mib([child.pid, 2**22 + 12345])  # a pid above Linux's maximum: no such process
        assert total is not None
        assert total * 1024 == pytest.approx(own + theirs, abs=4096)  # our own peak may grow a little meanwhile
        assert peak_rss_kib(2**22 + 12345) is None
    finally:
        child.kill()
        child.wait()
