"""On-disk cache of task lists, for distributions whose task lists are slow to build.

Building Meta-World's ``ML45`` benchmark takes ~23 s; its task list never changes for a given
seed and package version, so it is built once and kept on disk.  The cache is generic: any
distribution can call :func:`load_or_build_tasks` with a key that pins everything its tasks
depend on.

Layout and format
    Files live in ``$METARL_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/metarl`` or
    ``~/.cache/metarl``, under ``tasks/``, one JSON file per key::

        {"format": "metarl-task-cache", "version": 1, "key": {...},
         "checksum": "<sha256 of the canonical JSON of splits>",
         "splits": {"train": [Task.to_json(), ...], "test": [...]}}

    Files are written atomically (a temporary file in the same folder, then ``os.replace``).  The
    file format is plain JSON, never pickle; task parameters that are bytes are base64 strings.

Trust
    A file that cannot be read, is not valid JSON, has another format version, another key, a
    checksum that does not match its content, or tasks the caller's ``validate`` rejects is
    never used: a :class:`TaskCacheWarning` says so and the task lists are rebuilt and rewritten.

Set ``METARL_NO_CACHE=1`` to neither read nor write the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from metarl.errors import UserError
from metarl.tasks import SPLITS, Split, Task

CACHE_FORMAT = "metarl-task-cache"
CACHE_VERSION = 1
"""Bump when the file layout changes; old files are then rebuilt."""

ENV_CACHE_DIR = "METARL_CACHE_DIR"
ENV_NO_CACHE = "METARL_NO_CACHE"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

KeyValue: TypeAlias = "str | int | bool | None"
TaskLists: TypeAlias = "dict[Split, tuple[Task, ...]]"


class TaskCacheWarning(UserWarning):
    """A cache file was unusable (corrupt, truncated, stale or mismatched) and was rebuilt, or could not be written."""


def cache_dir() -> Path:
    """The metarl cache folder: ``$METARL_CACHE_DIR``, else ``$XDG_CACHE_HOME/metarl``, else ``~/.cache/metarl``."""
    explicit = os.environ.get(ENV_CACHE_DIR)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "metarl"


def cache_enabled() -> bool:
    """False when ``METARL_NO_CACHE`` is set to a true value (``1``, ``true``, ``yes``, ``on``)."""
    value = os.environ.get(ENV_NO_CACHE, "").strip().lower()
    if value in _TRUE:
        return False
    if value in _FALSE:
        return True
    raise UserError(
        f"{ENV_NO_CACHE}={os.environ[ENV_NO_CACHE]!r} is not understood; "
        f"use one of {list(_TRUE)} to disable the task cache or one of {[v for v in _FALSE if v]} to keep it"
    )


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def _check_key(key: Mapping[str, KeyValue]) -> dict[str, KeyValue]:
    out: dict[str, KeyValue] = {}
    for k, v in key.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, (str, int, bool))):
            raise TypeError(f"cache key entries must be str -> str | int | bool | None, got {k!r}: {v!r}")
        out[k] = v
    return out


def cache_path(label: str, key: Mapping[str, KeyValue]) -> Path:
    """Where the task lists for ``key`` are cached; ``label`` only makes the file name readable."""
    full = {**_check_key(key), "cache_format": CACHE_FORMAT, "cache_version": CACHE_VERSION}
    digest = hashlib.sha256(_canonical(full).encode()).hexdigest()[:24]
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("._") or "tasks"
    return cache_dir() / "tasks" / f"{safe}-{digest}.json"


def _checksum(splits_json: Any) -> str:
    return hashlib.sha256(_canonical(splits_json).encode()).hexdigest()


def _encode(key: Mapping[str, KeyValue], tasks: Mapping[Split, Sequence[Task]]) -> str:
    splits = {split: [t.to_json() for t in tasks[split]] for split in SPLITS}
    record = {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "key": dict(key),
        "checksum": _checksum(splits),
        "splits": splits,
    }
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def _decode(text: str, key: Mapping[str, KeyValue]) -> TaskLists:
    """Parse a cache file, raising ValueError on anything unexpected."""
    record = json.loads(text)
    if not isinstance(record, dict):
        raise UserError(f"top level is a {type(record).__name__}, not an object")
    if record.get("format") != CACHE_FORMAT or record.get("version") != CACHE_VERSION:
        raise UserError(
            f"format {record.get('format')!r} version {record.get('version')!r}, "
            f"expected {CACHE_FORMAT!r} version {CACHE_VERSION}"
        )
    if record.get("key") != dict(key):
        raise UserError(f"it was written for key {record.get('key')!r}, not {dict(key)!r}")
    splits = record.get("splits")
    if not isinstance(splits, dict) or set(splits) != set(SPLITS):
        raise UserError(f"'splits' must map exactly {list(SPLITS)} to task lists")
    if record.get("checksum") != _checksum(splits):
        raise UserError("checksum does not match the content")
    out: TaskLists = {}
    for split in SPLITS:
        records = splits[split]
        if not isinstance(records, list):
            raise UserError(f"split {split!r} is not a list")
        tasks = tuple(Task.from_json(r) for r in records)
        for task in tasks:
            if task.split != split:
                raise UserError(f"task {task.id} is stored under split {split!r}")
        out[split] = tasks
    return out


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def load_or_build_tasks(
    label: str,
    key: Mapping[str, KeyValue],
    build: Callable[[], Mapping[Split, Sequence[Task]]],
    validate: Callable[[TaskLists], None] | None = None,
) -> TaskLists:
    """The ``{"train": ..., "test": ...}`` task lists for ``key``: from the cache, else from ``build()``.

    Args:
        label: readable prefix of the cache file name (e.g. ``"metaworld-ML45-seed0"``).
        key: everything the task lists depend on (benchmark, seed, package versions, the
            caller's own format version). Different keys never share a file.
        build: builds both task lists (slow); called on a cache miss, an unusable cache file, or
            when the cache is disabled with ``METARL_NO_CACHE=1``.
        validate: checks task lists and raises ValueError if they are wrong. A cache file whose
            tasks fail it is rebuilt; freshly built lists that fail it raise.

    Returns:
        ``{"train": tuple_of_tasks, "test": tuple_of_tasks}``.
    """
    key = _check_key(key)
    if not cache_enabled():
        return _build_checked(build, validate)
    path = cache_path(label, key)
    try:
        raw: bytes | None = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raw = None
    except OSError as exc:
        warnings.warn(f"task cache {path} cannot be read ({exc}); rebuilding it", TaskCacheWarning, stacklevel=2)
        raw = None
    if raw is not None:
        try:
            tasks = _decode(raw.decode("utf-8"), key)
            if validate is not None:
                validate(tasks)
            return tasks
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            # UnicodeDecodeError, json.JSONDecodeError and binascii.Error are ValueErrors.
            warnings.warn(f"task cache {path} is unusable ({exc}); rebuilding it", TaskCacheWarning, stacklevel=2)
    tasks = _build_checked(build, validate)
    try:
        _write_atomic(path, _encode(key, tasks))
    except OSError as exc:
        warnings.warn(
            f"cannot write task cache {path} ({exc}); continuing without it (set {ENV_CACHE_DIR} to a writable "
            f"folder, or {ENV_NO_CACHE}=1 to silence this)",
            TaskCacheWarning,
            stacklevel=2,
        )
    return tasks


def _build_checked(
    build: Callable[[], Mapping[Split, Sequence[Task]]], validate: Callable[[TaskLists], None] | None
) -> TaskLists:
    built = build()
    if set(built) != set(SPLITS):
        raise UserError(f"task builder returned splits {sorted(built)}, expected {list(SPLITS)}")
    tasks: TaskLists = {split: tuple(built[split]) for split in SPLITS}
    if validate is not None:
        validate(tasks)
    return tasks
