"""Handlers for worker subprocesses in tests (importable through PYTHONPATH=worker/tests).

Each records what it worked on in the file named by RECORD_FILE, one item per line; O_APPEND
writes of one short line are atomic, so many processes can share the file.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TextIO

from rediswq import Reject


def _record(line: str) -> None:
    fd = os.open(os.environ["RECORD_FILE"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record(item: str) -> None:
    _record(item)


def record_slowly(item: str) -> None:
    """Record after SLOW_SECONDS, so a test can kill or stop the worker mid-item."""
    time.sleep(float(os.environ.get("SLOW_SECONDS", "1")))
    _record(item)


def record_under_alarm(item: str) -> None:
    """Sleep SLOW_SECONDS under the handler's own alarm of ALARM_SECONDS (a TimeoutError),
    cancelled in a finally, as a handler that bounds its own time does; record "<item> armed"
    once it is set, and the item at the end."""

    def too_slow(signum: int, frame: FrameType | None) -> None:
        raise TimeoutError(f"{item} took over {seconds}s")

    seconds = int(os.environ.get("ALARM_SECONDS", "60"))
    previous = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(seconds)
    try:
        _record(f"{item} armed")
        time.sleep(float(os.environ.get("SLOW_SECONDS", "1")))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    _record(item)


def fail_on_poison(item: str) -> None:
    if item.startswith("poison"):
        raise ValueError(f"cannot digest {item}")
    _record(item)


def killed_by_poison(item: str) -> None:
    """Die on poison items as the OOM killer would end the worker: SIGKILL, no Python after it."""
    if item.startswith("poison"):
        os.kill(os.getpid(), signal.SIGKILL)
    _record(item)


class _Buffered:
    """Writes through a buffered file it never closes, as a careless handler might: only the
    garbage collector, freeing the class at exit, flushes it."""

    @classmethod
    def write(cls, item: str) -> None:
        _kept_open(cls, "out").write(item + "\n")


def _kept_open(holder: object, name: str) -> TextIO:
    """RECORD_FILE, opened once and kept as `holder`'s attribute `name`."""
    out: TextIO | None = getattr(holder, name, None)
    if out is None:
        out = open(os.environ["RECORD_FILE"], "a", encoding="utf-8")  # noqa: SIM115
        setattr(holder, name, out)
    return out


record_buffered = _Buffered.write


def record_buffered_slowly(item: str) -> None:
    """As record_buffered, then works SLOW_SECONDS on an item named slow*, having said so: a stop
    comes there."""
    record_buffered(item)
    if item.startswith("slow"):
        print(f"buffered {item}", flush=True)
        time.sleep(float(os.environ.get("SLOW_SECONDS", "1")))


def record_buffered_on_a_library(item: str) -> None:
    """As record_buffered, but the file is kept on `json`: a module the worker loaded itself
    (logs.py), after `rediswq`, which this one imports by name."""
    _kept_open(json, "recording_out").write(item + "\n")


def recorded(path: str) -> list[str]:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().splitlines()
    except FileNotFoundError:
        return []


def fail_always(item: str) -> None:
    raise ValueError(f"no luck with {item}")


def reject_bad(item: str) -> str:
    if item.startswith("bad"):
        raise Reject(f"{item} can never work")
    return item.upper()


def block_in_c(item: str) -> None:
    """Hang where no Python exception can reach: in libc's sleep(), in a thread that ignores
    every exception, while the main thread waits for it."""

    def hang() -> None:
        while True:
            with contextlib.suppress(BaseException):  # the point: nothing stops this thread
                ctypes.CDLL(None).sleep(3600)

    if item.startswith("hang"):
        thread = threading.Thread(target=hang)
        thread.start()
        thread.join()
    _record(item)


def misbehave(item: str) -> None:
    """Leave the way an item's name says (sys-exit, os-exit, interrupt), else record it."""
    if item.startswith("sys-exit"):
        sys.exit(0)
    if item.startswith("os-exit"):
        os._exit(0)
    if item.startswith("interrupt"):
        raise KeyboardInterrupt
    _record(item)


def gated(item: str) -> None:
    """Fail on poison items; hold the item "last" until the file GATE_FILE exists."""
    if item == "last":
        while not os.path.exists(os.environ["GATE_FILE"]):
            time.sleep(0.05)
    fail_on_poison(item)


def record_and_shout(item: str) -> str:
    """Record the item and return it upper-cased, a result to keep."""
    _record(item)
    return item.upper()


def fork_a_helper(item: str) -> None:
    """Fork a helper process that ends as the item's name says (exec-...: an exec of a program
    that is not there; else sys.exit(0)); record the item and the helper's exit code."""
    helper = os.fork()
    if helper == 0:
        if item.startswith("exec"):
            os.execv("/nonexistent/helper", ["helper"])  # noqa: S606 - the point: it fails
        sys.exit(0)
    _, status = os.waitpid(helper, 0)
    _record(f"{item} {os.waitstatus_to_exitcode(status)}")


_pool: concurrent.futures.ThreadPoolExecutor | None = None


def leave_work_for_the_exit(item: str) -> None:
    """Leave three things for the process's exit to finish, each recording once it ran: a
    thread that is not a daemon, a ThreadPoolExecutor's task, and an atexit function."""
    global _pool  # noqa: PLW0603 - left open on purpose, as a careless handler leaves it
    if _pool is None:
        _pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        atexit.register(_record, "at exit")

    def later(what: str) -> None:
        time.sleep(0.5)
        _record(what)

    threading.Thread(target=later, args=(f"{item} thread",)).start()
    _pool.submit(later, f"{item} pool")
    _record(item)
