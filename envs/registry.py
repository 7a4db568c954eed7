"""Name → distribution registry: built-ins, run-time registrations and the ``metarl.distributions`` entry points."""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

from metarl.errors import UserError, check_int
from metarl.tasks import TaskDistribution, importable_path, resolve_importable

ENTRY_POINT_GROUP = "metarl.distributions"

# Meta-World v3 env names, kept here so listing names never imports metaworld (which is slow).
# tests/test_registry.py checks this list against metaworld.env_dict.ALL_V3_ENVIRONMENTS.
METAWORLD_V3_ENVS: tuple[str, ...] = (
    "assembly-v3", "basketball-v3", "bin-picking-v3", "box-close-v3", "button-press-topdown-v3",
    "button-press-topdown-wall-v3", "button-press-v3", "button-press-wall-v3", "coffee-button-v3",
    "coffee-pull-v3", "coffee-push-v3", "dial-turn-v3", "disassemble-v3", "door-close-v3",
    "door-lock-v3", "door-open-v3", "door-unlock-v3", "hand-insert-v3", "drawer-close-v3",
    "drawer-open-v3", "faucet-open-v3", "faucet-close-v3", "hammer-v3", "handle-press-side-v3",
    "handle-press-v3", "handle-pull-side-v3", "handle-pull-v3", "lever-pull-v3",
    "pick-place-wall-v3", "pick-out-of-hole-v3", "pick-place-v3", "plate-slide-v3",
    "plate-slide-side-v3", "plate-slide-back-v3", "plate-slide-back-side-v3", "peg-insert-side-v3",
    "peg-unplug-side-v3", "soccer-v3", "stick-push-v3", "stick-pull-v3", "push-v3", "push-wall-v3",
    "push-back-v3", "reach-v3", "reach-wall-v3", "shelf-place-v3", "sweep-into-v3", "sweep-v3",
    "window-open-v3", "window-close-v3",
)  # fmt: skip


@dataclass(frozen=True)
class _Entry:
    name: str
    factory: str  # "module:qualname", resolved lazily
    fixed: dict[str, Any] = field(default_factory=dict)  # keyword arguments bound by the name
    source: str = "user"


_lock = threading.Lock()
_registry: dict[str, _Entry] = {}
_entry_points_loaded = False


def _add(entry: _Entry, *, overwrite: bool = False) -> None:
    key = entry.name.lower()
    with _lock:
        if key in _registry and not overwrite and _registry[key] != entry:
            raise UserError(
                f"a distribution named {_registry[key].name!r} is already registered "
                f"(from {_registry[key].source}); pass overwrite=True to replace it"
            )
        _registry[key] = entry


def _register_builtins() -> None:
    mw = "metarl.envs.metaworld:MetaWorldDistribution"
    for env_name in METAWORLD_V3_ENVS:
        _add(_Entry(f"ML1-{env_name}", mw, {"benchmark": "ML1", "env_name": env_name}, "metaworld"))
    for bench in ("ML10", "ML25", "ML45"):
        _add(_Entry(bench, mw, {"benchmark": bench}, "metaworld"))
    classic = "metarl.envs.classic"
    _add(_Entry("point-nav", f"{classic}:PointNavDistribution", {}, "classic"))
    _add(_Entry("cheetah-vel", f"{classic}:CheetahVelDistribution", {}, "classic"))
    _add(_Entry("cheetah-dir", f"{classic}:CheetahDirDistribution", {}, "classic"))
    _add(_Entry("ant-dir", f"{classic}:AntDirDistribution", {}, "classic"))


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist_name = ep.dist.name if ep.dist is not None else "an installed package"
        key = ep.name.lower()
        if key in _registry and _registry[key].source != dist_name:
            continue  # built-ins and explicit registrations win over entry points
        _add(_Entry(ep.name, ep.value.replace(" ", ""), {}, dist_name), overwrite=True)
    _entry_points_loaded = True


def reload_entry_points() -> None:
    """Forget cached entry points and read them again (after installing a package at run time)."""
    global _entry_points_loaded
    with _lock:
        for key in [k for k, e in _registry.items() if e.source not in ("metaworld", "classic", "user")]:
            del _registry[key]
    _entry_points_loaded = False
    importlib.invalidate_caches()  # let importlib.metadata see packages installed since the last scan
    _load_entry_points()


def register_distribution(name: str, factory: Callable[..., TaskDistribution], *, overwrite: bool = False) -> None:
    """Make ``factory(seed=..., **options)`` available as ``make_distribution(name, ...)``.

    ``factory`` must be a module-level function or class: worker processes rebuild the
    distribution by importing it, so lambdas and closures are refused.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"distribution name must be a non-empty string, got {name!r}")
    path = importable_path(factory, what=f"factory for distribution {name!r}")
    _add(_Entry(name, path, {}, "user"), overwrite=overwrite)


def list_distributions() -> list[str]:
    """All registered distribution names (built-in, registered and from entry points)."""
    _load_entry_points()
    return sorted(e.name for e in _registry.values())


def _lookup(name: str) -> _Entry:
    if not isinstance(name, str):
        raise TypeError(f"distribution name must be a string, got {type(name).__name__}")
    _load_entry_points()
    entry = _registry.get(name.lower())
    if entry is None:
        names = list_distributions()
        hint = [n for n in names if n.lower().startswith(name.lower()[:4])][:8]
        more = f" (did you mean one of {hint}?)" if hint else ""
        others = sorted(e.name for e in _registry.values() if e.source not in ("metaworld", "classic"))
        registered = f", and registered ones: {others}" if others else ""
        raise UserError(
            f"unknown distribution {name!r}{more}; valid names: ML10, ML25, ML45, ML1-<env> "
            f"(e.g. ML1-reach-v3), point-nav, cheetah-vel, cheetah-dir, ant-dir{registered}; "
            f"`metarl envs list` shows all {len(names)}"
        )
    return entry


def canonical_name(name: str) -> str:
    """The registered spelling of ``name`` (names match case-insensitively)."""
    return _lookup(name).name


def make_distribution(name: str, seed: int = 0, **options: Any) -> TaskDistribution:
    """Build the distribution registered as ``name`` (case-insensitive).

    ``seed`` fixes the train/test task lists; ``options`` are passed to the factory
    (e.g. ``reward_version="v2"``, ``terminate_on_success=False`` for Meta-World).
    """
    entry = _lookup(name)
    check_int("seed", seed, 0)
    try:
        factory = resolve_importable(entry.factory)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"distribution {entry.name!r} (from {entry.source}) names factory {entry.factory}, which cannot be "
            f"imported: {exc}"
        ) from exc
    kwargs = {**entry.fixed, **options, "seed": seed}
    _check_options(entry, factory, options)
    dist = factory(**kwargs)
    if not isinstance(dist, TaskDistribution):
        raise TypeError(
            f"factory {entry.factory} for distribution {entry.name!r} returned {type(dist).__name__}; "
            "it must return a metarl.TaskDistribution"
        )
    return dist


def _check_options(entry: _Entry, factory: Callable[..., Any], options: dict[str, Any]) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = sorted(k for k, p in params.items() if k not in entry.fixed and k != "seed" and k != "self")
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(f"unknown option(s) {unknown} for distribution {entry.name!r}; valid options: {valid}")
    if "seed" not in params:
        raise TypeError(f"factory {entry.factory} for {entry.name!r} must accept a `seed` keyword argument")


def source_of(name: str) -> str:
    return _lookup(name).source


_register_builtins()
