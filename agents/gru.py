"""A one-layer GRU over a whole sequence for the CPU update, with a hand-derived backward.

``nn.GRU`` on the CPU runs as a chain of per-step operators that autograd records and replays backward, with a
small product per step for the recurrent weight's gradient.  RL²'s update runs a 250-step chunk of 20 trials per
Adam step, so each product is 20 rows wide and the calls around it cost as much as the arithmetic.
:func:`gru_sequence` computes the same function as ``nn.GRU`` (PyTorch's gate order and equations) in one
:class:`torch.autograd.Function`:

- forward: the input projection as one product over all steps; per step one product with the recurrent weight
  and five element-wise calls (six under autocast: the state's cast), written into buffers allocated once per call;
- backward: every gate's local derivative depends only on the forward's values, so they are computed once over
  all steps (a few passes over [C, B, G] arrays); the step loop then carries the state's gradient with one add,
  one multiply, one product and one ``addcmul`` per step; the recurrent weight's gradient is one product over
  all steps.

Under CPU bfloat16 autocast the products run in bfloat16 (the recurrent weight cast once per call, not per step)
while the state and the gates stay float32; the gates' gradients are rounded to bfloat16 for the products, as
autocast rounds every product's operands.  Without autocast everything is float32 and matches ``nn.GRU`` to
rounding (``tests/test_gru.py``).  ``benchmarks/dev/gru_backward.py`` measures both against ``nn.GRU``, with and without
:func:`metarl.allocator.keep_freed_memory` (the batched passes touch a few MB each, fresh pages without it).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metarl.errors import UserError
from metarl.native import native_gru_setting

_SOURCE = Path(__file__).with_name("csrc") / "gru_cpu.cpp"
_native_module: Any = None
_native_tried = False

BUILD_TIMEOUT_ENV = "METARL_GRU_BUILD_TIMEOUT"
"""Seconds a build waits for another build's lock before the Python loop runs instead."""
DEFAULT_BUILD_TIMEOUT_S = 600.0
"""The wait without ``METARL_GRU_BUILD_TIMEOUT``: a real build takes about 20 s, so a lock held this long is stale."""


# -- private torch entry points: every use of them is here ----------------------------------------
# The compiled loop leans on four things torch does not promise to keep; each is wrapped below so a torch upgrade
# that moves one breaks one function, and each failure falls back to the Python loop (the same function):
# - ``torch.utils.cpp_extension._get_build_directory``: where the extension builder keeps a build (its cache);
# - the ``lock`` file the builder creates in that directory while it builds (``_jit_compile``'s ``FileBaton``): it
#   waits without limit while the file exists, so a build killed half-way blocks every later one;
# - ``torch.ops.mkldnn._reorder_linear_weight``: the recurrent weight reordered once for oneDNN's bfloat16 product;
# - ``mkldnn::_linear_pointwise``, looked up by name in ``csrc/gru_cpu.cpp``: that product (the pair torch.compile's
#   CPU backend uses for frozen weights), checked against ``addmm`` once by :func:`_reordered_weights`.

_BUILD_LOCK = "lock"


def _build_directory(name: str) -> Path | None:
    """torch's build directory for the extension ``name`` (created if missing), or None where torch lacks it."""
    try:
        from torch.utils.cpp_extension import _get_build_directory

        return Path(_get_build_directory(name, verbose=False))
    except (ImportError, OSError, RuntimeError):
        return None


def _reorder_linear_weight(weight: torch.Tensor, batch: int) -> torch.Tensor:
    """``weight`` reordered for oneDNN's product with ``batch`` rows (``mkldnn::_linear_pointwise`` reads it)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight, batch)


# ---------------------------------------------------------------------------------------------


def build_timeout_s() -> float:
    """``METARL_GRU_BUILD_TIMEOUT`` in seconds (default :data:`DEFAULT_BUILD_TIMEOUT_S`)."""
    text = os.environ.get(BUILD_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_BUILD_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise UserError(f"{BUILD_TIMEOUT_ENV} must be a non-negative number of seconds, got {text!r}")
    return value


def _lock_released(build_dir: Path, timeout_s: float) -> bool:
    """Wait for no build to hold ``build_dir``'s lock; False once the lock is ``timeout_s`` old.

    The limit is the lock's age, not this process's wait: a lock left by a build killed half-way then costs one
    timeout in all, and every later process falls back at once, instead of each waiting the whole timeout again.
    """
    lock = build_dir / _BUILD_LOCK
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return True
        if age >= timeout_s:
            return False
        time.sleep(min(0.1, max(timeout_s / 10, 0.001)))


@contextlib.contextmanager
def _ninja_on_path() -> Iterator[None]:
    """The ``ninja`` package's binary on ``PATH`` for the build when no other ninja is there (a venv used without
    activating it): torch's builder looks ninja up on ``PATH``."""
    old = os.environ.get("PATH", "")
    try:
        if shutil.which("ninja") is None:
            with contextlib.suppress(ImportError):
                import ninja  # type: ignore[import-untyped,import-not-found,unused-ignore]  # a declared dependency

                os.environ["PATH"] = os.pathsep.join([str(ninja.BIN_DIR), old])
        yield
    finally:
        os.environ["PATH"] = old


def native_gru() -> Any:
    """The compiled time loops (``csrc/gru_cpu.cpp``), built once per torch version with torch's C++ extension
    builder (needs a C++ compiler and ninja, a package dependency; about 20 s, then cached), or None: turned off,
    not an x86 CPU with AVX2, the build failed, or another build's lock outlasted ``METARL_GRU_BUILD_TIMEOUT``
    (a warning says which; the Python loop computes the same function)."""
    global _native_module, _native_tried
    if _native_tried:
        return _native_module
    _native_tried = True
    if not native_gru_setting() or not sys.platform.startswith("linux"):
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    timeout = build_timeout_s()
    try:
        from torch.utils.cpp_extension import load

        digest = hashlib.sha1(_SOURCE.read_bytes() + torch.__version__.encode()).hexdigest()[:12]
        name = f"metarl_gru_cpu_{digest}"
        build_dir = _build_directory(name)
        if build_dir is not None and not _lock_released(build_dir, timeout):
            warnings.warn(
                f"metarl: the compiled GRU loop's build directory has been locked for {timeout:g} s (a build still "
                f"running, or one killed half-way); the CPU update runs the Python loop: the same function, slower.  "
                f"If no build is running, delete {build_dir / _BUILD_LOCK} ({BUILD_TIMEOUT_ENV} sets the wait)",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        if build_dir is None or not (build_dir / f"{name}.so").exists():
            print("metarl: building the compiled GRU loop for the CPU update (once per torch version, ~20 s)",
                  file=sys.stderr, flush=True)  # fmt: skip
        with _ninja_on_path():
            _native_module = load(name=name, sources=[str(_SOURCE)], extra_cflags=["-O3", "-mavx2", "-mfma"])
    except Exception as exc:  # any build failure means the Python loop
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        warnings.warn(
            f"metarl: the compiled GRU loop did not build ({type(exc).__name__}: {first}); the CPU update runs the "
            "Python loop: the same function, slower (METARL_NATIVE_GRU=0 skips the build)",
            RuntimeWarning,
            stacklevel=2,
        )
        _native_module = None
    return _native_module


def gru_loop(hidden: int, device: torch.device) -> str:
    """Which time loop RL²'s update runs for a GRU of ``hidden`` units on ``device``: ``compiled`` (the fused GRU's
    compiled loops), ``python`` (the fused GRU's Python loop) or ``cudnn`` (``nn.GRU`` on CUDA).  Recorded in the
    checkpoint's learner record, so a resume on another loop says it is not bitwise the same run."""
    if device.type != "cpu":
        return "cudnn"
    return "compiled" if hidden % 8 == 0 and native_gru() is not None else "python"


_packing: bool | None = None


def _reordered_weights(native: Any) -> bool:
    """Whether the compiled loop may run its bfloat16 products with the recurrent weight reordered once for oneDNN
    (the private pair listed at the top of this module): checked once, on a small product that must equal
    ``addmm``'s."""
    global _packing
    if _packing is None:
        try:
            x, w, b = (torch.randn(*s).to(torch.bfloat16) for s in ((4, 16), (24, 16), (24,)))
            y = native.packed_product(x, _reorder_linear_weight(w, 4), b)
            _packing = bool(torch.equal(y, torch.addmm(b, x, w.t())))
        except (AttributeError, RuntimeError):
            _packing = False
    return _packing


def _low_precision(device: torch.device) -> torch.dtype | None:
    """The autocast dtype in force for ``device`` (bfloat16 or float16), or None when autocast is off there."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def _python_forward_loop(
    xp: torch.Tensor,
    hs: torch.Tensor,
    h_in: torch.Tensor,
    gh: torch.Tensor,
    rz: torch.Tensor,
    n: torch.Tensor,
    wt: torch.Tensor,
    bias: torch.Tensor,
    cast_state: bool,
) -> None:
    """The forward's time loop in Python (where the compiled one does not run): fills ``hs[1:]``, ``h_in``
    (the state cast for the products, when ``cast_state``), ``gh``, ``rz`` and ``n`` in place."""
    g = hs.shape[-1]
    # per-step views, taken once (indexing inside the loop costs as much as the small calls)
    x_rz, x_n = xp[..., : 2 * g].unbind(0), xp[..., 2 * g :].unbind(0)
    gh_t, gh_rz, gh_n = gh.unbind(0), gh[..., : 2 * g].unbind(0), gh[..., 2 * g :].unbind(0)
    rz_t, r_t, z_t = rz.unbind(0), rz[..., :g].unbind(0), rz[..., g:].unbind(0)
    n_t, hs_t, h_in_t = n.unbind(0), hs.unbind(0), h_in.unbind(0)
    for t in range(xp.shape[0]):
        if cast_state:
            h_in_t[t].copy_(hs_t[t])
        torch.addmm(bias, h_in_t[t], wt, out=gh_t[t])
        torch.add(x_rz[t], gh_rz[t], out=rz_t[t]).sigmoid_()
        torch.addcmul(x_n[t], r_t[t], gh_n[t], out=n_t[t]).tanh_()
        torch.lerp(n_t[t], hs_t[t], z_t[t], out=hs_t[t + 1])  # h' = n + z (h - n)


class _GRUSequence(torch.autograd.Function):
    """out [C, B, G] from the input projection ``xp`` [C, B, 3G] (b_ih included), ``h0`` [B, G],
    ``w_hh`` [3G, G] and ``b_hh`` [3G]; products in ``low`` (a dtype) when given.  Every buffer is allocated
    once per call and written in place (``out=``): each step's calls read and write rows of them."""

    @staticmethod
    def forward(
        ctx: Any, xp: torch.Tensor, h0: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, low: torch.dtype | None
    ) -> torch.Tensor:
        steps, batch, g3 = xp.shape
        g = g3 // 3
        dtype = low or xp.dtype
        wt, bias = w_hh.t().to(dtype), b_hh.to(dtype)
        hs = h0.new_empty(steps + 1, batch, g)  # h0, then every step's output (float32)
        hs[0] = h0
        # the states as the products read them: hs itself in float32, a cast copy under autocast
        h_in = hs if low is None else xp.new_empty(steps, batch, g, dtype=dtype)
        gh = xp.new_empty(steps, batch, g3, dtype=dtype)  # W_hh h + b_hh
        rz = hs.new_empty(steps, batch, 2 * g)
        n = hs.new_empty(steps, batch, g)
        native = native_gru() if xp.device.type == "cpu" and g % 8 == 0 and xp.dtype == dtype else None
        ctx.native, ctx.packed = native is not None, False
        if native is not None:  # the same loop compiled: one product and one pass over the gates per step
            if low is not None:
                h_in[0].copy_(h0)
            packed = None
            if low == torch.bfloat16 and _reordered_weights(native):
                packed = _reorder_linear_weight(w_hh.to(dtype).contiguous(), batch)
            ctx.packed = packed is not None
            native.forward_loop(xp.contiguous(), hs, h_in, gh, rz, n, wt, bias, low is not None, packed)
        else:
            _python_forward_loop(xp, hs, h_in, gh, rz, n, wt, bias, low is not None)
        ctx.save_for_backward(hs, h_in, w_hh, gh, rz, n)
        ctx.low, ctx.x_dtype = low, xp.dtype
        return hs[1:]

    @staticmethod
    def backward(ctx: Any, dout: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        hs, h_in, w_hh, gh, rz, n = ctx.saved_tensors
        low: torch.dtype | None = ctx.low
        dtype = low or hs.dtype
        steps, batch, g = n.shape
        dout = dout.to(hs.dtype)
        if ctx.native:  # the compiled loop writes d(gh) and d(xp) and returns the gradient reaching h0
            dgh_c = hs.new_empty(steps, batch, 3 * g, dtype=dtype)
            dxp = hs.new_empty(steps, batch, 3 * g, dtype=dtype)
            w = w_hh.to(dtype).contiguous()
            packed = _reorder_linear_weight(w.t().contiguous(), batch) if ctx.packed else None
            dh0 = native_gru().backward_loop(dout.contiguous(), hs, gh, rz, n, w, dgh_c, dxp, packed)
            flat = dgh_c.view(steps * batch, 3 * g)
            dw = torch.mm(flat.t(), h_in[:steps].reshape(-1, g)).to(w_hh.dtype)
            return dxp.to(ctx.x_dtype), dh0, dw, torch.sum(flat, 0, dtype=w_hh.dtype), None
        r, z, ghn = rz[..., :g], rz[..., g:], gh[..., 2 * g :]
        # local derivatives of h' = n + z (h - n), n = tanh(x_n + r (W_hn h + b_hn)), r/z = σ(x + W h + b): with
        # D the gradient reaching h', d(x_n) = D a, d(gh_n) = D a r, d(x_r) = d(gh_r) = D a gh_n r (1 - r) and
        # d(x_z) = d(gh_z) = D (h - n) z (1 - z), where a = (1 - z)(1 - n²).  None depends on D.
        coeff = hs.new_empty(steps, batch, 3, g)  # d(gh) = D ⊗ coeff
        one_minus_z = 1 - z
        a = (1 - n * n).mul_(one_minus_z)
        torch.mul(a, r, out=coeff[:, :, 2])
        torch.mul(coeff[:, :, 2], ghn, out=coeff[:, :, 0]).mul_(1 - r)
        torch.sub(hs[:-1], n, out=coeff[:, :, 1]).mul_(z).mul_(one_minus_z)
        w = w_hh.to(dtype)
        dgh = hs.new_empty(steps, batch, 3, g, dtype=dtype)
        d_at = hs.new_empty(steps, batch, g)  # D at every step
        dh = torch.zeros_like(hs[0])
        d_t, dout_t, dgh_t, coeff_t, z_t = d_at.unbind(0), dout.unbind(0), dgh.unbind(0), coeff.unbind(0), z.unbind(0)
        for t in range(steps - 1, -1, -1):
            torch.add(dh, dout_t[t], out=d_t[t])
            torch.mul(d_t[t].unsqueeze(1), coeff_t[t], out=dgh_t[t])
            # the gradient reaching h: through W_hh h, plus z through h' = ... + z h
            dh = torch.addcmul(torch.mm(dgh_t[t].view(batch, 3 * g), w), d_t[t], z_t[t])
        dgh_flat = dgh.view(steps * batch, 3 * g)
        dw = torch.mm(dgh_flat.t(), h_in[:steps].reshape(-1, g)).to(w_hh.dtype)
        db = torch.sum(dgh_flat, 0, dtype=w_hh.dtype)
        # d(x) is d(gh) but for the new gate's part, D a (not D a r): overwrite it in place
        torch.mul(d_at, a, out=dgh[:, :, 2])
        return dgh.view(steps, batch, 3 * g).to(ctx.x_dtype), dh, dw, db, None


def gru_sequence(gru: nn.GRU, inputs: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """``gru(inputs, h0.unsqueeze(0))[0]`` for a one-layer, unidirectional, time-major ``gru`` with biases: outputs
    [C, B, G] from inputs [C, B, I] and h0 [B, G], through :class:`_GRUSequence` (see the module docstring).

    Under CPU autocast the products run in the autocast dtype; the outputs are float32.
    """
    if gru.num_layers != 1 or gru.bidirectional or gru.batch_first or not gru.bias:
        raise ValueError("gru_sequence takes a one-layer, unidirectional, time-major nn.GRU with biases")
    low = _low_precision(inputs.device)
    w_ih, b_ih, w_hh, b_hh = (gru.get_parameter(f"{k}_l0") for k in ("weight_ih", "bias_ih", "weight_hh", "bias_hh"))
    # the input projection for every step at once (bfloat16 under autocast; the gates are float32)
    xp = torch.nn.functional.linear(inputs, w_ih, b_ih)
    with torch.autocast(inputs.device.type, enabled=False):
        out: torch.Tensor = _GRUSequence.apply(xp, h0.float(), w_hh, b_hh, low)
    return out
