"""Exact resume after any stop: a run stopped by SIGINT or SIGTERM during sampling or during the update
(at a point chosen by ``METARL_TEST_STOP_AT``, not by timing), then resumed, ends bitwise where an
uninterrupted run of the same length ends, for RL² and MAML-TRPO on the CPU."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metarl.run import load_checkpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ITERATIONS = 4
STOP_ITERATION = 3  # the run is stopped inside this iteration and must resume after iteration 2
COMMON = [
    "--benchmark", "point-nav", "--seed", "5", "--meta-batch", "3", "--episodes-per-task", "2",
    "--workers", "1", "--eval-every", "0", "--checkpoint-every", "1000", "--torch-threads", "1", "--no-progress",
]  # fmt: skip
_RL2 = ["--episodes-per-trial", "2", "--mlp-hidden", "16", "--gru-hidden", "16", "--epochs", "2", "--bptt-chunk", "50"]
AGENTS = {  # case -> (agent, flags)
    "rl2": ("rl2", _RL2),
    "maml-trpo": ("maml-trpo", ["--hidden", "16", "16"]),
    # the next batch sampled in a background thread during the update: a stop there cancels it
    "rl2-overlap": ("rl2", [*_RL2, "--overlap", "true"]),
}
# The collect during which the run is stopped: MAML samples before and after its inner step; with --overlap,
# iteration 1 collects its own batch and (in the background) iteration 2's, and iteration i > 1 collects i+1's.
SAMPLING_HIT = {"rl2": STOP_ITERATION, "maml-trpo": 2 * STOP_ITERATION, "rl2-overlap": STOP_ITERATION + 1}


def _cli(*args: str, stop_at: str | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("metarl")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "metarl.cli", *args]
    env = {k: v for k, v in os.environ.items() if k not in ("METARL_DEBUG", "METARL_TEST_STOP_AT")}
    if stop_at:
        env["METARL_TEST_STOP_AT"] = stop_at
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env=env, check=False,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # CI may run us with SIGINT ignored
    )  # fmt: skip


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    out = {}
    for case, (agent, flags) in AGENTS.items():
        run = tmp_path_factory.mktemp("straight") / case
        proc = _cli("train", agent, "--iterations", str(ITERATIONS), "--out", str(run), *COMMON, *flags)
        assert proc.returncode == 0, proc.stderr
        out[case] = load_checkpoint(run / "checkpoints/latest.pt")
    return out


@pytest.mark.parametrize("case", list(AGENTS))
@pytest.mark.parametrize("point", ["sampling", "update"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_stopped_run_resumes_bitwise_equal(
    tmp_path: Path, straight: dict[str, dict], case: str, point: str, sig: str
) -> None:
    run = tmp_path / "run"
    agent, agent_flags = AGENTS[case]
    hits = SAMPLING_HIT[case] if point == "sampling" else STOP_ITERATION
    flags = ["--out", str(run), *COMMON, *agent_flags]
    proc = _cli("train", agent, "--iterations", str(ITERATIONS), *flags, stop_at=f"{point}:{hits}:{sig}")
    assert proc.returncode == (130 if sig == "SIGINT" else 143), proc.stderr
    assert "Traceback" not in proc.stderr and "leaked shared_memory" not in proc.stderr, proc.stderr
    assert f"resumes after iteration {STOP_ITERATION - 1}" in proc.stderr
    stopped = load_checkpoint(run / "checkpoints/latest.pt")
    assert stopped["run"]["iteration"] == STOP_ITERATION - 1  # the boundary, not the half-done iteration
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["iter-000002.pt", "latest.pt"]

    proc = _cli("train", "--resume", str(run), "--iterations", str(ITERATIONS), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    resumed, expected = load_checkpoint(run / "checkpoints/latest.pt"), straight[case]
    assert resumed["run"] == {**expected["run"], "wall_s": resumed["run"]["wall_s"]}
    assert resumed["engine"] == expected["engine"] and resumed["task_rng"] == expected["task_rng"]
    params, want = resumed["agent"]["policy"], expected["agent"]["policy"]
    assert params.keys() == want.keys()
    different = [name for name in want if not torch.equal(params[name], want[name])]
    assert not different, f"{len(different)} of {len(want)} tensors differ from the uninterrupted run: {different}"
    assert resumed.get("lookahead") == expected.get("lookahead")


@pytest.mark.parametrize(
    "text", ["update:3", "update:0:SIGINT", "train:1:SIGINT", "update:x:SIGINT", "update:1:SIGFOO"]
)
def test_a_bad_stop_spec_names_the_format(text: str) -> None:
    from metarl.stops import _parse

    with pytest.raises(ValueError, match=r"METARL_TEST_STOP_AT.*POINT.*got '" + text + "'"):
        _parse(text)


def test_the_stop_spec_parses() -> None:
    from metarl.stops import _parse

    assert _parse("sampling:6:SIGTERM") == ("sampling", 6, signal.SIGTERM)
