"""Compiled kernels behind one switch: ``backend("cpu")``, ``backend("cuda")`` or
``backend("reference")`` return modules with the same functions and signatures:

- ``pair_trace_and_frobenius(w_in, w_out) -> (trace, fro)``, each (N_in, N_out) float64
- ``dominance_ratio_matrix(w_in, w_out) -> ratio`` (N_in, N_out) float64
- ``block_forward(x, weights, layer_in, layer_out) -> (m, d)``
- ``prefix_activations(x, weights, seq_in, seq_out) -> acts`` (n+1, m, d)
- ``network_output(x, weights, seq_in, seq_out) -> y`` (m,)
- ``evaluate_candidates(acts, weights, start, seq_in, seq_out, target) -> sse`` (k,) float64
- ``adjoint_gradients(acts, weights, seq_in, seq_out, target) -> grads`` (n+1, m, d)
- ``first_order_deltas(acts, grads, weights, lo, hi, seq_in, seq_out) -> dsse`` (k,)
- ``residual_norms(x, weights, cand_in, cand_out) -> mean ||block(x) - x||`` (k,) float64
- ``soft_loss_and_grad(x, target, weights, blk_in, blk_out, p, floor) -> (mse, grad (n, n))``:
  the relaxation's soft network (every block mixed at every position by p) and its gradient
- ``soft_loss_and_grads(x, target, weights, blk_in, blk_out, p, floor) -> (mse, grad (n, n),
  grad_w_out (n, d, h), grad_b_out (n, d))``: the same and the gradients for block k's output
  layer weights.w_out[blk_out[k]], b_out[blk_out[k]] (the pairing relaxation's step)

- ``refresh_prefix(acts, weights, seq_in, seq_out, first)``: in place, acts[p+1] for p >= first
  (cpu and cuda; the reference rebuilds with ``prefix_activations``)

``weights`` is a :class:`BlockWeights` of stacked layers in the activations' dtype. The CUDA
module also has ``is_available()``, ``clear_device_cache()`` and ``device_cache_info()``; its
functions take and return host numpy arrays and keep device copies of weights and caches.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .types import BlockWeights

BACKENDS = ("cpu", "cuda", "reference")

__all__ = ["BACKENDS", "BlockWeights", "backend"]


def backend(name: str = "cpu") -> ModuleType:
    """The kernel module for ``name`` (imported lazily: Numba compiles or loads on first use)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown kernel backend {name!r}; choose one of {BACKENDS}")
    return importlib.import_module(f"{__name__}.{name}")
