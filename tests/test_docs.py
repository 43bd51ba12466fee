"""The docs stay true: the CLI reference is click's current help."""
from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    # whitespace-insensitive: click versions differ in how they pad option columns
    assert (DOCS / "cli.md").read_text().split() == gen.render().split(), \
        "run: python docs/gen_cli.py"
