"""`rediswq exporter`: the queue's gauges over HTTP for Prometheus, read from Redis per scrape."""

from __future__ import annotations

import argparse

from rediswq.cli.options import Commands, add_settings
from rediswq.cli.queues import queue_of
from rediswq.errors import ConfigError

# A scrape waits for its snapshot: past a few seconds of outage it answers rediswq_queue_up 0,
# well within Prometheus' scrape timeout (10 s by default), rather than retry for minutes.
_SCRAPE_OUTAGE = 3.0


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "exporter", help="serve the queue's gauges to Prometheus until stopped",
        description="Serve the queue's gauges (pending, leased, delayed, done, failed, sealed, "
        "run) over HTTP for Prometheus, read from Redis at each scrape.",
    )  # fmt: skip
    add_settings(parser, "exporter")
    parser.set_defaults(run=_exporter)


def _exporter(args: argparse.Namespace) -> int:
    if not args.metrics_port[1]:
        raise ConfigError("the exporter needs a port: --metrics-port or METRICS_PORT")
    from rediswq.metrics import serve_queue  # noqa: PLC0415 - prometheus_client takes 70-90 ms

    serve_queue(queue_of(args, outage=_SCRAPE_OUTAGE), args.metrics_port)
    return 0
