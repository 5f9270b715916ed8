"""The `rediswq` command: worker, seed, status, failed, results, local. Flags override environment
variables."""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis

from rediswq.connection import Log, connect, describe, wait_until_ready
from rediswq.errors import ConfigError, QueueError, signal_exit
from rediswq.execution import TimeLimited
from rediswq.handlers import HandlerSpec
from rediswq.local import run_local
from rediswq.queue import WorkQueue
from rediswq.reports import add_report_commands
from rediswq.results import ResultStore, encoded
from rediswq.retry import Backoff
from rediswq.runs import checked, restore, run_id
from rediswq.seeding import read_items, seed
from rediswq.status import render, snapshot, watch
from rediswq.supervisor import supervised
from rediswq.worker import Worker, exit_code, log_line


def _number(
    kind: Callable[[str], float], *, minimum: float, strict: bool
) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        # NaN compares false with everything, so it would pass the bounds and wait forever.
        if (
            value is None
            or not math.isfinite(value)
            or value < minimum
            or (strict and value == minimum)
        ):
            bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"
            noun = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {noun} {bound}, got {text!r}")
        return value

    return parse


positive = _number(float, minimum=0, strict=True)
non_negative = _number(float, minimum=0, strict=False)
at_least_one = _number(int, minimum=1, strict=False)


def backoff(text: str) -> Backoff:
    try:
        return Backoff.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# One Lua call unpacks two values per item; this keeps well inside Lua's stack.
MAX_PREFETCH = 1000


def prefetch_count(text: str) -> float:
    value = at_least_one(text)
    if value > MAX_PREFETCH:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_PREFETCH}, got {text!r}")
    return value


def _env_flag(name: str, default: bool) -> bool:
    text = os.environ.get(name)
    if text is None:
        return default
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {text!r}")


def _setting(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    default: str,
    help: str,
    *,
    kind: Callable[[str], Any] = str,
) -> None:
    """A flag whose default comes from the environment; argparse parses either with `kind`.

    A refused value is a ConfigError (exit 3), not argparse's usage error (exit 2): in a Job the
    values come from the settings, and another pod would refuse them the same way.
    """

    def parse(text: str) -> Any:
        try:
            return kind(text)
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{flag} (env {env}): {exc}") from None

    parser.add_argument(
        flag, type=parse, default=os.environ.get(env, default), help=f"{help} (env {env})"
    )


def _add_work(parser: argparse.ArgumentParser, work_seconds: str) -> None:
    """What a worker does with each item; `local` passes the same flags to its workers."""
    _setting(
        parser, "--work-seconds", "WORK_SECONDS", work_seconds,
        "how long the default handler works on an item", kind=non_negative,
    )  # fmt: skip
    _setting(
        parser, "--handler", "HANDLER", "",
        "module:function called with each item instead of sleeping",
    )  # fmt: skip
    parser.add_argument(
        "--bytes", dest="as_bytes", action="store_true",
        default=_env_flag("HANDLER_BYTES", False),
        help="pass items to the handler as bytes, not str (env HANDLER_BYTES)",
    )  # fmt: skip
    _setting(
        parser, "--prefetch", "PREFETCH", "1",
        f"items leased per round trip, up to {MAX_PREFETCH}", kind=prefetch_count,
    )  # fmt: skip
    _setting(
        parser, "--item-timeout", "ITEM_TIMEOUT", "0",
        "seconds one item may take, then its attempt fails (0: no limit; a limit runs the "
        "handler in a child process)", kind=non_negative,
    )  # fmt: skip
    _setting(
        parser, "--retry-backoff", "RETRY_BACKOFF", "1,60",
        "seconds before a failed item's next attempt: BASE[,MAX], doubled per attempt, with "
        "jitter; off to retry at once", kind=backoff,
    )  # fmt: skip
    parser.add_argument(
        "--results", action="store_true", default=_env_flag("RESULTS", False),
        help="keep handlers' return values in <queue>:results (env RESULTS)",
    )  # fmt: skip
    _setting(
        parser, "--results-max-bytes", "RESULTS_MAX_BYTES", "65536",
        "larger results are not kept (and are logged)", kind=at_least_one,
    )  # fmt: skip
    _setting(
        parser, "--results-ttl", "RESULTS_TTL", "604800",
        "seconds the results are kept after the last one", kind=at_least_one,
    )  # fmt: skip


def _add_connection(parser: argparse.ArgumentParser) -> None:
    _setting(
        parser, "--redis-url", "REDIS_URL", "redis://redis:6379/0",
        "redis:// or rediss:// URL; the password may also come from REDIS_PASSWORD",
    )  # fmt: skip
    _setting(
        parser, "--redis-wait-timeout", "REDIS_WAIT_TIMEOUT", "120",
        "seconds to wait for Redis to answer at start", kind=non_negative,
    )  # fmt: skip
    _setting(
        parser, "--redis-outage-timeout", "REDIS_OUTAGE_TIMEOUT", "300",
        "seconds to keep retrying once Redis is lost mid-run", kind=positive,
    )  # fmt: skip
    _setting(parser, "--queue", "QUEUE_NAME", "job2", "the queue's name")
    _setting(
        parser, "--lease-seconds", "LEASE_SECONDS", "60",
        "how long a lease lasts unless renewed", kind=positive,
    )  # fmt: skip
    _setting(
        parser, "--max-attempts", "MAX_ATTEMPTS", "5",
        "attempts before an item goes to <queue>:failed", kind=at_least_one,
    )  # fmt: skip


def _add_run(parser: argparse.ArgumentParser, *, items: bool) -> None:
    if items:
        _setting(
            parser, "--run-items", "RUN_ITEMS", "",
            "the items file of this worker's run: it waits for the seal of that run",
        )  # fmt: skip
    _setting(
        parser, "--run-label", "RUN_LABEL", "",
        "part of the run id: bump it to run the same items again",
    )  # fmt: skip
    _setting(parser, "--run-id", "RUN_ID", "", "the run id itself, instead of one from the items")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rediswq", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="lease and work items until the queue is drained")
    _add_connection(worker)
    _add_work(worker, work_seconds="10")
    _setting(
        worker, "--seal-timeout", "SEAL_TIMEOUT", "600",
        "seconds to wait for the seed to seal the queue", kind=non_negative,
    )  # fmt: skip
    worker.add_argument(
        "--no-seal", dest="require_seal", action="store_false",
        default=_env_flag("REQUIRE_SEAL", True),
        help="end when the queue is empty, sealed or not: the tutorial's manual flow "
        "(env REQUIRE_SEAL=false)",
    )  # fmt: skip
    _add_run(worker, items=True)
    worker.set_defaults(run=_worker)

    seeder = commands.add_parser("seed", help="queue items from a file (or stdin), seal the queue")
    _add_connection(seeder)
    seeder.add_argument("file", nargs="?", default="-", help="one item per line; - for stdin")
    seeder.add_argument(
        "--reset", action="store_true", help="drop the current run (items, counters), then seed"
    )
    _add_run(seeder, items=False)
    seeder.set_defaults(run=_seed)

    runs = commands.add_parser("runs", help="what earlier runs left: put it back")
    runs_commands = runs.add_subparsers(dest="runs_command", required=True, metavar="COMMAND")
    restorer = runs_commands.add_parser(
        "restore", help="put back the items a superseded run left undone"
    )
    _add_connection(restorer)
    restorer.add_argument("run_id", metavar="RUN", help="the run id, as seed and status show it")
    restorer.set_defaults(run=_restore)

    status = commands.add_parser("status", help="pending, in flight, done, failed, sealed")
    _add_connection(status)
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print JSON")
    shown.add_argument("--watch", action="store_true", help="a live progress bar until drained")
    status.set_defaults(run=_status)

    add_report_commands(commands, _add_connection, _queue)

    local = commands.add_parser("local", help="run everything here: embedded Redis, seed, workers")
    local.add_argument("--items", default="seed/items.txt", help="items file")
    local.add_argument("--workers", type=at_least_one, default="2", help="worker processes")
    _setting(local, "--queue", "QUEUE_NAME", "job2", "the queue's name")
    _add_work(local, work_seconds="0.5")
    _setting(
        local, "--max-attempts", "MAX_ATTEMPTS", "5",
        "attempts before an item goes to <queue>:failed", kind=at_least_one,
    )  # fmt: skip
    local.set_defaults(run=_local)
    return parser


def _queue(
    args: argparse.Namespace,
    *,
    require_seal: bool = True,
    run: str | None = None,
    log: Log | None = None,
) -> WorkQueue:
    password = os.environ.get("REDIS_PASSWORD")
    wait_until_ready(args.redis_url, password, args.redis_wait_timeout)
    return WorkQueue(
        connect(args.redis_url, password, outage=args.redis_outage_timeout, log=log),
        args.queue,
        lease_seconds=args.lease_seconds,
        max_attempts=int(args.max_attempts),
        require_seal=require_seal,
        run=run,
    )


def _worker_run(args: argparse.Namespace) -> str | None:
    """The run this worker is for, or None: then any seal will do (today's manual flows)."""
    run: str | None = None
    if args.run_id:
        run = checked(args.run_id, "run id (--run-id, RUN_ID)")
    elif args.run_items:
        run = run_id(read_items(args.run_items), args.run_label)
    elif args.run_label:
        raise ConfigError("--run-label (RUN_LABEL) names a run only with --run-items (RUN_ITEMS)")
    if run and not args.require_seal:
        raise ConfigError(
            "--no-seal (REQUIRE_SEAL=false) and a run (--run-items or --run-id) contradict: "
            "a run's workers wait for its seal"
        )
    return run


def _worker(args: argparse.Namespace) -> int:
    # What our imports made lives as long as the process: frozen, the garbage collector never
    # walks it again, neither during the run nor at exit, where that walk took 30 ms here. Frozen
    # before the handler is imported: what the handler's module holds (an open file, say) is still
    # collected, and so flushed and closed, at exit.
    gc.freeze()
    # Forked before the handler is imported: what its import starts (threads, connections)
    # lives in the worker process only.
    return supervised(lambda: _work(args))


def _work(args: argparse.Namespace) -> int:
    spec = HandlerSpec(args.handler, args.as_bytes, args.work_seconds)
    handler = spec.load()  # also with a time limit: a bad handler fails here, before any item
    queue = _queue(args, require_seal=args.require_seal, run=_worker_run(args), log=log_line)
    results = (
        ResultStore(queue, int(args.results_max_bytes), int(args.results_ttl))
        if args.results
        else None
    )
    executor = (
        TimeLimited(spec, args.item_timeout, encoded if results else None)
        if args.item_timeout
        else None
    )
    worker = Worker(
        queue, handler, prefetch=int(args.prefetch), seal_timeout=args.seal_timeout,
        backoff=args.retry_backoff, results=results, executor=executor,
    )  # fmt: skip
    return exit_code(worker.run())


def _seed(args: argparse.Namespace) -> int:
    items = read_items(args.file)
    run = checked(args.run_id, "run id (--run-id, RUN_ID)") if args.run_id else None
    run = run or run_id(items, args.run_label)
    queue = _queue(args)
    queue.check_types()
    result = seed(queue, items, reset=args.reset, run=run)
    for line in result.report(args.queue):
        print(line)
    return 0


def _restore(args: argparse.Namespace) -> int:
    count = restore(_queue(args), args.run_id)
    print(f"Restored {count} items of run {args.run_id} into {args.queue!r}")
    return 0


def _status(args: argparse.Namespace) -> int:
    queue = _queue(args)
    if args.watch:
        watch(queue, sys.stdout)
    elif args.json:
        print(json.dumps(snapshot(queue).as_json(), indent=2))
    else:
        print(render(snapshot(queue)))
    return 0


def _local(args: argparse.Namespace) -> int:
    # A bad handler in one line and exit 3, as the worker says it, not once per worker.
    HandlerSpec(args.handler, args.as_bytes, args.work_seconds).load()
    return run_local(
        args.items,
        workers=int(args.workers),
        queue_name=args.queue,
        worker_args=_worker_argv(args),
        results=args.results,
        out=sys.stdout,
    )


def _worker_argv(args: argparse.Namespace) -> list[str]:
    """The work flags of `local`, as its workers' command line."""
    argv = [
        "--work-seconds", str(args.work_seconds), "--prefetch", str(int(args.prefetch)),
        "--item-timeout", str(args.item_timeout), "--retry-backoff", str(args.retry_backoff),
        "--results-max-bytes", str(int(args.results_max_bytes)),
        "--results-ttl", str(int(args.results_ttl)), "--max-attempts", str(int(args.max_attempts)),
    ]  # fmt: skip
    if args.handler:
        argv += ["--handler", args.handler]
    if args.as_bytes:
        argv.append("--bytes")
    if args.results:
        argv.append("--results")
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; every error it ends with becomes one line and its exit code here."""
    args = argparse.Namespace()
    try:
        args = build_parser().parse_args(argv)
        return int(args.run(args))
    except QueueError as exc:
        error = exc
    except redis.RedisError as exc:
        at = urlsplit(getattr(args, "redis_url", "")).netloc.rpartition("@")[2] or "?"
        error = describe(exc, at)
    except KeyboardInterrupt:  # Ctrl-C before the worker's own handler is in place
        print("rediswq: interrupted", file=sys.stderr)
        return signal_exit(signal.SIGINT)
    print(f"rediswq: error: {error}", file=sys.stderr)
    return error.exit_code
