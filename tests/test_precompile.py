"""The cold-start helper (dropnet._kernels.precompile): what it compiles is what a solve then
loads from the cache, with the same argument types. Each check runs in fresh interpreters
with an empty Numba cache of its own (about 15 s in all)."""
from __future__ import annotations

import os
import subprocess
import sys

# a solve's own calls, with screening on (first order + adjoint), after the helper has run:
# every late kernel must come from the cache (a hit), none compiled here (a miss)
SOLVE_AND_COUNT = """
import sys
import numpy as np
import dropnet
from dropnet import relax
from dropnet._kernels import cpu, precompile
from dropnet.io import load_data, load_pieces
from dropnet.roles import assign_roles
from dropnet.search import Climber, adjacent_swaps

assert not precompile.cache_is_cold()
folder = sys.argv[1]
result = dropnet.solve(folder)
stack = assign_roles(load_pieces(folder + "/pieces"))
data = load_data(folder + "/historical_data.csv")
climber = Climber(stack.weights, data.x, data.pred, screen=1)
state = climber.start(np.arange(4), np.arange(4))
climber.step(state, adjacent_swaps(state.seq_in, state.seq_out))
net = relax.SoftNetwork(stack.weights, np.arange(4), np.arange(4))  # the relaxation's step
net.loss_and_grad(np.full((4, 4), 0.25), data.x[:16], data.pred[:16])
late = [cpu._output_tasks, cpu._first_order_tasks, cpu._adjoint_tasks, cpu._candidates_tasks,
        cpu._soft_tasks]
for kernel in late:
    name = kernel.py_func.__name__
    assert kernel.stats.cache_hits and not kernel.stats.cache_misses, (name, kernel.stats)
print("ok")
"""


def _python(code: str, cache, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          text=True, check=False)


def test_helper_compiles_what_a_solve_loads(small_net, tmp_path):
    folder, _ = small_net
    cache = tmp_path / "numba-cache"
    helper = subprocess.run([sys.executable, "-m", "dropnet._kernels.precompile"],
                            env={**os.environ, "NUMBA_CACHE_DIR": str(cache)}, check=False)
    assert helper.returncode == 0
    done = _python(SOLVE_AND_COUNT, cache, str(folder))
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_helper_starts_only_on_a_cold_cache_and_is_stopped(tmp_path):
    code = """
from dropnet._kernels import precompile
cold = precompile.cache_is_cold()
with precompile.in_background() as helper:
    started = helper is not None
print(cold, started, helper is None or helper.poll() is not None)
with precompile.in_background(enabled=False) as helper:
    print(helper)
"""
    cold = _python(code, tmp_path / "empty")
    assert cold.stdout.split() == ["True", "True", "True", "None"], cold.stderr[-2000:]
    subprocess.run([sys.executable, "-m", "dropnet._kernels.precompile", "network_output"],
                   env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "warm")}, check=True)
    warm = _python(code, tmp_path / "warm")
    assert warm.stdout.split() == ["False", "False", "True", "None"], warm.stderr[-2000:]


def test_a_helper_that_cannot_start_is_skipped(monkeypatch):
    """No Python to start (OSError) or no Numba cache index to read: the solve goes on alone."""
    from dropnet._kernels import precompile

    def no_python(*args, **kwargs):
        raise OSError("no such file")

    monkeypatch.setattr(precompile, "cache_is_cold", lambda: True)
    monkeypatch.setattr(precompile.subprocess, "Popen", no_python)
    with precompile.in_background() as helper:
        assert helper is None


def test_cache_check_without_numba_cache_internals_says_warm(monkeypatch):
    from dropnet._kernels import cpu, precompile

    monkeypatch.delattr(cpu._output_tasks, "_cache")
    assert precompile.cache_is_cold() is False
