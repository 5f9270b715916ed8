"""Log lines: each an event with a message and fields, printed as timestamped text or as JSON.

Code that logs is handed a `Log` (`log("working", f"Working on {item}", item=item, attempt=2)`),
so tests collect what a worker says without reading its output back. A process prints through
one `Lines`: `2026-01-31T12:00:00.123Z INFO Working on apple` in text mode, or one JSON object a
line with the fields `time`, `level`, `event`, `message`, `queue`, `run`, `worker` on every line
and `item`, `attempt`, `duration` where they apply.

Written here rather than through `logging`'s Logger and Formatter: a LogRecord and its handler
chain cost 5.2 us a line on this machine against 1.5 us here, and a worker logs a line per item,
which at a prefetch of 64 takes about 13 us in all. Other code's `logging` records (a handler's
own) are printed through the same `Lines` (stdlogging.py), so one process has one format.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol, TextIO

DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR

# Every event a worker logs, with its level; docs/operating.md, "Logs", lists them.
LEVELS = {
    "started": INFO,  # Worker with sessionID: <worker>
    "run": INFO,  # Worker of run <run>
    "queue-state": INFO,  # Initial queue state: empty=<bool>
    "waiting": INFO,  # why the worker waits: field reason (redis, seal, run, leases)
    "working": INFO,  # Working on <item>
    "item-done": DEBUG,  # Done <item> in <duration>s
    "failed": WARNING,  # Failed on <item> (attempt <n>; where it went): <error>
    "traceback": ERROR,  # the whole traceback of a failed attempt
    "result-not-kept": WARNING,
    "released": INFO,  # items handed back unstarted on a shutdown
    "lease-expired": WARNING,  # found at completion: another worker may repeat the item
    "lease-lost": WARNING,  # found while renewing
    "renew-failed": WARNING,
    "polling": WARNING,  # no wake-ups from the events channel
    "redis-unreachable": WARNING,
    "redis-no-replicas": WARNING,  # writes refused until the replicas are in sync (NOREPLICAS)
    "redis-reconnected": INFO,
    "metrics": INFO,  # where the metrics are served
    "summary": INFO,  # Done <n> items; ...
    "exiting": INFO,  # Queue empty, exiting | Stopped by <signal>, exiting
    "log": INFO,  # a record of Python's logging (from a handler), at its own level
}

_NAMES = {DEBUG: "DEBUG", INFO: "INFO", WARNING: "WARNING", ERROR: "ERROR"}
_PREFIXES = {level: f"{name} " for level, name in _NAMES.items()}
FORMATS = ("text", "json")


class Log(Protocol):
    def __call__(self, event: str, message: str, /, **fields: Any) -> None: ...


def _silent(message: str) -> None:
    """The printer of an event below the level."""


def level_named(name: str) -> int:
    """The level of `name` (debug, info, warning, error, any case); ValueError otherwise."""
    for level, known in _NAMES.items():
        if known == name.upper():
            return level
    raise ValueError(f"expected one of {', '.join(n.lower() for n in _NAMES.values())}")


def enabled(log: Log, event: str) -> bool:
    """Whether `log` prints `event`: a caller skips building a message nobody reads."""
    check = getattr(log, "enabled", None)
    return True if check is None else bool(check(event))


def identity() -> str:
    """This process as a lease holder and in logs: in a pod, its name (POD_NAME from the Downward
    API, else HOSTNAME, which an Indexed Job sets to <job>-<index>), else host:pid.

    A random suffix keeps it unique per process, which the lease scripts rely on (a session's
    request ids must come from one process): the containers of one pod share its name, a
    container restarted in place keeps it, and a pid is unique only on its host.
    """
    in_pod = "KUBERNETES_SERVICE_HOST" in os.environ
    pod = (os.environ.get("POD_NAME") or os.environ.get("HOSTNAME")) if in_pod else None
    name = pod or f"{socket.gethostname()}:{os.getpid()}"
    return f"{name}/{secrets.token_hex(3)}"


class Lines:
    """The process's log: one whole line a call, flushed (tests and `rediswq local` read the lines
    as they come).

    The lease keeper's thread logs too, so a line is written and flushed under a lock. Without
    one, a stream that holds text until a flush could hand one thread's line over after that
    thread's next one (Python's text layer is not safe to share between threads), and a line
    longer than a pipe takes at once (4 KiB; a traceback) could be cut by the other thread's.
    Reentrant: a signal handler that logs may run while its thread holds it.
    """

    def __init__(self, *, form: str = "text", level: int = INFO, out: TextIO | None = None) -> None:
        if form not in FORMATS:
            raise ValueError(f"expected one of {', '.join(FORMATS)}")
        self.json = form == "json"
        self.level = level
        self._out = out
        self._lock = threading.RLock()
        _ALL.add(self)
        self.context: dict[str, Any] = {"queue": None, "run": None, "worker": None}
        # (second, its text) and (a millisecond's start, its end, its stamp), made again when
        # the clock has left them.
        self._stamp = (-1, "")
        self._stamp_ms = (0.0, 0.0, "")
        # The last stream written to, and the same if it writes to an unbuffered file (_text).
        self._unbuffered: tuple[object, io.TextIOWrapper | None] = (None, None)

    def bind(self, **context: Any) -> None:
        """Fields every later line carries (queue, run, worker)."""
        self.context.update(context)

    def enabled(self, event: str) -> bool:
        return LEVELS.get(event, INFO) >= self.level

    def __call__(self, event: str, message: str, /, **fields: Any) -> None:
        level = LEVELS.get(event, INFO)
        if level < self.level:
            return
        if self.json:
            self.emit(level, event, message, fields)
        else:
            self._text(message, level)

    def printer(self, event: str) -> Callable[[str], None] | None:
        """`event` logged with its message alone, for a caller that logs it per item: in text
        form no field is printed, and the call skips building them (a dict a line) and looking up
        the level; None in JSON form, where the fields are printed. Read once: the form and the
        level do not change."""
        level = LEVELS.get(event, INFO)
        if self.json:
            return None
        if level < self.level:
            return _silent
        # At INFO, as "working" is, the method itself: one call a line, where a closure or a
        # partial around it (2,000 instructions more a line) would add another.
        return self._text if level == INFO else functools.partial(self._text, level=level)

    def _text(self, message: str, level: int = INFO) -> None:
        """One line in text form."""
        # A newline or an escape byte is not printable: emit() prefixes every line and escapes.
        if not message.isprintable():
            self.emit(level, "", message, {})
            return
        # A one-line printable message, as a worker's line per item is: the short way, without
        # emit()'s formatting; its time stamp is made once a millisecond, and a prefetching
        # worker logs a dozen lines in one.
        now = time.time()
        out = self._out or sys.stdout  # looked up at each call: tests and `local` replace it
        # One read: the lease keeper's thread may replace it meanwhile. The clock compared as a
        # float, without making an int of it a line.
        start, end, stamp = self._stamp_ms
        if not start <= now < end:  # a later millisecond, or the clock was set back
            millis = int(now * 1000)
            stamp = self._stamped(millis)
            self._stamp_ms = (millis / 1000, (millis + 1) / 1000, stamp)
        # Looked at once a stream: what it writes to never changes. Python's own text layer
        # only: a subclass may hold text until a flush.
        seen, unbuffered = self._unbuffered
        if seen is not out:
            unbuffered = None
            if type(out) is io.TextIOWrapper and isinstance(out.buffer, io.RawIOBase):
                unbuffered = out
            self._unbuffered = (out, unbuffered)
        with self._lock:  # _put() inlined: a call less a line
            out.write(f"{stamp} {_PREFIXES[level]}{message}\n")
            # In write-through mode over an unbuffered file, as `python -u` and PYTHONUNBUFFERED
            # (the image) make stdout, the line is in the file already: a flush was 120 ns of a
            # no-op item's 4 us at prefetch 64 here. Read at each line: a handler may reconfigure.
            if unbuffered is None or not unbuffered.write_through:
                out.flush()

    def _put(self, text: str) -> None:
        out = self._out or sys.stdout  # looked up at each call: tests and `local` replace it
        with self._lock:
            out.write(text)
            out.flush()

    def _stamped(self, millis: int) -> str:
        """The time stamp of a line: `2026-01-31T12:00:00.123Z`."""
        second, fraction = divmod(millis, 1000)
        cached = self._stamp
        if cached[0] != second:  # strftime once a second: it is most of a stamp's cost
            cached = self._stamp = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
        return f"{cached[1]}.{fraction:03d}Z"

    def emit(self, level: int, event: str, message: str, fields: dict[str, Any]) -> None:
        """Print one event at `level`."""
        stamp = self._stamped(int(time.time() * 1000))
        name = _NAMES.get(level) or logging.getLevelName(level)
        if self.json:
            record = {"time": stamp, "level": name.lower(), "event": event, "message": message}
            text = json.dumps({**record, **self.context, **fields}, default=str)
        else:
            if not message.isprintable():  # a C loop over the line; JSON escapes its own
                message = _printable(message)
            if "\n" in message:
                # Every line of a message (a traceback) gets the prefix: a line-based collector
                # keeps the level, and no line looks like another event.
                text = "\n".join(f"{stamp} {name} {part}" for part in message.split("\n"))
            else:
                text = f"{stamp} {name} {message}"
        self._put(text + "\n")


# Every Lines, for the fork hooks: a handler that forks while the lease keeper's thread writes a
# line would leave the child a lock that no thread of its own will release, and a half-written
# line. Held across the fork, as `logging` holds its own lock, and made anew in the child.
_ALL: weakref.WeakSet[Lines] = weakref.WeakSet()


_held: list[Lines] = []  # those whose locks the fork holds


def _before_fork() -> None:
    _held[:] = list(_ALL)
    for lines in _held:
        lines._lock.acquire()


def _after_fork_in_parent() -> None:
    for lines in _held:
        lines._lock.release()
    _held.clear()


def _after_fork_in_child() -> None:
    for lines in _held:
        lines._lock = threading.RLock()
    _held.clear()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


def _printable(message: str) -> str:
    """`message` with what a terminal would act on (an escape sequence, a NUL, a carriage return
    that hides the line's start) written as its Python escape (`\\x1b`); newlines stay, as the
    line breaks of a traceback. Items and errors are any bytes: a log must show them, not run
    them."""
    return "".join(c if c.isprintable() or c == "\n" else ascii(c)[1:-1] for c in message)


def message(line: str) -> str | None:
    """The message of one line printed by `Lines` in either form; None for any other line."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            return None
        text = record.get("message") if isinstance(record, dict) else None
        return text if isinstance(text, str) else None
    stamp, _, rest = line.partition(" ")
    level, _, text = rest.partition(" ")
    if stamp.endswith("Z") and "T" in stamp and level in _NAMES.values():
        return text
    return None


def messages(output: str) -> list[str]:
    """The messages in a worker's output, in order; lines of other origins are left out."""
    found = (message(line) for line in output.splitlines())
    return [text for text in found if text is not None]
