"""`rediswq exporter`: the queue's gauges over HTTP for Prometheus, read from Redis per scrape."""

from __future__ import annotations

import argparse
import threading

from rediswq.cli.options import Commands, add_settings
from rediswq.connection import connect
from rediswq.errors import ConfigError
from rediswq.logs import Lines
from rediswq.queue import WorkQueue

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

    lines = Lines()  # a long-running service: it says where it serves, and when Redis is lost
    lines.bind(queue=args.queue_name)
    # No wait for Redis at start, unlike every other command: a scrape while Redis is down says
    # so (rediswq_queue_up 0), which an alert can act on, where an exporter that gave up would
    # only restart, and one that waited would serve nothing. Pooled: scrapes may overlap, each
    # in its own thread, and the client connects at the first one.
    client = connect(
        args.redis_url, args.redis_password or None, log=lines, pooled=True,
        outage=min(_SCRAPE_OUTAGE, args.redis_outage_timeout),
    )  # fmt: skip
    serve_queue(WorkQueue(client, args.queue_name), args.metrics_port)
    host, port = args.metrics_port  # said once the port is ours: it may be taken
    lines("metrics", f"Serving the gauges of queue {args.queue_name!r} on {host}:{port}/metrics")
    threading.Event().wait()
    return 0
