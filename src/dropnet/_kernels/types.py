"""Argument bundles shared by every kernel backend."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np


class BlockWeights(NamedTuple):
    """Stacked layers that kernels index into, all one float dtype, C-contiguous.

    w_in (N_in, h, d), b_in (N_in, h), w_out (N_out, d, h), b_out (N_out, d),
    w_last (d,), b_last (1,). A block is a pair (input layer i, output layer j).
    """

    w_in: np.ndarray
    b_in: np.ndarray
    w_out: np.ndarray
    b_out: np.ndarray
    w_last: np.ndarray
    b_last: np.ndarray

    def astype(self, dtype) -> "BlockWeights":
        return BlockWeights(*(np.ascontiguousarray(a, dtype=dtype) for a in self))
