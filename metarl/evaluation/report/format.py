"""What the Markdown and the figures of a report share: numbers and table cells as text, task labels, a result's
curve and per-task success read with checks that name what is wrong, and atomic file writes."""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from metarl.errors import UserError
from metarl.evaluation.result import EvalResult
from metarl.run import atomic_write_bytes

_UNIT_WORDS = {"episodes": "adaptation episodes", "gradient_steps": "gradient steps"}
_DPI = 110
_MAX_LABEL_CHARS = 28


def num(value: Any) -> str:
    """A number for a table: 3 decimals below 100, one decimal with thousands separators above."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3f}"


def _cell(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def natural_key(text: str) -> list[Any]:
    """Sort key that orders ``.../7`` before ``.../10``."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", text)]


def unit_words(unit: Any) -> str:
    """A curve's unit as words for an axis or a column (``episodes`` -> ``adaptation episodes``)."""
    return _UNIT_WORDS.get(str(unit), str(unit).replace("_", " "))


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "benchmark"


def write_text(path: Path, text: str) -> Path:
    atomic_write_bytes(Path(path), text.encode())
    return Path(path)


def save_figure(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def short_task_label(task_id: str, prefix: str) -> str:
    """``task_id`` without ``prefix``, shortened in the middle so that its ``/index`` end stays readable."""
    label = task_id[len(prefix) :] if prefix and task_id.startswith(prefix) else task_id
    if len(label) <= _MAX_LABEL_CHARS:
        return label
    tail = label[label.rfind("/") :] if "/" in label else ""
    if len(tail) > _MAX_LABEL_CHARS // 2:
        tail = label[-(_MAX_LABEL_CHARS // 2) :]
    return label[: _MAX_LABEL_CHARS - 1 - len(tail)] + "…" + tail


def common_prefix(task_ids: Sequence[str]) -> str:
    """The ``distribution/split/`` start all task ids share (``""`` if they do not), dropped from plot labels."""
    heads = {"/".join(t.split("/")[:2]) + "/" for t in task_ids if t.count("/") >= 2}
    return heads.pop() if len(heads) == 1 and all(t.count("/") >= 2 for t in task_ids) else ""


def _numbers(values: Any) -> list[float] | None:
    """``values`` as a list of floats, or None when it is not a list of numbers."""
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    return [float(v) for v in values]


def curve(result: EvalResult) -> tuple[list[float], list[float], list[float]]:
    """``(x, success, return)`` of the adaptation curve, checked to be lists of numbers of one length."""
    xs, succ, ret = (_numbers(result.curve.get(key)) for key in ("x", "success", "return"))
    if not xs or succ is None or ret is None or not len(xs) == len(succ) == len(ret):
        given = {key: result.curve.get(key) for key in ("x", "success", "return")}
        raise UserError(
            f"EvalResult of {result.agent!r} on {result.distribution!r} has a bad adaptation curve {given}; "
            "valid curves have non-empty lists of numbers x, success and return of one length"
        )
    return xs, succ, ret


def x_text(x: float) -> str:
    return str(int(x)) if x.is_integer() else f"{x:g}"


def task_success(result: EvalResult, task_id: str, key: str = "success") -> float:
    entry = result.per_task.get(task_id)
    value = entry.get(key) if isinstance(entry, Mapping) else None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise UserError(
            f"EvalResult of {result.agent!r} on {result.distribution!r}: per_task[{task_id!r}][{key!r}] is "
            f"{value!r}; it must be a finite number"
        )
    return float(value)


def check_groups(groups: Mapping[str, Sequence[Any]], what: str) -> None:
    """A figure's groups (label -> results or run directories): at least one label, none empty."""
    if not groups:
        raise UserError(f"no {what} to plot: give a mapping label -> non-empty list")
    empty = [label for label, items in groups.items() if not items]
    if empty:
        raise UserError(f"labels {empty} have no {what}; every label needs at least one")
