"""`rediswq worker`: lease and work items until the queue is drained."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rediswq.cli.options import Commands, add_settings
from rediswq.cli.queues import queue_of
from rediswq.errors import ConfigError
from rediswq.execution import TimeLimited
from rediswq.handlers import HandlerSpec
from rediswq.logs import Lines, identity
from rediswq.stdlogging import install
from rediswq.worker import Worker, exit_code

if TYPE_CHECKING:
    from rediswq.metrics import WorkerMetrics
    from rediswq.queue import WorkQueue
    from rediswq.results import ResultStore


def add_command(commands: Commands) -> None:
    parser = commands.add_parser(
        "worker", help="lease and work items until the queue is drained",
        description="Lease and work items until the queue is drained. Flags override "
        "environment variables.",
    )  # fmt: skip
    add_settings(parser, "worker", run=_work)


def _worker_run(args: argparse.Namespace) -> str | None:
    """The run this worker is for, or None: then any seal will do (today's manual flows)."""
    if not (args.run_id or args.items_sha256 or args.run_items or args.run_label):
        return None
    # Imported only for a run's worker: the seed's module took 1 ms of every worker's start.
    from rediswq.seeding import worker_run  # noqa: PLC0415

    run = worker_run(args.run_id, args.items_sha256, args.run_items, args.run_label)
    if run and not args.require_seal:
        raise ConfigError(
            "--no-seal (REQUIRE_SEAL=false) and a run (--run-items, --items-sha256 or --run-id) "
            "contradict: a run's workers wait for its seal"
        )
    return run


def _work(args: argparse.Namespace) -> int:
    spec = HandlerSpec(args.handler, args.handler_bytes, args.work_seconds)
    handler = spec.load()  # also with a time limit: a bad handler fails here, before any item
    run = _worker_run(args)
    lines = Lines(form=args.log_format, level=args.log_level)
    install(lines)  # a handler's own `logging` too
    session = identity()
    lines.bind(queue=args.queue_name, run=run, worker=session)
    metrics = _metrics(args, lines)
    queue = queue_of(
        args, lease_seconds=args.lease_seconds, max_attempts=int(args.max_attempts),
        require_seal=args.require_seal, run=run, log=lines, session=session,
    )  # fmt: skip
    results = _results(args, queue)
    encode = results.encode if results else None
    executor = TimeLimited(spec, args.item_timeout, encode) if args.item_timeout else None
    worker = Worker(
        queue, handler, prefetch=int(args.prefetch), seal_timeout=args.seal_timeout,
        backoff=args.retry_backoff, results=results, executor=executor, log=lines,
        observers=(metrics,) if metrics else (),
    )  # fmt: skip
    if metrics:
        metrics.reads_in_flight(worker.in_flight)
    return exit_code(worker.run())


def _results(args: argparse.Namespace, queue: WorkQueue) -> ResultStore | None:
    """Where the handlers' values are kept, with --results. Imported only then: results.py took
    about 1 ms of every worker's start."""
    if not args.results:
        return None
    from rediswq.results import ResultStore  # noqa: PLC0415

    return ResultStore(queue, int(args.results_max_bytes), int(args.results_ttl))


def _metrics(args: argparse.Namespace, lines: Lines) -> WorkerMetrics | None:
    """The worker's metrics, served from before it waits for Redis; None with METRICS_PORT 0."""
    host, port = args.metrics_port
    if not port:
        return None
    # Imported only here: prometheus_client's import took 70-90 ms on this machine.
    from rediswq.metrics import served_worker_metrics  # noqa: PLC0415

    metrics = served_worker_metrics((host, port), args.queue_name)
    lines("metrics", f"Serving metrics on {host}:{port}/metrics", port=port)
    return metrics
