"""How a worker stops on SIGTERM (Kubernetes) or SIGINT (Ctrl-C): it stops leasing, the attempt
it is in or its wait for work is interrupted (Shutdown) so its items go back now, and a deadline
bounds what it does next."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from rediswq.errors import Stopped

# How long a stopped worker may take to release and hand in what it can. Past it, the stop
# signal sent again ends whatever the worker waits on: a read from a Redis that hangs
# (SIGSTOPped, a partition with no RST) waits a socket timeout, and the outage retry up to
# 300 s, where the kubelet gives 30 s before its SIGKILL. A healthy Redis answers these last
# calls in milliseconds. Chosen over a stop flag checked between retries: that cannot end a read
# already waiting.
STOP_SECONDS = 3.0


class Shutdown(BaseException):
    """Raised inside the handler, or in a wait for work, on SIGTERM/SIGINT; a BaseException so
    `except Exception` in user code does not swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals(stopping: Callable[[int], bool]) -> Iterator[None]:
    """SIGTERM and SIGINT within the block: `stopping(signum)` records the stop and says whether
    to raise Shutdown where the main thread is (the handler's call, a wait for work). Past the
    deadline, the signal raises Stopped. Only in the main thread, where Python runs handlers."""

    # No logging here: a print interrupted by a print raises a reentrancy error.
    def on_signal(signum: int, frame: FrameType | None) -> None:
        if deadline.passed():  # this stop's own signal, or one more past the deadline
            raise Stopped
        interrupt = stopping(signum)
        deadline.start(signum)  # the first stop's only
        if interrupt:
            raise Shutdown(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    deadline = _Deadline()
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        try:
            deadline.cancel()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class _Deadline:
    """A stop's deadline: past STOP_SECONDS, a thread sends the stop signal again to the main
    thread, whose handler then raises Stopped.

    Not the process's one real-time timer (setitimer, SIGALRM): a handler may arm its own
    `signal.alarm()` and cancel it in a `finally`, which the stop's Shutdown runs; that cancelled
    the stop's deadline too, and the worker waited on a hung Redis for the kubelet's SIGKILL.
    A signal, as the timer's was, because only a signal ends a read already waiting."""

    def __init__(self) -> None:
        # Between cancel() and the timer's thread only: the signal handler, taking it, could
        # wait on its own thread.
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._cancelled = False
        self._sent = False
        self._taken = False

    def start(self, signum: int) -> None:
        if self._timer is None:
            main = threading.main_thread().ident
            self._timer = threading.Timer(STOP_SECONDS, self._send, (main, signum))
            self._timer.daemon = True
            self._timer.start()

    def passed(self) -> bool:
        """Whether the deadline's signal was sent; the handler asking takes it."""
        self._taken = self._sent
        return self._sent

    def cancel(self) -> None:
        """No signal once this returns: one already sent raises Stopped in here, not in the
        handlers restored next."""
        with self._lock:
            self._cancelled = True
        if self._timer is not None:
            self._timer.cancel()
        if self._sent and not self._taken:
            time.sleep(1.0)  # ended by the handler at once; the bound is for a lost signal

    def _send(self, thread: int, signum: int) -> None:
        with self._lock:
            if not self._cancelled:
                self._sent = True
                signal.pthread_kill(thread, signum)
