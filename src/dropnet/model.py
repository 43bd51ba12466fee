"""The residual MLP family dropnet reassembles, as plain arrays.

A network of ``n`` blocks, width ``d`` and hidden size ``h`` maps x (m, d) to y (m,):

    for k in 0..n-1:  x <- x + W_out[k] @ relu(W_in[k] @ x + b_in[k]) + b_out[k]
    y = w_last @ x + b_last
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Network:
    """An assembled network, blocks in execution order.

    w_in (n, h, d), b_in (n, h), w_out (n, d, h), b_out (n, d), w_last (d,), b_last float.
    """

    w_in: np.ndarray
    b_in: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray
    w_last: np.ndarray
    b_last: float

    @property
    def blocks(self) -> int:
        return int(self.w_in.shape[0])

    @property
    def width(self) -> int:
        return int(self.w_in.shape[2])

    @property
    def hidden(self) -> int:
        return int(self.w_in.shape[1])


def forward(net: Network, x: np.ndarray) -> np.ndarray:
    """Plain numpy forward pass of ``net`` on x (m, d); returns y (m,) in x's dtype."""
    dtype = x.dtype
    x = x.copy()
    for k in range(net.blocks):
        hidden = np.maximum(x @ net.w_in[k].T.astype(dtype) + net.b_in[k].astype(dtype), 0)
        x += hidden @ net.w_out[k].T.astype(dtype) + net.b_out[k].astype(dtype)
    return x @ net.w_last.astype(dtype) + dtype.type(net.b_last)
