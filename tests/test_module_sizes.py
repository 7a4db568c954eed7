"""A codebase the next engineer can hold in their head: no module of the package (``metarl/``, ``agents/``,
``envs/``) is over 500 lines; a module that grows past it is split by responsibility."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500


def _sizes() -> dict[str, int]:
    files = [p for top in ("metarl", "agents", "envs") for p in sorted((ROOT / top).rglob("*.py"))]
    assert files, f"no modules found under {ROOT}"
    return {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in files}


def test_no_module_is_over_500_lines() -> None:
    over = {path: n for path, n in _sizes().items() if n > MAX_LINES}
    assert over == {}, f"modules over {MAX_LINES} lines (split them by responsibility): {over}"
