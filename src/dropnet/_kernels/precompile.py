"""Fill Numba's on-disk cache for the CPU kernels from a second process.

A first run with an empty cache spends most of its time compiling, one kernel after
another, on one core: Numba compiles under a process-wide lock. A solve reaches its kernels
in a fixed order (CSV scanner, pairing, Hungarian, residuals, prefix cache, candidates,
adjoint, first order, certificate, and the relaxation's soft pass on deep networks), so the CLI starts ``python -m
dropnet._kernels.precompile`` when the cache is empty; it compiles the kernels a solve needs
*last* (``LATE``, in reverse order of need; the soft pass, which only a stalled search
reaches, after the rest) on tiny inputs of the same types, while the
solve compiles the early ones. When the solve reaches a kernel the helper has finished,
Numba loads it from the cache instead of compiling it. Numba writes cache files through a
temporary file and a rename, so the two processes never see half a file; a kernel both reach
at once is simply compiled twice. Nothing changes once the cache is warm: the check is one
index read.
"""
from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

import numpy as np

from .types import BlockWeights

# kernels a solve compiles last, in the order the helper compiles them
LATE = ("network_output", "first_order_deltas", "adjoint_gradients", "evaluate_candidates",
        "soft_loss_and_grad")


def _weights(n: int, h: int, d: int, dtype) -> BlockWeights:
    rng = np.random.default_rng(0)
    shapes = ((n, h, d), (n, h), (n, d, h), (n, d), (d,), (1,))
    return BlockWeights(*(rng.normal(size=s).astype(dtype) for s in shapes))


def compile_kernels(names: tuple[str, ...] = LATE) -> None:
    """Call each named CPU kernel once on a tiny problem with the argument types a solve
    uses (float32: the search and the certificate; the certificate's float64 pass runs only
    in its rare undecided band), so that Numba compiles and caches it."""
    from . import cpu

    n, h, d, m = 2, 4, 3, 8
    seq = np.arange(n)
    acts = np.zeros((n + 1, m, d), np.float32)
    w32, target = _weights(n, h, d, np.float32), np.zeros(m)
    calls = {
        "network_output": lambda: cpu.network_output(np.zeros((m, d), np.float32), w32, seq, seq),
        "first_order_deltas": lambda: cpu.first_order_deltas(acts, acts, w32, np.zeros(1), np.ones(1),
                                                             seq[None], seq[None]),
        "adjoint_gradients": lambda: cpu.adjoint_gradients(acts, w32, seq, seq, target),
        "evaluate_candidates": lambda: cpu.evaluate_candidates(acts, w32, np.zeros(1), seq[None],
                                                               seq[None], target),
        "soft_loss_and_grad": lambda: cpu.soft_loss_and_grad(np.zeros((m, d), np.float32), target,
                                                             w32, seq, seq, np.full((n, n), 0.5),
                                                             0.01),
    }
    for name in names:
        calls[name]()


def cache_is_cold() -> bool:
    """True when Numba's cache holds no compiled certificate kernel (read from its index;
    False when that cannot be told, so nothing is started)."""
    try:
        from . import cpu

        return not cpu._output_tasks._cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - Numba internals moved: do not start a helper
        return False


@contextlib.contextmanager
def in_background(enabled: bool = True) -> Iterator[subprocess.Popen | None]:
    """Within the block, a helper process compiles ``LATE`` into the cache if it is cold;
    the helper is stopped when the block ends (its finished files stay)."""
    helper = None
    if enabled and cache_is_cold():
        try:
            helper = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:
            helper = None
    try:
        yield helper
    finally:
        if helper is not None and helper.poll() is None:
            helper.terminate()
            helper.wait()


if __name__ == "__main__":  # pragma: no cover - run as the helper process
    compile_kernels(tuple(sys.argv[1:]) or LATE)
