"""Registry: names, case-insensitive lookup, errors, registration by function and by entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from metarl import TaskDistribution, check_task_distribution
from metarl.envs import (
    ENTRY_POINT_GROUP,
    canonical_name,
    list_distributions,
    make_distribution,
    register_distribution,
    registry,
    reload_entry_points,
)
from metarl.envs.classic import PointNavDistribution

PLUGIN_SRC = Path(__file__).resolve().parent / "fixtures" / "metarl_plugin_example"
CLASSIC = ["point-nav", "cheetah-vel", "cheetah-dir", "ant-dir"]


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made in a test vanish after it."""
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))


def make_small_point_nav(seed: int = 0, num_train: int = 8) -> TaskDistribution:
    """A module-level factory, as register_distribution requires."""
    return PointNavDistribution(seed=seed, num_train=num_train, num_test=4)


# ----------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------
def test_metaworld_env_list_matches_metaworld() -> None:
    import metaworld.env_dict

    assert set(registry.METAWORLD_V3_ENVS) == set(metaworld.env_dict.ALL_V3_ENVIRONMENTS)
    assert len(registry.METAWORLD_V3_ENVS) == len(set(registry.METAWORLD_V3_ENVS)) == 50


def test_list_distributions_has_every_builtin_name() -> None:
    names = list_distributions()
    assert isinstance(names, list) and all(isinstance(n, str) for n in names)
    assert names == sorted(names) and len(names) == len(set(names))
    expected = {f"ML1-{env}" for env in registry.METAWORLD_V3_ENVS} | {"ML10", "ML25", "ML45", *CLASSIC}
    assert expected <= set(names)


def test_names_match_case_insensitively() -> None:
    assert canonical_name("ml1-REACH-v3") == "ML1-reach-v3"
    assert canonical_name("Point-Nav") == "point-nav"
    dist = make_distribution("POINT-NAV", seed=2, num_train=3, num_test=2)
    assert dist.name == "point-nav" and len(dist.tasks("train")) == 3
    assert registry.source_of("cheetah-DIR") == "classic"


def test_unknown_name_lists_the_valid_ones(scratch_registry: None) -> None:
    with pytest.raises(ValueError, match=r"unknown distribution 'point-navv' \(did you mean one of \['point-nav'\]"):
        make_distribution("point-navv")
    register_distribution("my-small-nav", make_small_point_nav)
    with pytest.raises(
        ValueError,
        match=r"unknown distribution 'nope'; valid names: ML10, ML25, ML45, ML1-<env> .*point-nav, cheetah-vel, "
        r"cheetah-dir, ant-dir, and registered ones: \[.*'my-small-nav'.*\]; `metarl envs list` shows all \d+",
    ):
        make_distribution("nope")
    with pytest.raises(TypeError, match="distribution name must be a string, got int"):
        make_distribution(3)  # type: ignore[arg-type]


def test_unknown_option_and_bad_seed() -> None:
    with pytest.raises(
        ValueError,
        match=r"unknown option\(s\) \['goal_range'\] for distribution 'point-nav'; valid options: "
        r"\['max_episode_steps', 'num_test', 'num_train'\]",
    ):
        make_distribution("point-nav", goal_range=1.0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got -1"):
        make_distribution("point-nav", seed=-1)


# ----------------------------------------------------------------------------------------------
# Registration by function
# ----------------------------------------------------------------------------------------------
def test_register_a_module_level_function(scratch_registry: None) -> None:
    register_distribution("My-Small-Nav", make_small_point_nav)
    assert "My-Small-Nav" in list_distributions()
    dist = make_distribution("my-small-nav", seed=1, num_train=5)
    assert isinstance(dist, PointNavDistribution) and len(dist.tasks("train")) == 5
    assert registry.source_of("my-small-nav") == "user"
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_test'\] for distribution 'My-Small-Nav'"):
        make_distribution("my-small-nav", num_test=3)
    with pytest.raises(ValueError, match="a distribution named 'My-Small-Nav' is already registered"):
        register_distribution("my-small-nav", PointNavDistribution)
    register_distribution("my-small-nav", PointNavDistribution, overwrite=True)
    assert len(make_distribution("my-small-nav").tasks("train")) == 1000


def test_lambdas_and_closures_are_refused(scratch_registry: None) -> None:
    def closure(seed: int = 0) -> TaskDistribution:
        return PointNavDistribution(seed=seed)

    with pytest.raises(TypeError, match="lambda or a closure"):
        register_distribution("nav-lambda", lambda seed=0: PointNavDistribution(seed=seed))
    with pytest.raises(TypeError, match="lambda or a closure"):
        register_distribution("nav-closure", closure)
    assert "nav-lambda" not in list_distributions() and "nav-closure" not in list_distributions()
    with pytest.raises(ValueError, match="distribution name must be a non-empty string"):
        register_distribution(" ", make_small_point_nav)


def test_factory_that_returns_something_else(scratch_registry: None) -> None:
    register_distribution("not-a-dist", dict)
    with pytest.raises(TypeError, match=r"it must return a metarl\.TaskDistribution"):
        make_distribution("not-a-dist")


# ----------------------------------------------------------------------------------------------
# Registration by entry point: a real package, installed into a temporary directory
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` the fixture package into a temporary directory (once per module; about 3 s)."""
    root = tmp_path_factory.mktemp("plugin")
    src = root / "src"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = root / "site"
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
    done = subprocess.run([*cmd, "--target", str(target), str(src)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return target


@pytest.fixture
def installed_plugin(plugin_site: Path) -> Iterator[Path]:
    """The installed plugin on sys.path for one test; afterwards the registry forgets it."""
    sys.path.insert(0, str(plugin_site))
    try:
        yield plugin_site
    finally:
        if str(plugin_site) in sys.path:
            sys.path.remove(str(plugin_site))
        sys.modules.pop("metarl_plugin_example", None)
        reload_entry_points()
        assert "plugin-pendulum" not in list_distributions()


def test_entry_point_distribution_appears_everywhere(installed_plugin: Path) -> None:
    entry_points = (installed_plugin / "metarl_plugin_example-0.1.0.dist-info" / "entry_points.txt").read_text()
    assert f"[{ENTRY_POINT_GROUP}]" in entry_points and "plugin-pendulum" in entry_points
    reload_entry_points()
    assert "plugin-pendulum" in list_distributions()
    assert registry.source_of("plugin-pendulum") == "metarl-plugin-example"
    dist = make_distribution("Plugin-Pendulum", seed=1, num_train=4)
    assert dist.name == "plugin-pendulum" and len(dist.tasks("train")) == 4 and len(dist.tasks("test")) == 5
    check_task_distribution(dist)
    # a fresh interpreter finds it too (as `metarl envs list` would), with the package on its path
    code = "from metarl.envs import list_distributions as l; print('plugin-pendulum' in l())"
    env = {**os.environ, "PYTHONPATH": str(installed_plugin)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "True", out.stderr


def test_entry_point_is_forgotten_when_the_package_goes(installed_plugin: Path) -> None:
    reload_entry_points()
    assert "plugin-pendulum" in list_distributions()
    sys.path.remove(str(installed_plugin))
    reload_entry_points()
    assert "plugin-pendulum" not in list_distributions()
    with pytest.raises(ValueError, match="unknown distribution 'plugin-pendulum'"):
        make_distribution("plugin-pendulum")
