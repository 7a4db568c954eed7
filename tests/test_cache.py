"""The on-disk task cache: location, exact round trip, recovery from corrupt files, keys, opting out."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import metaworld
import pytest

from metarl.envs import make_distribution
from metarl.envs.cache import (
    TaskCacheWarning,
    TaskLists,
    _encode,
    cache_dir,
    cache_enabled,
    cache_path,
    load_or_build_tasks,
)
from metarl.envs.metaworld import MetaWorldDistribution
from metarl.tasks import Task

KEY = {"kind": "toy", "seed": 0, "version": "1.0", "flag": True, "missing": None}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("METARL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("METARL_NO_CACHE", raising=False)
    return tmp_path / "cache"


def _toy_lists(seed: int = 0) -> dict[str, list[Task]]:
    def task(split: str, i: int) -> Task:
        return Task.make("toy", split, "fam", i, {"goal": [seed + i, 0.5], "blob": bytes([seed, i, 255])})  # type: ignore[arg-type]

    return {"train": [task("train", i) for i in range(3)], "test": [task("test", i) for i in range(2)]}


class _Builder:
    """Counts calls, so a test can tell a cache hit from a rebuild."""

    def __init__(self, make: Callable[[], dict[str, list[Task]]] = _toy_lists) -> None:
        self.calls = 0
        self.make = make

    def __call__(self) -> dict[str, list[Task]]:
        self.calls += 1
        return self.make()


def _no_warnings(fn: Callable[[], TaskLists]) -> TaskLists:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fn()


def _only_cache_file(folder: Path) -> Path:
    files = sorted((folder / "tasks").iterdir())
    assert len(files) == 1, f"expected one cache file, found {[f.name for f in files]}"
    return files[0]


# -- location and switches ---------------------------------------------------------------------
def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("METARL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "metarl"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "metarl"


def test_no_cache_switch(monkeypatch: pytest.MonkeyPatch, _cache_in_tmp: Path) -> None:
    assert cache_enabled()
    monkeypatch.setenv("METARL_NO_CACHE", "1")
    assert not cache_enabled()
    build = _Builder()
    first = load_or_build_tasks("toy", KEY, build)
    second = load_or_build_tasks("toy", KEY, build)
    assert build.calls == 2 and first == second
    assert not _cache_in_tmp.exists(), "nothing may be written with METARL_NO_CACHE=1"
    monkeypatch.setenv("METARL_NO_CACHE", "maybe")
    with pytest.raises(ValueError, match=r"METARL_NO_CACHE='maybe' is not understood; use one of \['1'"):
        cache_enabled()


# -- generic round trip ------------------------------------------------------------------------
def test_round_trip_is_exact_and_plain_json(_cache_in_tmp: Path) -> None:
    build = _Builder()
    fresh = load_or_build_tasks("toy run", KEY, build)
    assert fresh == {"train": tuple(_toy_lists()["train"]), "test": tuple(_toy_lists()["test"])}
    path = _only_cache_file(_cache_in_tmp)
    assert path == cache_path("toy run", KEY) and path.name.startswith("toy_run-")
    record = json.loads(path.read_text())  # plain JSON, not pickle
    assert record["format"] == "metarl-task-cache" and record["key"] == KEY
    assert record["splits"]["train"][0]["params"]["blob"] == {"__bytes__": "AAD/"}
    cached = _no_warnings(lambda: load_or_build_tasks("toy run", KEY, build))
    assert build.calls == 1, "the second call must come from the file"
    assert cached == fresh
    assert [t.params for t in cached["train"]] == [t.params for t in fresh["train"]]


def test_keys_separate_files(_cache_in_tmp: Path) -> None:
    other_version = {**KEY, "version": "1.1"}
    assert cache_path("toy", KEY) != cache_path("toy", other_version)
    assert cache_path("toy", KEY) != cache_path("toy", {**KEY, "seed": 1})
    a = load_or_build_tasks("toy", KEY, _Builder(lambda: _toy_lists(0)))
    b = load_or_build_tasks("toy", {**KEY, "seed": 1}, _Builder(lambda: _toy_lists(1)))
    assert a != b
    assert len(list((_cache_in_tmp / "tasks").iterdir())) == 2


def test_no_temporary_files_left_and_unwritable_folder_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    load_or_build_tasks("toy", KEY, _Builder())
    assert [p.name for p in (tmp_path / "cache" / "tasks").iterdir()] == [cache_path("toy", KEY).name]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("METARL_CACHE_DIR", str(blocker / "cache"))  # cannot be created, even by root
    with pytest.warns(TaskCacheWarning, match="cannot write task cache .*continuing without it"):
        tasks = load_or_build_tasks("toy", KEY, _Builder())
    assert len(tasks["train"]) == 3


def test_validate_rejects_a_fresh_build_loudly() -> None:
    def refuse(lists: TaskLists) -> None:
        raise ValueError("wrong number of tasks")

    with pytest.raises(ValueError, match="wrong number of tasks"):
        load_or_build_tasks("toy", KEY, _Builder(), refuse)
    with pytest.raises(ValueError, match=r"task builder returned splits \['train'\], expected \['train', 'test'\]"):
        load_or_build_tasks("toy", KEY, lambda: {"train": []})


# -- corrupt files are rebuilt, never trusted --------------------------------------------------
def _swap_task(text: str) -> str:
    """Valid JSON, right key, correct checksum, but a test task where a train task should be."""
    good = _toy_lists()
    bad = {"train": [*good["train"][:2], good["test"][0]], "test": good["test"]}
    return _encode(KEY, bad)


CORRUPTIONS: dict[str, Callable[[str], str | bytes]] = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "garbage bytes": lambda text: os.urandom(512),
    "json of another shape": lambda text: json.dumps({"hello": [1, 2, 3]}),
    "json list": lambda text: "[1, 2]",
    "edited content": lambda text: text.replace('"index":1', '"index":7', 1),
    "other key": lambda text: text.replace('"seed":0', '"seed":5', 1),
    "other version": lambda text: text.replace('"version":1,', '"version":999,', 1),
    "task in the wrong split": _swap_task,
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_generic_file_is_rebuilt(corruption: str, _cache_in_tmp: Path) -> None:
    build = _Builder()
    fresh = load_or_build_tasks("toy", KEY, build)
    path = _only_cache_file(_cache_in_tmp)
    damaged = CORRUPTIONS[corruption](path.read_text())
    assert damaged != path.read_text()
    if isinstance(damaged, bytes):
        path.write_bytes(damaged)
    else:
        path.write_text(damaged)
    with pytest.warns(TaskCacheWarning, match=r"task cache .* is unusable \(.*\); rebuilding it"):
        again = load_or_build_tasks("toy", KEY, build)
    assert build.calls == 2 and again == fresh
    assert _no_warnings(lambda: load_or_build_tasks("toy", KEY, build)) == fresh, "the file was rewritten"
    assert build.calls == 2


# -- Meta-World ----------------------------------------------------------------------------------
def _lists(dist: object) -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    assert isinstance(dist, MetaWorldDistribution)
    return dist.tasks("train"), dist.tasks("test")


def test_ml10_cached_tasks_equal_a_fresh_build(_cache_in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fresh = _lists(make_distribution("ML10"))  # builds metaworld.ML10(seed=0) and writes the cache
    assert len(fresh[0]) == 500 and len(fresh[1]) == 250
    assert _only_cache_file(_cache_in_tmp).name.startswith("metaworld-ML10-seed0-")
    monkeypatch.setattr(metaworld, "ML10", None)  # a second build would fail
    cached = _no_warnings(lambda: _lists(make_distribution("ML10")))
    assert cached == fresh
    assert [t.param("mw_data") for t in cached[0]] == [t.param("mw_data") for t in fresh[0]]


@pytest.fixture(scope="module")
def reach_fresh(tmp_path_factory: pytest.TempPathFactory) -> tuple[tuple[Task, ...], tuple[Task, ...]]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METARL_NO_CACHE", "1")
        return _lists(make_distribution("ML1-reach-v3"))


def test_ml1_cache_matches_uncached_build(
    reach_fresh: tuple[tuple[Task, ...], tuple[Task, ...]], _cache_in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _lists(make_distribution("ML1-reach-v3")) == reach_fresh
    monkeypatch.setattr(metaworld, "ML1", None)
    assert _no_warnings(lambda: _lists(make_distribution("ML1-reach-v3"))) == reach_fresh


def _write_reach_cache(lists: dict[str, tuple[Task, ...]]) -> Path:
    """Write a cache file for ML1-reach-v3 (seed 0) directly, without building anything."""
    dist = make_distribution("ML1-reach-v3")
    assert isinstance(dist, MetaWorldDistribution)
    label, key = dist._cache_key()
    path = cache_path(label, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_encode(key, lists))
    return path


@pytest.mark.parametrize("corruption", ["truncated", "garbage bytes", "edited content"])
def test_corrupt_metaworld_cache_is_rebuilt(
    corruption: str, reach_fresh: tuple[tuple[Task, ...], tuple[Task, ...]], _cache_in_tmp: Path
) -> None:
    path = _write_reach_cache({"train": reach_fresh[0], "test": reach_fresh[1]})
    assert _no_warnings(lambda: _lists(make_distribution("ML1-reach-v3"))) == reach_fresh
    damaged = CORRUPTIONS[corruption](path.read_text())
    path.write_bytes(damaged if isinstance(damaged, bytes) else damaged.encode())
    with pytest.warns(TaskCacheWarning, match="rebuilding it"):
        rebuilt = _lists(make_distribution("ML1-reach-v3"))
    assert rebuilt == reach_fresh
    assert _no_warnings(lambda: _lists(make_distribution("ML1-reach-v3"))) == reach_fresh


def test_metaworld_validation_rejects_wrong_tasks_with_a_valid_checksum(
    reach_fresh: tuple[tuple[Task, ...], tuple[Task, ...]], _cache_in_tmp: Path
) -> None:
    """A well-formed file whose tasks are not this distribution's (49 train goals) is rebuilt."""
    path = _write_reach_cache({"train": reach_fresh[0][:49], "test": reach_fresh[1]})
    key = json.loads(path.read_text())["key"]
    with pytest.warns(TaskCacheWarning, match=r"tasks per class are \{'reach-v3': 49\}"):
        assert _lists(make_distribution("ML1-reach-v3")) == reach_fresh
    # Train and test sharing a task is refused too.
    relabelled = tuple(Task.make(t.distribution, "train", t.family, t.index, dict(t.params)) for t in reach_fresh[1])
    path.write_text(_encode(key, {"train": relabelled, "test": reach_fresh[1]}))
    with pytest.warns(TaskCacheWarning, match="train and test splits share 50 tasks"):
        assert _lists(make_distribution("ML1-reach-v3")) == reach_fresh


def test_metaworld_seeds_use_different_keys(_cache_in_tmp: Path) -> None:
    seed0, seed1 = _lists(make_distribution("ML1-reach-v3", seed=0)), _lists(make_distribution("ML1-reach-v3", seed=1))
    names = sorted(p.name for p in (_cache_in_tmp / "tasks").iterdir())
    assert len(names) == 2 and names[0].startswith("metaworld-ML1-reach-v3-seed0-") and "seed1" in names[1]
    assert {t.param("mw_data") for t in seed0[0]} != {t.param("mw_data") for t in seed1[0]}
    # Meta-World builds ML1's test goals with seed + 1, so seed 0's test goals are seed 1's train goals.
    assert [t.param("mw_data") for t in seed0[1]] == [t.param("mw_data") for t in seed1[0]]
