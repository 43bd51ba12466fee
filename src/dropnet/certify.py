"""The certificate: the float64 forward pass of the answer on all rows matches ``pred`` to
rounding level.

``pred`` was produced by the intact model in float32 (PyTorch's default) and written out, so
each of the n+1 layers adds a relative rounding error of about eps32 = 2**-23 to the output,
and the exact reassembly reaches an MSE of about (eps32 * rms(pred))**2 (1.6e-14 on the
published puzzle). The tolerance allows ten times the worst case of those errors adding up:

    tolerance = (10 * (n + 1) * eps32 * rms(pred))**2        (2.9e-9 on the puzzle)

A wrong order or pair moves the output by far more than that: on the published puzzle the
best single adjacent swap away from the answer has MSE above 1e-6.
"""
from __future__ import annotations

import numpy as np

from ._kernels import BlockWeights, backend

EPS32 = float(np.finfo(np.float32).eps)
SAFETY = 10.0


def tolerance(pred: np.ndarray, blocks: int) -> float:
    """MSE below which the answer is certified, for ``pred`` (m,) and n blocks."""
    rms = float(np.sqrt(np.mean(np.square(pred))))
    return (SAFETY * (blocks + 1) * EPS32 * max(rms, 1e-30)) ** 2


def model_output(weights: BlockWeights, x: np.ndarray, seq_in: np.ndarray, seq_out: np.ndarray,
                 kernels: str = "cpu") -> np.ndarray:
    """Float64 output (m,) of the network with blocks (seq_in[p], seq_out[p]) on x (m, d)."""
    w64 = weights.astype(np.float64)
    x64 = np.ascontiguousarray(x, dtype=np.float64)
    return backend(kernels).network_output(x64, w64, np.asarray(seq_in), np.asarray(seq_out))


def mse(output: np.ndarray, target: np.ndarray) -> float:
    """Mean squared error in float64."""
    return float(np.mean(np.square(np.asarray(output, np.float64) - target)))
