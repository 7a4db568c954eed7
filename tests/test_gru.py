"""The fused GRU of RL²'s CPU update (``metarl.agents.gru``): the same function and gradients as ``nn.GRU``,
through both of its time loops (Python, and the compiled one where it builds; ``loop`` below).

Oracle: ``nn.GRU`` itself.  In float32 the outputs and every gradient (input, h0, both weights, both biases)
agree to a relative 1e-5 (rounding: the two sum the same terms in different orders).  Under bfloat16 autocast
each gradient agrees with float32's to a cosine >= 0.99, the tolerance tests/test_rl2_bf16.py states for
the whole update.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _helpers import refused_train_setting
from torch import nn

import metarl.agents.gru as gru_module
from metarl.agents.gru import gru_sequence
from metarl.errors import UserError
from metarl.native import native_gru_setting


@pytest.fixture(params=["python", "compiled"])
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test through the Python time loop, then through the compiled one (skipped where it cannot build:
    no compiler or ninja, not x86 with AVX2)."""
    if request.param == "compiled":
        if gru_module.native_gru() is None:
            pytest.skip("the compiled GRU loop does not build here")
    else:
        monkeypatch.setattr(gru_module, "_native_tried", True)
        monkeypatch.setattr(gru_module, "_native_module", None)
    return str(request.param)


def _case(steps: int, batch: int, inp: int, hidden: int, seed: int = 0) -> tuple[nn.GRU, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    gru = nn.GRU(inp, hidden)
    with torch.no_grad():  # non-zero biases, so that each bias's gradient is checked through its own path
        for b in (gru.bias_ih_l0, gru.bias_hh_l0):
            b.uniform_(-0.5, 0.5)
    x = torch.randn(steps, batch, inp) * 2
    h0 = torch.randn(batch, hidden) * 0.5
    return gru, x, h0


def _grads(gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor, dout: torch.Tensor, fused: bool, bf16: bool = False):
    gru.zero_grad(set_to_none=True)
    x, h0 = x.clone().requires_grad_(), h0.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = gru_sequence(gru, x, h0) if fused else gru(x, h0.unsqueeze(0))[0]
    (out.float() * dout).sum().backward()
    grads = {name: p.grad.clone() for name, p in gru.named_parameters()}
    return out.detach().float(), grads | {"input": x.grad.clone(), "h0": h0.grad.clone()}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("shape", [(1, 3, 5, 4), (37, 6, 11, 16), (250, 20, 256, 256)])
def test_float32_matches_nn_gru_outputs_and_every_gradient(shape: tuple[int, int, int, int], loop: str) -> None:
    gru, x, h0 = _case(*shape)
    dout = torch.randn(shape[0], shape[1], shape[3])
    out_ref, ref = _grads(gru, x, h0, dout, fused=False)
    out, got = _grads(gru, x, h0, dout, fused=True)
    assert out.dtype == torch.float32 and out.shape == out_ref.shape
    assert _rel(out, out_ref) < 1e-5
    assert ref.keys() == got.keys() and len(got) == 6
    for name in ref:
        assert got[name].shape == ref[name].shape, name
        assert _rel(got[name], ref[name]) < 1e-5, (name, _rel(got[name], ref[name]))


def test_a_wrong_gate_derivative_would_be_caught() -> None:
    """The oracle is sharp enough: the same comparison fails when the reset gate's bias gradient is perturbed
    by far less than a derivative error would move it."""
    gru, x, h0 = _case(37, 6, 11, 16)
    dout = torch.randn(37, 6, 16)
    _, ref = _grads(gru, x, h0, dout, fused=False)
    _, got = _grads(gru, x, h0, dout, fused=True)
    bad = got["bias_hh_l0"].clone()
    bad[:16] *= 1.01
    assert _rel(bad, ref["bias_hh_l0"]) > 1e-5


def test_bf16_products_agree_with_float32_and_return_float32(loop: str) -> None:
    gru, x, h0 = _case(250, 20, 256, 256)
    dout = torch.randn(250, 20, 256)
    out32, g32 = _grads(gru, x, h0, dout, fused=False)
    out16, g16 = _grads(gru, x, h0, dout, fused=True, bf16=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert gru_sequence(gru, x, h0).dtype == torch.float32  # the state and gates stay float32
    assert _rel(out16, out32) < 0.02
    for name, g in g32.items():
        assert g16[name].dtype == torch.float32 and torch.isfinite(g16[name]).all(), name
        assert not torch.equal(g16[name], g), name  # it really ran in bfloat16
        cosine = torch.nn.functional.cosine_similarity(g16[name].flatten(), g.flatten(), dim=0)
        assert cosine >= 0.99, (name, float(cosine))


def test_no_grad_forward_and_the_final_state_match(loop: str) -> None:
    gru, x, h0 = _case(40, 4, 9, 16)
    with torch.no_grad():
        out = gru_sequence(gru, x, h0)
        ref, h_last = gru(x, h0.unsqueeze(0))
    assert _rel(out, ref) < 1e-5 and _rel(out[-1], h_last[0]) < 1e-5


@pytest.mark.parametrize("kwargs", [{"num_layers": 2}, {"bidirectional": True}, {"batch_first": True}, {"bias": False}])
def test_other_gru_layouts_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"one-layer, unidirectional, time-major nn\.GRU with biases"):
        gru_sequence(nn.GRU(3, 4, **kwargs), torch.zeros(2, 1, 3), torch.zeros(1, 4))


def test_the_compiled_and_python_loops_agree_in_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under bfloat16 autocast the two loops differ only by where they round (the compiled one adds each gate's
    two terms in float32, the Python one in bfloat16): outputs within 1%, every gradient at a cosine >= 0.999."""
    if gru_module.native_gru() is None:
        pytest.skip("the compiled GRU loop does not build here")
    gru, x, h0 = _case(60, 8, 32, 64)
    dout = torch.randn(60, 8, 64)
    out_c, g_c = _grads(gru, x, h0, dout, fused=True, bf16=True)
    monkeypatch.setattr(gru_module, "_native_module", None)
    out_p, g_p = _grads(gru, x, h0, dout, fused=True, bf16=True)
    assert _rel(out_c, out_p) < 0.01
    for name, g in g_p.items():
        assert float(torch.nn.functional.cosine_similarity(g_c[name].flatten(), g.flatten(), dim=0)) >= 0.999, name


def test_a_failed_build_warns_once_and_the_python_loop_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.cpp_extension as cpp_extension

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Ninja is required to load C++ extensions")

    monkeypatch.setattr(gru_module, "_native_tried", False)
    monkeypatch.setattr(gru_module, "_native_module", None)
    monkeypatch.setattr(cpp_extension, "load", broken)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(gru_module.sys, "platform", "linux")
    monkeypatch.delenv("METARL_NATIVE_GRU", raising=False)
    with pytest.warns(RuntimeWarning, match=r"did not build \(RuntimeError: Ninja is required.*Python loop"):
        assert gru_module.native_gru() is None
    assert gru_module.native_gru() is None  # tried once: no second warning, no second build
    gru, x, h0 = _case(5, 2, 3, 8)
    with torch.no_grad():
        assert _rel(gru_sequence(gru, x, h0), gru(x, h0.unsqueeze(0))[0]) < 1e-5


def _fresh_build(monkeypatch: pytest.MonkeyPatch, build_dir: Path, load: object) -> None:
    """``native_gru`` about to build afresh into ``build_dir`` with ``load`` as torch's builder, on any host."""
    import torch.utils.cpp_extension as cpp_extension

    monkeypatch.setattr(gru_module, "_native_tried", False)
    monkeypatch.setattr(gru_module, "_native_module", None)
    monkeypatch.setattr(gru_module, "_build_directory", lambda name: build_dir)
    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(gru_module.sys, "platform", "linux")
    monkeypatch.delenv("METARL_NATIVE_GRU", raising=False)


def test_a_stale_build_lock_times_out_with_one_warning_and_the_python_loop_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """torch's builder waits without limit while its build directory holds a ``lock`` file (a build killed half-way
    leaves one); metarl waits until the lock is ``METARL_GRU_BUILD_TIMEOUT`` seconds old, warns once and runs the
    Python loop."""
    import time

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a locked build must not reach torch's builder, which would wait forever")

    start = time.monotonic()  # the timeout counts the lock's age, from here
    (tmp_path / "lock").touch()
    _fresh_build(monkeypatch, tmp_path, never)
    monkeypatch.setenv("METARL_GRU_BUILD_TIMEOUT", "0.3")
    with pytest.warns(RuntimeWarning, match=r"locked for 0\.3 s .*Python loop.*delete .*lock") as record:
        assert gru_module.native_gru() is None
    assert 0.28 <= time.monotonic() - start < 10 and len(record) == 1  # 0.02 s: file-time granularity
    assert gru_module.native_gru() is None  # tried once: no second wait
    gru, x, h0 = _case(5, 2, 3, 8)
    with torch.no_grad():
        assert _rel(gru_sequence(gru, x, h0), gru(x, h0.unsqueeze(0))[0]) < 1e-5


def test_a_lock_older_than_the_timeout_falls_back_at_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The timeout counts the lock's age: a process arriving after a stale lock has outlived it does not wait again
    (each RL² process of a test suite would otherwise lose the whole timeout to one killed build)."""
    import os
    import time

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("a locked build must not reach torch's builder, which would wait forever")

    lock = tmp_path / "lock"
    lock.touch()
    old = time.time() - 1000
    os.utime(lock, (old, old))
    _fresh_build(monkeypatch, tmp_path, never)
    monkeypatch.setenv("METARL_GRU_BUILD_TIMEOUT", "600")
    start = time.monotonic()
    with pytest.warns(RuntimeWarning, match=r"locked for 600 s .*delete .*lock"):
        assert gru_module.native_gru() is None
    assert time.monotonic() - start < 5


def test_a_lock_released_within_the_timeout_lets_the_build_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A build that finishes while we wait (its lock removed) is waited for, not skipped."""
    import threading
    import warnings

    built = object()
    calls: list[str] = []

    def load(*, name: str, **kwargs: object) -> object:
        calls.append(name)
        return built

    lock = tmp_path / "lock"
    lock.touch()
    _fresh_build(monkeypatch, tmp_path, load)
    monkeypatch.setenv("METARL_GRU_BUILD_TIMEOUT", "30")
    threading.Timer(0.3, lock.unlink).start()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert gru_module.native_gru() is built
    assert len(calls) == 1 and calls[0].startswith("metarl_gru_cpu_")


@pytest.mark.parametrize("bad", ["soon", "-1", "nan"])
def test_a_bad_build_timeout_is_one_line(monkeypatch: pytest.MonkeyPatch, bad: str) -> None:
    monkeypatch.setenv("METARL_GRU_BUILD_TIMEOUT", bad)
    with pytest.raises(UserError, match=r"METARL_GRU_BUILD_TIMEOUT must be a non-negative number of seconds, got"):
        gru_module.build_timeout_s()
    monkeypatch.delenv("METARL_GRU_BUILD_TIMEOUT")
    assert gru_module.build_timeout_s() == gru_module.DEFAULT_BUILD_TIMEOUT_S


@pytest.mark.parametrize(("setting", "expected"), [("0", False), ("1", True)])
def test_the_setting_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, setting: str, expected: bool
) -> None:
    monkeypatch.setenv("METARL_NATIVE_GRU", setting)
    assert native_gru_setting() is expected


def test_a_bad_setting_is_one_line_naming_what_is_valid(tmp_path: Path) -> None:
    last = refused_train_setting(tmp_path, "METARL_NATIVE_GRU", "yes")
    assert last.endswith(
        "METARL_NATIVE_GRU must be 0 (the Python loop) or 1 (the compiled loop, the default), got 'yes'"
    )
