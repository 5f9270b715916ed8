"""An exit code that cannot lie: the worker runs in a child process, and the command exits 0 only
if that child said the queue was drained.

A handler can end its process with exit 0 where no Python code runs after it (`os._exit(0)`, a C
library's `exit(0)`). In the worker Job, one pod that exits 0 completes the Job (its success
policy) and stops the other workers, so the Job could complete with items undone; only another
process can tell that exit from a real finish. The parent stays idle in `waitpid`. It forks before
the command's imports (cli/__init__.py); measured here (medians of 20 runs), the fork and the
pages the child then copies cost 1,500-1,600 page faults and 7-10 ms of system time per worker
process, where forking after the imports cost 5,200 and 35 ms.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

from rediswq.errors import EXIT_FAILURE, QueueError, signal_exit

_FINISHED = b"drained"
# What Kubernetes and a terminal send; the child stops as it would have on its own.
_FORWARDED = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerExit(QueueError):
    """The worker process ended without finishing the queue, and said nothing about it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def supervised(work: Callable[[], int]) -> int:
    """The exit code of `work()` run in a child process: 0 only if `work()` itself returned 0."""
    if not hasattr(os, "fork"):
        return work()
    read_end, write_end = os.pipe()
    child = 0
    reaped = False
    early: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        # A signal that comes after waitpid reaped the child (a storm of SIGTERMs as a pod
        # goes) has no one to go to: the child's own exit code stands. Suppressed too for the
        # instant between the reaping and the flag.
        if reaped:
            return
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)
        else:
            early.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in _FORWARDED}
    parent = os.getpid()
    sys.stdout.flush()  # else both processes would write what is buffered
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        _follow(parent)
        code = work()
        if code == 0:
            with contextlib.suppress(OSError):  # no parent left to tell
                os.write(write_end, _FINISHED)
        os.close(write_end)
        return code
    os.close(write_end)
    for signum in early:
        os.kill(child, signum)
    _, status = os.waitpid(child, 0)
    reaped = True
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    # Non-blocking: a process the handler started may hold the write end open after the child.
    os.set_blocking(read_end, False)
    try:
        finished = os.read(read_end, len(_FINISHED)) == _FINISHED
    except BlockingIOError:
        finished = False
    os.close(read_end)
    code = _verdict(os.waitstatus_to_exitcode(status), finished)
    # The parent ran nothing that needs finalizing; the interpreter's teardown took 15 ms here.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _verdict(code: int, finished: bool) -> int:
    """The command's exit code for a child that ended with `code` (negative: by that signal)."""
    if code == 0 and not finished:
        raise WorkerExit(
            "the worker process exited 0 before the queue was drained (did the handler call "
            "os._exit?); its items come back when their leases expire",
            EXIT_FAILURE,
        )
    if code < 0 and signal.Signals(-code) not in _FORWARDED:
        raise WorkerExit(
            f"the worker process was killed by {signal.Signals(-code).name}; its items come "
            "back when their leases expire",
            signal_exit(-code),
        )
    return signal_exit(-code) if code < 0 else code


def _follow(parent: int) -> None:
    """Set up the child: Python's own signal handling back, and death with the parent."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Ctrl-C reaches the child twice, from the terminal and forwarded by the parent: the second
    # must not interrupt the first one's one-line goodbye. The worker's own handler replaces this.
    signal.signal(signal.SIGINT, _interrupt_once)
    if sys.platform == "linux":
        # No standard library call for prctl. A SIGKILLed parent (an OOM kill, a test) must not
        # leave the worker running on, orphaned, with nobody to read its exit code. Imported
        # here, in the child only: ctypes took 3-5 ms of each start.
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(signal_exit(signal.SIGKILL))


_interrupted = False


def _interrupt_once(signum: int, frame: FrameType | None) -> None:
    global _interrupted  # noqa: PLW0603 - a signal handler's only memory
    if not _interrupted:
        _interrupted = True
        raise KeyboardInterrupt
