"""dropnet: reassemble a dropped residual MLP from its shuffled linear layers.

Public API (imported lazily, so ``import dropnet`` stays cheap):

- :func:`solve` (pieces folder + data -> :class:`Result`), :func:`solve_loaded`
- :func:`load_pieces`, :func:`load_data` (readers), :func:`assign_roles` (typing by shape)
- :func:`pair_by_dominance` (pairing), :func:`seed_order` (seeds), :class:`Climber` (search)
- ``dropnet._kernels.backend("cpu" | "cuda" | "reference")``: the compiled kernels
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "solve": "solve", "solve_loaded": "solve", "Result": "solve",
    "load_pieces": "io", "load_data": "io", "Pieces": "io", "Data": "io",
    "assign_roles": "roles", "Stack": "roles",
    "pair_by_dominance": "pairing", "Pairing": "pairing",
    "seed_order": "ordering", "Climber": "search",
    "Network": "model", "InputError": "errors", "DropnetError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dropnet' has no attribute {name!r}")
