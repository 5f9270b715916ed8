"""`rediswq digest`: the digest of a list's items, for ITEMS_SHA256 (components/remote-items)."""

from __future__ import annotations

import argparse

from rediswq.cli.options import Commands, add_settings
from rediswq.runs import items_digest
from rediswq.sources import streamed_items


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "digest", help="print the digest of a list's items, for ITEMS_SHA256",
        description="Print the SHA-256 digest of a list's items (blank lines left out, gzip "
        "or not): the value of ITEMS_SHA256 that names its run and that the seed checks.",
    )  # fmt: skip
    parser.add_argument(
        "file", nargs="?", default="-", help="one item per line, gzip or not; - for stdin; or a URL"
    )
    add_settings(parser, "digest", run=_digest)


def _digest(args: argparse.Namespace) -> int:
    print(items_digest(streamed_items(args.file)))
    return 0
