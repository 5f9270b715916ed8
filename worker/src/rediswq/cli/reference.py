"""The reference tables of docs/configuration.md, written from the parser and the settings table.

`python -m rediswq.cli.reference PAGE` (`make docs`) rewrites each region of PAGE between
`<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`; a test checks that the
committed page is what this writes, so the page cannot drift from `--help`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from rediswq.cli import build_parser
from rediswq.cli.options import SETTINGS, Setting

_REGION = re.compile(
    r"(<!-- begin generated: (?P<name>[\w-]+) -->\n).*?(<!-- end generated: (?P=name) -->)",
    re.DOTALL,
)


def _cell(text: str) -> str:
    """`text` for a table cell: placeholders such as <queue> in code (Markdown would take them
    for HTML and hide them), pipes escaped."""
    return re.sub(r"(\S*<[^>\s]+>\S*)", r"`\1`", text).replace("|", "\\|")


def _commands() -> list[tuple[str, argparse.ArgumentParser]]:
    """(name, parser) of every command and sub-command, in the order `--help` lists them."""
    found = []

    def walk(parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:  # argparse keeps its sub-parsers only here
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    found.append((sub.prog.removeprefix("rediswq "), sub))
                    walk(sub)

    walk(build_parser())
    return found


def commands_table() -> str:
    rows = ["| command | what it does |", "| --- | --- |"]
    for name, parser in _commands():
        rows.append(f"| `rediswq {name}` | {_cell(parser.description or '')} |")
    return "\n".join(rows) + "\n"


def _order() -> dict[str, int]:
    return {name: at for at, (name, _) in enumerate(_commands())}


def _default(setting: Setting) -> str:
    shown = f"`{setting.default}`" if setting.default else ""
    others: dict[str, list[str]] = {}
    for command, value in setting.defaults.items():
        others.setdefault(value, []).append(command)
    order = _order()
    for value, commands in sorted(others.items()):
        named = ", ".join(sorted(commands, key=order.__getitem__))
        shown += f"; `{value}` for {named}"
    return shown


def settings_table() -> str:
    order = _order()
    rows = [
        "| flag | variable | default | commands | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for setting in SETTINGS:
        flag = f"`{setting.flag}`" if setting.flag else ""
        meaning = _cell(setting.help)
        if setting.switch is not None:
            meaning += f" (the flag sets `{setting.env}={setting.switch}`)"
        commands = ", ".join(sorted(setting.commands, key=order.__getitem__))
        rows.append(f"| {flag} | `{setting.env}` | {_default(setting)} | {commands} | {meaning} |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {
    "commands": commands_table,
    "settings": settings_table,
}


def regenerated(page: str) -> str:
    """`page` with each generated region written afresh; an unknown region is an error."""

    def fill(match: re.Match[str]) -> str:
        generate = GENERATORS.get(match["name"])
        if generate is None:
            raise ValueError(f"no generator for the region {match['name']!r}")
        return match.group(1) + generate() + match.group(3)

    return _REGION.sub(fill, page)


def main(argv: list[str]) -> int:
    (path,) = argv or ["docs/configuration.md"]
    with open(path, encoding="utf-8") as file:
        page = file.read()
    with open(path, "w", encoding="utf-8") as file:
        file.write(regenerated(page))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
