"""Faults and lifetime: killed workers, failing envs, clean shutdown (close, GC, Ctrl-C, parent death)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch

from metarl.rollout import EnvError, RolloutEngine, WorkerCrashedError
from metarl.rollout.pool import PoolError
from metarl.rollout.shm import SHM_PREFIX
from metarl.testing import CountingDistribution, ElementwisePolicy

SHM = Path("/dev/shm")


def children() -> dict[int, str]:
    """Live child processes of this process (pid -> command line), without the resource tracker/forkserver."""
    out = {}
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me and fields[0] != "Z" and "resource_tracker" not in cmd and "forkserver" not in cmd:
            out[int(entry.name)] = cmd
    return out


def my_segments(pid: int | None = None) -> set[str]:
    prefix = f"{SHM_PREFIX}{pid or os.getpid()}_"
    return {p.name for p in SHM.iterdir() if p.name.startswith(prefix)}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(pred, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.mark.parametrize("host_worker", [False, True], ids=["all-processes", "hosted"])
def test_sigkilled_worker_is_restarted_and_its_trials_recollected(host_worker: bool) -> None:
    # each worker has about 1 s of work (3 tasks x 4 episodes x up to 8 steps x 10 ms), so the kill at 0.3 s
    # lands mid-collection even on a fast machine
    dist = CountingDistribution(num_families=2, tasks_per_family=3, horizon=8, lengths=(0, 5), step_delay_s=0.01)
    tasks = list(dist.tasks("train"))
    policy = ElementwisePolicy(2)
    with RolloutEngine(dist, num_workers=2, slots_per_family=1, seed=7, backend="inline") as ref_engine:
        ref = ref_engine.collect(policy, tasks, episodes_per_task=4, episodes_per_trial=2)
    with RolloutEngine(dist, num_workers=2, slots_per_family=1, seed=7, host_worker=host_worker) as engine:
        pids = engine.worker_pids()
        assert len(pids) == (1 if host_worker else 2)
        victim = pids[-1]
        timer = threading.Timer(0.3, os.kill, (victim, signal.SIGKILL))
        timer.start()
        traj = engine.collect(policy, tasks, episodes_per_task=4, episodes_per_trial=2)
        timer.join()
        assert engine.pool.restarts == 1 and not alive(victim)
        assert victim not in engine.worker_pids() and len(engine.worker_pids()) == len(pids)
        for name in (
            "obs",
            "actions",
            "rewards",
            "terminated",
            "truncated",
            "success",
            "valid",
            "final_obs",
            "lengths",
        ):
            assert torch.equal(getattr(traj, name), getattr(ref, name)), name
        # and the restarted pool keeps working
        again = engine.collect(policy, tasks[:2], episodes_per_task=1)
        assert again.valid.any()


def test_repeated_crash_gives_up_naming_task_slot_and_cause() -> None:
    dist = CountingDistribution(num_families=1, tasks_per_family=2, horizon=6, kill_value=1.0, kill_step=3)
    with RolloutEngine(dist, num_workers=1, slots_per_family=2, max_restarts=2) as engine:
        with pytest.raises(
            WorkerCrashedError,
            match=r"died 3 times while running task counting/train/count-0/1 \(episode 0, slot \d\); giving up "
            r"after max_restarts=2; last cause: killed by signal SIGKILL",
        ):
            engine.collect(ElementwisePolicy(2), list(dist.tasks("train")), episodes_per_task=1)
        assert engine.pool.restarts == 2


def test_env_exception_comes_back_with_task_and_traceback() -> None:
    dist = CountingDistribution(num_families=2, tasks_per_family=2, horizon=6, fail_value=11.0, fail_step=2)
    tasks = list(dist.tasks("train"))
    with RolloutEngine(dist, num_workers=2, slots_per_family=1) as engine:
        expected = (
            r"(?s)env of task counting/train/count-1/3 \(slot \d, family 'count-1'.*"
            r"raised during step.*RuntimeError: CountingEnv failure injected at value=11.0 step=2"
        )
        with pytest.raises(EnvError, match=expected):
            engine.collect(ElementwisePolicy(2), tasks, episodes_per_task=2)
        # the pool survives: other tasks still run
        traj = engine.collect(ElementwisePolicy(2), [tasks[0], tasks[2]], episodes_per_task=1)
        assert traj.lengths.tolist() == [[6], [6]]


def test_worker_that_cannot_start_reports_why() -> None:
    dist = CountingDistribution(num_families=1, make_env_error="no simulator here")
    with pytest.raises(PoolError, match=r"(?s)worker 0 .*did not start.*RuntimeError: no simulator here"):
        RolloutEngine(dist, num_workers=1, slots_per_family=1)


def test_close_and_gc_leave_no_processes_or_shared_memory() -> None:
    dist = CountingDistribution()
    before_children = set(children())
    engine = RolloutEngine(dist, num_workers=2, slots_per_family=1, host_worker=False)
    pids = engine.worker_pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    assert set(pids) <= set(children())
    segments = my_segments()
    assert engine.pool.shm_name in segments
    engine.collect(ElementwisePolicy(2), list(dist.tasks("train"))[:2], 1)
    engine.close()
    engine.close()  # idempotent
    assert not any(alive(p) for p in pids)
    assert engine.pool.shm_name not in my_segments()
    assert set(children()) <= before_children
    # garbage collection without close()
    engine = RolloutEngine(dist, num_workers=2, slots_per_family=1)
    assert engine.host_worker and len(engine.worker_pids()) == 1
    pids, name = engine.worker_pids(), engine.pool.shm_name
    del engine
    gc.collect()
    assert wait_until(lambda: not any(alive(p) for p in pids), 10)
    assert name not in my_segments()
    assert set(children()) <= before_children


DRIVER = textwrap.dedent(
    """
    import os, sys, time
    from metarl.rollout import RolloutEngine
    from metarl.testing import CountingDistribution, ElementwisePolicy

    if __name__ == "__main__":
        dist = CountingDistribution(horizon=1000, step_delay_s=0.001)
        engine = RolloutEngine(dist, num_workers=2, slots_per_family=1)
        print(" ".join(map(str, engine.worker_pids())), engine.pool.shm_name, flush=True)
        if sys.argv[1] == "collect":
            with engine:
                engine.collect(ElementwisePolicy(2), list(dist.tasks("train")), episodes_per_task=100)
        else:
            time.sleep(60)
    """
)


def default_sigint() -> None:
    """In the child before exec: SIGINT back to its default, so Python installs KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_driver(tmp_path: Path, mode: str) -> tuple[subprocess.Popen[str], list[int], str]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen(
        [sys.executable, str(script), mode],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=default_sigint,  # a shell's background job inherits SIGINT ignored; Ctrl-C must act here
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().split()
    assert line, "driver did not start"
    return proc, [int(p) for p in line[:-1]], line[-1]


def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    proc, pids, shm_name = _start_driver(tmp_path, "sleep")
    assert all(alive(p) for p in pids) and (SHM / shm_name).exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.stdout is not None
    proc.stdout.close()
    assert wait_until(lambda: not any(alive(p) for p in pids), 15), "orphaned workers"
    # multiprocessing's resource tracker unlinks the segment once the driver and its workers are gone
    assert wait_until(lambda: not (SHM / shm_name).exists(), 15), "shared memory left behind"


def test_ctrl_c_during_collect_shuts_down_cleanly(tmp_path: Path) -> None:
    proc, pids, shm_name = _start_driver(tmp_path, "collect")
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # leave no orphan behind a failing test
        raise
    assert proc.returncode != 0
    assert not any(alive(p) for p in pids)
    assert not (SHM / shm_name).exists()
