"""Running the handler on one item, in this process or under a time limit: one `Outcome` each."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, NoReturn, Protocol

from rediswq.errors import QueueError
from rediswq.handlers import Handler, HandlerSpec, Reject

if TYPE_CHECKING:  # imported when used: multiprocessing and ctypes took 10-18 ms of every
    # worker's start here, and only a worker with an item timeout uses them
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>

# How long the handler's process may take to import the handler, apart from any item's limit.
_START_SECONDS = 120.0

# How much of a traceback a dead letter keeps; the log has the whole of it.
_TRACEBACK_LINES = 20

Encode = Callable[[object], bytes | None]

# This process's pid, kept by a fork hook: os.getpid() is a system call (0.5 us here), too dear
# to ask on every item. A fork outside Python (a C library's fork() that returns into Python)
# runs no hook and is not seen; os.fork, multiprocessing and subprocess are.
_pid = os.getpid()


def _forked() -> None:
    global _pid  # noqa: PLW0603 - what the fork hook leaves for InProcess
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def this_process() -> int:
    """This process's pid, read without a system call."""
    return _pid


# A NamedTuple, as the records below and in attempts, deadletter, handlers, sentinels and
# cli/options: a frozen dataclass's class compiles five methods at import, 0.6-0.9 ms of every
# worker's start each here; a NamedTuple's is made in C and costs a tenth.
class Failure(NamedTuple):
    type: str
    message: str
    traceback: str  # the whole traceback, as printed; empty if there was no exception
    permanent: bool = False  # no retry can help: the item goes to the dead letters now

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        return cls(
            type(exc).__name__,
            str(exc),
            "".join(traceback.format_exception(exc)).rstrip("\n"),
            isinstance(exc, Reject),
        )

    @property
    def reason(self) -> str:
        return f"{self.type}: {self.message}".splitlines()[0] if self.message else self.type

    def last_lines(self) -> str:
        return "\n".join(self.traceback.splitlines()[-_TRACEBACK_LINES:])


class Outcome(NamedTuple):
    """One attempt: a result (stored with --results; None if none) or a failure."""

    result: bytes | None = None
    failure: Failure | None = None


DONE = Outcome()


class Executor(Protocol):
    def run(self, item: bytes) -> Outcome: ...

    def close(self) -> None: ...


def _leave_forked(exc: BaseException | None) -> NoReturn:
    """End a process the handler forked as Python would have ended it (exit code, traceback),
    with os._exit: no atexit hook or finalizer of the worker's runs twice, and the Redis socket
    shared with the worker is left as it is (a close would shut it for the worker too)."""
    code = 0
    if isinstance(exc, SystemExit):
        if isinstance(exc.code, int) or exc.code is None:
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    elif exc is not None:
        traceback.print_exception(exc)
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


class InProcess:
    """The default: the handler runs in the worker's own thread, at no cost per item. Also how
    TimeLimited's child runs it."""

    def __init__(self, handler: Handler, encode: Encode | None = None) -> None:
        self._handler = handler
        self._encode = encode
        # The process that runs the worker's loop: a process the handler forked that comes back
        # here (a helper that ends with sys.exit, an exec that failed) exits instead. Returning
        # would make it a second worker, with the first one's session and socket: its requests
        # would interleave with the parent's, and each would refuse the other's as STALE.
        self._owner = this_process()

    def run(self, item: bytes) -> Outcome:
        """Call the handler; its exceptions are the outcome, the worker's Shutdown is not."""
        # The whole attempt here, not in a function this calls: a Python call less an item, one
        # of five calls the per-item path lost at once (with worker._work's, logs.printer's,
        # queue.step's and LeaseKeeper.hold's); a no-op item at prefetch 64 then took 24,200
        # instructions instead of 25,600 (callgrind).
        try:
            value = self._handler(item)
        except BaseException as exc:
            if _pid != self._owner:
                _leave_forked(exc)
            # SystemExit and KeyboardInterrupt too: a handler's sys.exit(0) would end the worker
            # with 0 while it holds the item (the Job would count a success with work left),
            # argparse's SystemExit(2) fail the Job; the worker's own SIGINT arrives as Shutdown.
            if isinstance(exc, Exception | SystemExit | KeyboardInterrupt):
                return Outcome(failure=Failure.of(exc))
            raise
        if _pid != self._owner:
            _leave_forked(None)
        if self._encode is None:
            return DONE
        try:
            return Outcome(self._encode(value))
        except Exception as exc:  # a value that is not str, bytes or JSON: the attempt failed
            return Outcome(failure=Failure.of(exc))

    def close(self) -> None:
        pass


class TimeLimited:
    """The handler runs in a child process that is killed when an item runs past `limit`.

    Nothing inside a process can stop a thread blocked in C code or a handler that swallows
    exceptions, but SIGKILL ends any process. One child serves item after item (a pipe round trip
    per item, not a process start); a new one is started after a kill. Started with "spawn": the
    worker has threads (the lease keeper), and a fork could copy a lock one of them holds. As with
    any spawned process, a program that uses this class itself must guard its main module with
    `if __name__ == "__main__":` (the `rediswq` command does).

    Measured here with a no-op handler: 40 us per item, 0.15-0.25 s per process start.
    """

    def __init__(
        self,
        spec: HandlerSpec,
        limit: float,
        encode: Encode | None = None,
        *,
        start_timeout: float = _START_SECONDS,
    ) -> None:
        if limit <= 0:
            raise QueueError(f"item timeout must be positive, got {limit:g}")
        self._spec = spec
        self._limit = limit
        self._encode = encode
        self._start_timeout = start_timeout
        self._child: BaseProcess | None = None
        self._conn: Connection | None = None

    def run(self, item: bytes) -> Outcome:
        conn = self._started()
        if conn is None:
            hung = f"the handler's process did not start within {self._start_timeout:g} s"
            return Outcome(failure=Failure("TimeoutError", hung, ""))
        try:
            conn.send_bytes(item)
            if not conn.poll(self._limit):
                self._stop()
                return Outcome(
                    failure=Failure("TimeoutError", f"timed out after {self._limit:g} s", "")
                )
            outcome: Outcome = conn.recv()
            return outcome
        except (EOFError, OSError):  # the child died: a crash in C code, os._exit, OOM kill
            died = f"the handler's process died (exit {self._stop()})"
            return Outcome(failure=Failure("ChildProcessError", died, ""))
        except BaseException:  # a shutdown signal: the item goes back, its child with it
            self._stop()
            raise

    def close(self) -> None:
        self._stop()

    def _started(self) -> Connection | None:
        """The pipe to a child that has loaded the handler; None if it did not in time (killed)."""
        if self._conn is not None:
            return self._conn
        import multiprocessing  # noqa: PLC0415 - see the imports

        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        child = context.Process(
            target=_serve, args=(theirs, self._spec, self._encode), name="handler", daemon=True
        )
        child.start()
        theirs.close()
        self._child, self._conn = child, ours
        # The handler's import is not charged to the first item's time limit, but has a limit of
        # its own: after a kill it runs again, and may wait on a service that is down by now.
        try:
            if not ours.poll(self._start_timeout):
                self._stop()
                return None
            ready = ours.recv()
        except EOFError:
            child.join(10)  # it is ending by itself: its exit code, not that of a kill
            raise QueueError(
                f"the handler's process exited at start (exit {self._stop()})"
            ) from None
        except BaseException:  # a shutdown signal while it starts
            self._stop()
            raise
        if isinstance(ready, Failure):
            self._stop()
            raise QueueError(ready.message)
        return ours

    def _stop(self) -> int | None:
        child, conn = self._child, self._conn
        self._child = self._conn = None
        if conn is not None:
            conn.close()
        if child is None:
            return None
        # The child leads its own process group (see _serve): this also ends the programs the
        # handler started (a hung converter), which would outlive it otherwise, one per kill.
        if child.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
        child.kill()
        child.join()
        return child.exitcode


def _die_with_parent() -> None:
    """A worker killed outright (SIGKILL, an OOM kill) cannot stop its child; on Linux the kernel
    does. Elsewhere the child ends at its next item, when it finds the pipe closed."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes  # noqa: PLC0415 - see the imports

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _serve(conn: Connection, spec: HandlerSpec, encode: Encode | None) -> None:
    """The child: load the handler once, then an `Outcome` for each item until the pipe closes."""
    # Ctrl-C reaches the whole process group; the worker decides what happens to the item.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # A group of its own, which the worker kills whole: the handler and what it started.
    os.setpgid(0, 0)
    try:
        handler = spec.load()
    except QueueError as exc:
        conn.send(Failure("QueueError", str(exc), ""))
        return
    conn.send(True)
    run = InProcess(handler, encode).run
    while True:
        try:
            item = conn.recv_bytes()
        except EOFError:
            return
        conn.send(run(item))
