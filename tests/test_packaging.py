"""Every package directory of the source tree is listed in pyproject.toml's ``packages``: a directory missing there
imports from a checkout or an editable install but is absent from a wheel (``pip install .``)."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+; the check needs one interpreter, not all

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_directory_is_listed_in_pyproject() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert "metarl.agents.rl2" in found, f"the package scan found nothing where expected: {sorted(found)}"
    missing = sorted(found - listed)
    assert missing == [], f"package directories missing from pyproject.toml's packages: {missing}"
