"""`rediswq exporter`: the queue's gauges over HTTP for Prometheus, read from Redis per scrape."""

from __future__ import annotations

import argparse

from rediswq.cli.options import Commands, add_settings
from rediswq.cli.queues import queue_of
from rediswq.errors import ConfigError
from rediswq.logs import Lines

# A scrape waits for its snapshot: past a few seconds of outage it answers rediswq_queue_up 0,
# well within Prometheus' scrape timeout (10 s by default), rather than retry for minutes.
_SCRAPE_OUTAGE = 3.0


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "exporter", help="serve the queue's gauges to Prometheus until stopped",
        description="Serve the queue's gauges (pending, leased, delayed, done, failed, sealed, "
        "run) over HTTP for Prometheus, read from Redis at each scrape.",
    )  # fmt: skip
    add_settings(parser, "exporter", run=_exporter)


def _exporter(args: argparse.Namespace) -> int:
    if not args.metrics_port[1]:
        raise ConfigError("the exporter needs a port: --metrics-port or METRICS_PORT")
    from rediswq.metrics import serve_queue  # noqa: PLC0415 - prometheus_client takes 70-90 ms

    lines = Lines()  # a long-running service: it says why it waits, and where it serves
    lines.bind(queue=args.queue_name)
    queue = queue_of(args, outage=_SCRAPE_OUTAGE, log=lines)
    host, port = args.metrics_port
    lines("metrics", f"Serving the gauges of queue {args.queue_name!r} on {host}:{port}/metrics")
    serve_queue(queue, args.metrics_port)
    return 0
