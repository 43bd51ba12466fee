"""Numba's start-up without its eager scipy.linalg import.

When Numba loads its first compiled function it imports ``numba.np.arraymath``, which probes
for BLAS by importing ``scipy.linalg.cython_blas``, and with it all of ``scipy.linalg``:
about 0.25 s of every ``dropnet solve`` on the project's machine, for BLAS that no dropnet
kernel calls. Importing this module answers that one probe without the import (scipy, a
dependency, provides BLAS, so the answer is the same) and puts the real probe back at once:
a later kernel that uses ``np.dot`` still imports scipy.linalg when it is compiled.
"""
from __future__ import annotations

import sys


def defer_blas_probe() -> None:
    """Import numba.np.arraymath with its BLAS probe answered "available" (idempotent)."""
    if "numba.np.arraymath" in sys.modules:
        return
    import numba.np.linalg as linalg

    probe = linalg.ensure_blas
    linalg.ensure_blas = lambda: None
    try:
        import numba.np.arraymath  # noqa: F401  (its _HAVE_BLAS is computed at import)
    finally:
        linalg.ensure_blas = probe


defer_blas_probe()
