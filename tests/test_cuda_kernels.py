"""The CUDA kernels: under numba's simulator on any machine, on a real GPU behind the
``cuda`` marker, and the clear error without either.

numba reads NUMBA_ENABLE_CUDASIM once, when it is first imported, and other tests in this
process import numba first; so the comparisons against the references (``_cuda_cases.py``)
run in a child pytest with the variable set (or unset, for the real GPU).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dropnet._kernels import backend

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "_cuda_cases.py"


def run_cases(mode: str, timeout: float) -> None:
    env = dict(os.environ, DROPNET_CUDA_CASES=mode, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    if mode == "sim":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rs", str(CASES)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"CUDA cases ({mode}) failed:\n{output[-8000:]}"
    assert " passed" in output and " skipped" not in output.splitlines()[-1], output[-2000:]


def test_cuda_kernels_match_reference_under_simulator():
    run_cases("sim", timeout=600)


@pytest.mark.cuda
def test_cuda_kernels_match_reference_on_gpu():
    cu = backend("cuda")
    if cu.simulated():
        pytest.skip("NUMBA_ENABLE_CUDASIM is set in this process; cannot probe for a GPU")
    if not cu.is_available():
        pytest.skip("no usable CUDA GPU")
    run_cases("gpu", timeout=900)


def test_cuda_module_imports_and_names_every_kernel():
    cu, cpu = backend("cuda"), backend("cpu")
    public = {name for name in vars(cpu) if not name.startswith("_")
              and callable(getattr(cpu, name)) and getattr(cpu, name).__module__ == cpu.__name__}
    assert public <= set(vars(cu)), sorted(public - set(vars(cu)))


def _calls():
    from test_kernels import random_weights

    rng = np.random.default_rng(0)
    weights = random_weights(rng, 2, 3, 4)
    x, acts, target = rng.standard_normal((5, 3)), rng.standard_normal((3, 5, 3)), np.zeros(5)
    seq, cand = np.array([0, 1]), np.array([[1, 0]])
    return {
        "pair_trace_and_frobenius": (weights.w_in, weights.w_out),
        "dominance_ratio_matrix": (weights.w_in, weights.w_out),
        "block_forward": (x, weights, 0, 1),
        "prefix_activations": (x, weights, seq, seq),
        "refresh_prefix": (acts, weights, seq, seq, 0),
        "network_output": (x, weights, seq, seq),
        "evaluate_candidates": (acts, weights, np.array([0]), cand, cand, target),
        "adjoint_gradients": (acts, weights, seq, seq, target),
        "first_order_deltas": (acts, acts, weights, np.array([0]), np.array([1]), cand, cand),
        "residual_norms": (x, weights, seq, seq),
        "soft_loss_and_grad": (x, target, weights, seq, seq, np.eye(2), 0.5),
        "soft_loss_and_grads": (x, target, weights, seq, seq, np.eye(2), 0.5),
    }


@pytest.mark.parametrize("name", sorted(_calls()))
def test_without_a_gpu_every_kernel_raises_a_clear_error(name):
    cu = backend("cuda")
    if cu.is_available():
        pytest.skip("a CUDA GPU or the simulator is usable in this process")
    with pytest.raises(RuntimeError, match="^no usable CUDA GPU: "):
        getattr(cu, name)(*_calls()[name])
