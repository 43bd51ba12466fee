"""The package's public names, as docs/api.md lists them."""
from __future__ import annotations

import subprocess
import sys

import pytest

import dropnet

EXPORTS = ["solve", "solve_loaded", "Result", "SearchOptions", "guess_without_data", "load_pieces",
           "load_data", "assign_roles", "pair_by_dominance", "pair_with_data", "seed_order", "Climber", "Network",
           "InputError", "DropnetError"]


@pytest.mark.parametrize("name", EXPORTS)
def test_exports_resolve(name):
    assert getattr(dropnet, name) is getattr(dropnet, name)
    assert not isinstance(getattr(dropnet, name), type(dropnet))


def test_solve_stays_the_function_after_its_module_is_imported():
    """``dropnet.solve`` is both a submodule and a function; importing the submodule (as the
    CLI does) must not turn the package attribute into the module. Fresh interpreter, so the
    import order is the one a user sees."""
    code = ("import dropnet, dropnet.cli; from dropnet.solve import SearchOptions; "
            "f = dropnet.solve; g = dropnet.solve; "
            "assert callable(f) and f is g and f.__name__ == 'solve', f; "
            "assert dropnet.SearchOptions is SearchOptions")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = dropnet.nope
