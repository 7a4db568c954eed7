"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path


def metarl_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the ``metarl`` command (the installed script, else ``python -m metarl.cli``)."""
    exe = shutil.which("metarl")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "metarl.cli", *args]
    env = {k: v for k, v in os.environ.items() if k != "METARL_DEBUG"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)


def progress_rows(run: Path) -> list[dict[str, str]]:
    """The rows of a run's progress.csv."""
    with (run / "progress.csv").open() as fh:
        return list(csv.DictReader(fh))
