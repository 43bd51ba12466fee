"""The certificate: the float64 forward pass of the answer on all rows matches ``pred`` to
rounding level.

``pred`` was produced by the intact model in float32 (PyTorch's default) and written out, so
each of the n+1 layers adds a relative rounding error of about eps32 = 2**-23 to the output,
and the exact reassembly reaches an MSE of about (eps32 * rms(pred))**2 (1.6e-14 on the
published puzzle). The tolerance allows ten times the worst case of those errors adding up:

    tolerance = (10 * (n + 1) * eps32 * rms(pred))**2        (2.9e-9 on the puzzle)

A wrong order or pair moves the output by far more than that: on the published puzzle the
best single adjacent swap away from the answer has MSE above 1e-6.

:func:`check` runs the forward pass in float32, the precision ``pred`` was made in (twice the
speed of float64 on the CPU): its own rounding is of the same size as ``pred``'s, about
(n+1) eps32 rms(pred) at most, half the square root of the tolerance or less, so an MSE in
float32 below tolerance / 4 is certainly below the tolerance in exact arithmetic and one above
2.25 x tolerance certainly above it. Between the two (never met on a correct or a wrong
answer in practice: 2.6e-14 and > 1e-6 on the puzzle against 2.9e-9) the pass is redone in
float64, which decides.
"""
from __future__ import annotations

import numpy as np

from ._kernels import BlockWeights, backend

EPS32 = float(np.finfo(np.float32).eps)
SAFETY = 10.0
FLOAT32_DECIDES = (0.25, 2.25)  # float32 MSE / tolerance outside this band needs no float64


def tolerance(pred: np.ndarray, blocks: int) -> float:
    """MSE below which the answer is certified, for ``pred`` (m,) and n blocks."""
    rms = float(np.sqrt(np.mean(np.square(pred))))
    return (SAFETY * (blocks + 1) * EPS32 * max(rms, 1e-30)) ** 2


def model_output(weights: BlockWeights, x: np.ndarray, seq_in: np.ndarray, seq_out: np.ndarray,
                 kernels: str = "cpu", dtype=np.float64) -> np.ndarray:
    """Output (m,) in ``dtype`` of the network with blocks (seq_in[p], seq_out[p]) on x (m, d)."""
    return backend(kernels).network_output(np.ascontiguousarray(x, dtype=dtype),
                                           weights.astype(dtype), np.asarray(seq_in),
                                           np.asarray(seq_out))


def check(weights: BlockWeights, x: np.ndarray, seq_in: np.ndarray, seq_out: np.ndarray,
          target: np.ndarray, tol: float, kernels: str = "cpu") -> tuple[float, np.ndarray]:
    """(MSE vs target (m,), output (m,)) of the sequence on all rows x (m, d): the float32
    forward pass, or the float64 one when the float32 MSE falls in the band around ``tol``
    where its own rounding could decide (see the module's docstring)."""
    out = model_output(weights, x, seq_in, seq_out, kernels, np.float32)
    err = mse(out, target)
    low, high = FLOAT32_DECIDES
    if low * tol < err <= high * tol or not np.isfinite(err):
        out = model_output(weights, x, seq_in, seq_out, kernels)
        err = mse(out, target)
    return err, out


def mse(output: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error in float64."""
    return float(np.mean(np.square(np.asarray(output, np.float64) - target)))
