"""`rediswq results`: export the handlers' results, as text or JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rediswq.cli.options import Commands, add_settings
from rediswq.cli.queues import queue_of
from rediswq.results import as_json, stored_results


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "results", help="export the handlers' results (--results)",
        description="Print what the handlers returned, one item a line, sorted by item; kept "
        "only by workers that keep them (RESULTS=true).",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print JSON")
    add_settings(parser, "results", run=_results)


def _results(args: argparse.Namespace) -> int:
    queue = queue_of(args)
    exported: list[dict[str, Any]] = [as_json(item, raw) for item, raw in stored_results(queue)]
    exported.sort(key=lambda entry: entry["item"])
    if args.json:
        print(json.dumps(exported, indent=2, ensure_ascii=False))
        return 0
    for entry in exported:
        value = entry.get("result", entry.get("result_base64"))
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        print(f"{entry['item']}\t{shown}")
    return 0
