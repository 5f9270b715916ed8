"""The `rediswq` command: worker, seed, digest, status, failed, history, results, runs, local,
exporter. Flags override environment variables."""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import sys
from collections.abc import Sequence

from rediswq import _loaded_before
from rediswq.errors import EXIT_USAGE, QueueError, signal_exit

# What importing the package and this module loaded: the worker command's own, like what it loads
# for the command (preloaded.py). What a program loads between this and the command is its own.
_loaded_with_cli = frozenset(sys.modules)

# In the order `rediswq --help` lists them. A command's module (cli/<command>.py) is imported
# only for that command, or for the help that lists them all: the others' imports took 20 ms of a
# worker's start here.
COMMANDS = (
    "worker", "seed", "digest", "status", "failed", "history", "results", "runs", "local",
    "exporter",
)  # fmt: skip

# The distribution's name: `rediswq` on PyPI is another project.
DISTRIBUTION = "job-wq-2"


def _version() -> str:
    # Imported here: only `--version` reads the installed metadata.
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class _Version(argparse.Action):
    """argparse's `version` action, but the version is looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS) -> None:
        super().__init__(
            option_strings, dest, nargs=0, default=argparse.SUPPRESS,
            help="show program's version number and exit",
        )  # fmt: skip

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        print(f"rediswq {_version()} ({DISTRIBUTION})")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or of `command` only: it parses that command's arguments and
    prints its help and errors as the whole parser does."""
    parser = argparse.ArgumentParser(prog="rediswq", description=__doc__)
    parser.add_argument("--version", action=_Version)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS if command is None else (command,):
        importlib.import_module(f"rediswq.cli.{name}").add_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; every error it ends with becomes one line and its exit code here.

    `rediswq worker` runs in a child process (supervisor.py), forked here, before the command's
    imports: the parent that waits stays small, and the pages redis-py and the rest are loaded
    into are the child's own. Forked after them, the child copied each page it wrote to (a
    reference count is a write), at 10-20 ms of system time a start here.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] != ["worker"]:
        return _run(arguments)
    # The program's modules: before the package, or between this module's import and now (one
    # that imports the handler's module, then runs the command). The rest is the command's own.
    program = frozenset(sys.modules) - (_loaded_with_cli - _loaded_before)
    from rediswq.supervisor import supervised  # noqa: PLC0415 - only the worker's parent needs it

    try:
        return supervised(lambda: _run(arguments, program))
    except QueueError as exc:  # how the worker process ended, said by the parent
        print(f"rediswq: error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run(arguments: list[str], program: frozenset[str] = frozenset()) -> int:
    """`program`: the worker's, the modules the program that runs it loaded (preloaded.py)."""
    args = argparse.Namespace()
    command = arguments[0] if arguments[:1] and arguments[0] in COMMANDS else None
    try:
        # In the try: a Ctrl-C while the modules load is one line.
        parser = _imported(command, program)
        if not arguments:
            # The help, but as a usage error: a Job whose args went missing must not succeed.
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        try:
            args = parser.parse_args(arguments)
        except SystemExit as exc:
            if exc.code:  # a usage error, said by argparse
                raise
            return 0  # --help: a worker's parent must not take it for an early exit
        # Imported with the command: `resolve` needs the settings table, as every command does.
        from rediswq.cli.options import resolve  # noqa: PLC0415

        resolve(args)
        code = int(args.run(args))
        sys.stdout.flush()  # here, where a closed pipe can still be told apart
        return code
    except QueueError as exc:
        error = exc
    except KeyboardInterrupt:  # Ctrl-C before the worker's own handler is in place
        print("rediswq: interrupted", file=sys.stderr)
        return signal_exit(signal.SIGINT)
    except BrokenPipeError:
        return _stdout_closed()
    except Exception as exc:
        described = _redis_error(exc, getattr(args, "redis_url", ""))
        if described is None:
            raise
        error = described
    print(f"rediswq: error: {error}", file=sys.stderr)
    return error.exit_code


def _imported(command: str | None, program: frozenset[str]) -> argparse.ArgumentParser:
    """The parser of `command` (all, if None), with the collector off while its modules load.

    Importing redis-py and the rest makes some 34,000 objects the collector tracks, and next to
    no garbage: the collections their allocations set off freed 560 objects, for 5% of the
    instructions of a worker's start here.

    The worker then freezes them, before the collector is back on: they live as long as the
    process (preloaded.py), and frozen, the collector never walks them again, neither during the
    run nor at exit (30 ms here). Frozen any later, the first collection after the imports walks
    them all while they are still young: 9 ms of every worker's start here. Frozen before the
    handler is imported: what the handler's module holds (an open file, say) is still collected,
    and so flushed and closed, at exit. Not for the other commands: a test's process runs many,
    and what it froze would never be collected.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        parser = build_parser(command)
        if command == "worker":
            from rediswq import preloaded  # noqa: PLC0415 - the worker's alone

            preloaded.freeze(program)
        return parser
    finally:
        if collecting:
            gc.enable()


def _redis_error(exc: Exception, url: str) -> QueueError | None:
    """`exc` in one line, if redis-py raised it."""
    import redis  # noqa: PLC0415 - loaded already by any command that talks to Redis

    from rediswq.connection import credentials_in, describe  # noqa: PLC0415

    if not isinstance(exc, redis.RedisError):
        return None
    from urllib.parse import urlsplit  # noqa: PLC0415

    at = urlsplit(url).netloc.rpartition("@")[2] or "?"
    return describe(exc, at, credentials=credentials_in(url))


def _stdout_closed() -> int:
    """Exit as `cat` or `seq` would on a closed pipe (`rediswq failed | head`): silently, with
    the code of a process killed by SIGPIPE.

    Python ignores SIGPIPE and raises instead; stdout is pointed at /dev/null so the
    interpreter's last flush at exit does not raise again (the recipe of Python's `signal` docs).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return signal_exit(signal.SIGPIPE)
