"""Write docs/cli.md from click's own help, so the reference cannot drift.

Run: python docs/gen_cli.py   (tests/test_docs.py checks the file is current)
"""
from __future__ import annotations

from pathlib import Path

import click

from dropnet.cli import main

OUT = Path(__file__).with_name("cli.md")


def render() -> str:
    parts = ["# CLI reference\n", "Generated from `dropnet --help` by `docs/gen_cli.py`.\n"]
    ctx = click.Context(main, info_name="dropnet", terminal_width=100, max_content_width=100,
                        **main.context_settings)
    parts.append(f"```\n{main.get_help(ctx)}\n```\n")
    for name in sorted(main.commands):
        command = main.commands[name]
        sub = click.Context(command, info_name=f"dropnet {name}", terminal_width=100,
                            max_content_width=100, **main.context_settings)
        parts.append(f"## dropnet {name}\n\n```\n{command.get_help(sub)}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
