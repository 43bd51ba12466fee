"""dropnet: reassemble a dropped residual MLP from its shuffled linear layers.

Public API (imported lazily, so ``import dropnet`` stays cheap):

- :func:`solve` (pieces folder + data -> :class:`Result`), :func:`solve_loaded`,
  :class:`SearchOptions`, :func:`guess_without_data`
- :func:`load_pieces`, :func:`load_data` (readers), :func:`assign_roles` (typing by shape)
- :func:`pair_by_dominance`, :func:`pair_with_data` (pairing), :func:`seed_order` (seeds), :class:`Climber` (search)
- ``dropnet._kernels.backend("cpu" | "cuda" | "reference")``: the compiled kernels
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

_EXPORTS = {
    "solve": "solve", "solve_loaded": "solve", "Result": "solve", "SearchOptions": "solve",
    "guess_without_data": "solve",
    "load_pieces": "io", "load_data": "io", "Pieces": "io", "Data": "io",
    "assign_roles": "roles", "Stack": "roles",
    "pair_by_dominance": "pairing", "pair_with_data": "pairing", "Pairing": "pairing",
    "seed_order": "ordering", "Climber": "search",
    "Network": "model", "InputError": "errors", "DropnetError": "errors",
}

__all__ = sorted(_EXPORTS)


class _Package(types.ModuleType):
    """Keeps ``dropnet.solve`` the function: importing the submodule ``dropnet.solve`` would
    otherwise set the package attribute ``solve`` to that module (so a second
    ``dropnet.solve(...)``, or one after the CLI's import, called a module)."""

    def __setattr__(self, name: str, value) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'dropnet' has no attribute {name!r}")
