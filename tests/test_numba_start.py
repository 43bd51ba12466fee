"""dropnet's Numba start-up skips the eager scipy.linalg import but leaves BLAS working."""
from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_solving_path_does_not_import_scipy_linalg():
    out = run("import sys, numpy as np\n"
              "from dropnet._kernels import backend\n"
              "from dropnet.assignment import linear_assignment\n"
              "linear_assignment(np.eye(3))\n"
              "import numba.np.arraymath as a\n"
              "print(a._HAVE_BLAS, 'scipy.linalg' in sys.modules)")
    assert out == "True False"


def test_numba_np_dot_still_compiles_after_dropnet():
    out = run("import numpy as np, numba\n"
              "import dropnet.assignment\n"
              "dot = numba.njit(lambda a, b: np.dot(a, b))\n"
              "print(dot(np.ones((2, 3)), np.ones(3)).tolist())")
    assert out == "[3.0, 3.0]"
