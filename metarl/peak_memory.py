"""How much memory a run has needed: the peak resident set of the driver and of its rollout workers.

Each process's peak is Linux's ``VmHWM`` (``/proc/PID/status``: the most resident memory the process has held).
The sum over the driver and its workers is what ``progress.csv`` records as ``memory/peak_rss_mib``, so a user
can tell whether a config fits a machine before committing hours to it (MAML-TRPO's full-curvature step on ML10
needed 8.4 GiB). The sum counts pages the processes share (libraries, the shared-memory transfer block) once per
process, so it is an upper bound on what the machine had to provide. With the Ray backend only the driver is
counted (its actors may be on other hosts). A process without a readable ``/proc`` entry is left out; where none is
readable (not Linux) the figure is ``None`` and the column is not written.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def peak_rss_kib(pid: int | str = "self") -> int | None:
    """``VmHWM`` of process ``pid`` in KiB, or None where it cannot be read (no such process, not Linux)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])  # "VmHWM:   123456 kB"
    return None


def peak_rss_mib(worker_pids: Iterable[int] = ()) -> float | None:
    """The summed peak resident memory of this process and ``worker_pids``, in MiB (None where none is readable)."""
    peaks = [peak_rss_kib("self"), *(peak_rss_kib(p) for p in worker_pids if p != os.getpid())]
    known = [p for p in peaks if p is not None]
    return sum(known) / 1024 if known else None
