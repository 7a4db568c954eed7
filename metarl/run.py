"""Run directories: resolved config, run metadata, progress.csv, TensorBoard events, atomic checkpoints.

Layout of ``RUN_DIR``::

    config.json          the resolved configuration (train + agent)
    meta.json            command line, package versions, git commit, host, start times
    progress.csv         one row per iteration (also in TensorBoard)
    events.out.tfevents.*
    checkpoints/latest.pt (+ iter-NNNNNN.pt)   written atomically: temp file, then rename
    eval/latest.json, eval/iter-NNNNNN.json, eval/final.json

Loading a run (:func:`read_run_config`, :func:`make_run_distribution`, :func:`build_agent`, :func:`load`)
lives here too, so evaluation reads run directories without importing the training loop.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from metarl.errors import UserError

if TYPE_CHECKING:
    from metarl.agent import MetaLearner
    from metarl.config import TrainConfig
    from metarl.tasks import TaskDistribution

CONFIG_FILE = "config.json"
META_FILE = "meta.json"
PROGRESS_FILE = "progress.csv"
CHECKPOINT_DIR = "checkpoints"
LATEST_CHECKPOINT = "latest.pt"
EVAL_DIR = "eval"
LATEST_EVAL = "latest.json"  # the last periodic meta-test of a training run
FINAL_EVAL = "final.json"  # `metarl eval`: every held-out task of the final checkpoint
NO_FEEDBACK_EVAL = "no-feedback.json"  # `metarl eval --no-feedback`: the control beside final.json, never over it
CHECKPOINT_FORMAT = 1


class RunDirError(UserError):
    """A run directory that cannot be used as asked (exists, is not a run, is damaged)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def is_run_dir(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / META_FILE).is_file()


def prepare_run_dir(path: Path, *, resume: bool, overwrite: bool) -> Path:
    """Check ``path`` for a new run (refuses an existing run unless ``overwrite``) or for ``resume``."""
    path = Path(path)
    if resume:
        if not path.exists():
            raise RunDirError(f"cannot resume {str(path)!r}: no such directory")
        if not is_run_dir(path):
            raise RunDirError(f"cannot resume {str(path)!r}: it is not a metarl run directory (no {CONFIG_FILE})")
        if not (path / CHECKPOINT_DIR / LATEST_CHECKPOINT).is_file():
            raise RunDirError(
                f"cannot resume {str(path)!r}: it has no checkpoint yet ({CHECKPOINT_DIR}/{LATEST_CHECKPOINT})"
            )
        return path
    if path.exists() and any(path.iterdir()):
        if is_run_dir(path) and not overwrite:
            raise RunDirError(
                f"{str(path)!r} already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        if not is_run_dir(path) and not overwrite:
            raise RunDirError(f"{str(path)!r} exists and is not empty; choose another --out or pass --overwrite")
        if is_run_dir(path):  # --overwrite replaces the old run whole: no stale checkpoints, events or evals
            shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_commit() -> str | None:
    """The commit of the metarl source tree, when it is a git checkout."""
    src = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def run_metadata() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in ("metarl", "torch", "gymnasium", "metaworld", "mujoco", "numpy", "stable-baselines3"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    command = list(sys.argv)
    if command and Path(command[0]).name == "metarl":  # the entry point, not where this machine installed it
        command[0] = "metarl"
    return {
        "command": command,
        "versions": versions,
        "python": platform.python_version(),
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.cuda.is_available(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def checkpoint_bytes(state: Mapping[str, Any]) -> bytes:
    """``state`` (tensors, numbers, strings, lists and dicts of them) serialised as a checkpoint file: a copy
    that later in-place updates of the live tensors cannot reach."""
    buf = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **state}, buf)
    return buf.getvalue()


def save_checkpoint(run_dir: Path, state: Mapping[str, Any], iteration: int, keep_every: bool = True) -> Path:
    """Save ``state`` atomically as ``latest.pt`` (and ``iter-N.pt``)."""
    return write_checkpoint(run_dir, checkpoint_bytes(state), iteration, keep_every)


def write_checkpoint(run_dir: Path, data: bytes, iteration: int, keep_every: bool = True) -> Path:
    """Write serialised checkpoint ``data`` (:func:`checkpoint_bytes`) atomically."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    latest = ckpt_dir / LATEST_CHECKPOINT
    atomic_write_bytes(latest, data)
    if keep_every:
        atomic_write_bytes(ckpt_dir / f"iter-{iteration:06d}.pt", data)
    return latest


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``), with a clear error if it is damaged."""
    path = Path(path)
    if not path.is_file():
        raise RunDirError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage, unsafe pickle
        raise RunDirError(
            f"checkpoint {str(path)!r} is damaged or not a metarl checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunDirError(f"checkpoint {str(path)!r} is not a metarl checkpoint of format {CHECKPOINT_FORMAT}")
    return state


class ProgressLog:
    """``progress.csv`` (one row per iteration; columns fixed by the first row) plus TensorBoard."""

    def __init__(
        self,
        run_dir: Path,
        *,
        keep_until_iteration: int | None = None,
        purge_step: int | None = None,
        tensorboard: bool = True,
    ) -> None:
        self.path = Path(run_dir) / PROGRESS_FILE
        self._columns: list[str] | None = None
        if keep_until_iteration is not None and self.path.exists():
            self._truncate(keep_until_iteration)
        elif keep_until_iteration is None and self.path.exists():
            self.path.unlink()
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(
                log_dir=str(run_dir), purge_step=purge_step if keep_until_iteration is not None else None
            )

    def _truncate(self, iteration: int) -> None:
        """On resume, drop rows written after the checkpoint we resume from."""
        with self.path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            return
        self._columns = list(rows[0].keys())
        kept = [r for r in rows if int(float(r["iteration"])) <= iteration]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self._columns)
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_bytes(self.path, buf.getvalue().encode())

    def log(self, iteration: int, row: Mapping[str, float], step: int) -> None:
        if self._columns is None:
            self._columns = ["iteration", *sorted(k for k in row if k != "iteration")]
            new = not self.path.exists()
        else:
            new = False
        with self.path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self._columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({"iteration": iteration, **row})
        if self._writer is not None:
            for key, value in row.items():
                if "/" in key:
                    self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# -- loading a run -------------------------------------------------------------------------------


def read_run_config(run_dir: Path) -> tuple[TrainConfig, Any, str | None]:
    """``(train config, agent config, config name)`` of ``run_dir``, from its ``config.json``."""
    from metarl.agents import agent_config_class
    from metarl.config import TrainConfig, from_dict

    try:
        path = Path(run_dir) / CONFIG_FILE
        data = json.loads(path.read_text())
        train_cfg = from_dict(TrainConfig, data["train"], where=str(path))
        agent_cfg = from_dict(agent_config_class(train_cfg.agent), data["agent"], where=str(path))
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise RunDirError(f"{str(run_dir)!r} has an unreadable {CONFIG_FILE}: {exc}") from exc
    return train_cfg, agent_cfg, data.get("config_name")


def make_run_distribution(cfg: TrainConfig) -> TaskDistribution:
    """The run's task distribution, with the options its config sets."""
    from metarl.envs import make_distribution

    options: dict[str, Any] = {}
    if cfg.max_episode_steps is not None:
        options["max_episode_steps"] = cfg.max_episode_steps
    if cfg.env_success_reward:
        options["success_reward"] = cfg.env_success_reward
    return make_distribution(cfg.benchmark, seed=cfg.seed, **options)


def build_agent(train_cfg: TrainConfig, agent_cfg: Any, dist: TaskDistribution, device: torch.device) -> MetaLearner:
    """A freshly initialised agent of the run's config (the registry's ``build``)."""
    from metarl.agents import agent_module

    module = agent_module(train_cfg.agent)
    agent: MetaLearner = module.build(dist.observation_space, dist.action_space, agent_cfg, train_cfg, device)
    return agent


def load(run_dir: str | Path, checkpoint: str | Path | None = None) -> MetaLearner:
    """The trained agent of ``run_dir`` (its latest checkpoint, or ``checkpoint``), on the CPU."""
    run_dir = Path(run_dir)
    if not is_run_dir(run_dir):
        raise RunDirError(f"{str(run_dir)!r} is not a metarl run directory (no {CONFIG_FILE})")
    train_cfg, agent_cfg, _ = read_run_config(run_dir)
    state = load_checkpoint(Path(checkpoint) if checkpoint else run_dir / CHECKPOINT_DIR / LATEST_CHECKPOINT)
    if state.get("agent_name") != train_cfg.agent:
        raise RunDirError(
            f"checkpoint is of agent {state.get('agent_name')!r}, but {str(run_dir)!r} is a {train_cfg.agent!r} run"
        )
    agent = build_agent(train_cfg, agent_cfg, make_run_distribution(train_cfg), torch.device("cpu"))
    agent.load_state_dict(agent_state(state))
    return agent


def agent_state(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The agent's part of a run checkpoint, its count of training env steps set to the run's.  The two agree in
    checkpoints written by this code; older ones lack the agent's count, hold 0 (RL² from before its log σ
    schedule), or hold less than the run's (resumed before the count was carried over): the run's count wins."""
    state = dict(checkpoint["agent"])
    state["env_steps"] = int(checkpoint["run"]["env_steps"])
    return state
