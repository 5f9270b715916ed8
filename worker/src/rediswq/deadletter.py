"""Failed attempts and dead letters: settle a failure (retry now, later, or never), and list,
requeue or purge the dead letters with the record of why each one failed.

`<queue>:failed` keeps the bare items, as before; `<queue>:failed:info` keeps, per item, the
record of its last failure. An item dead-lettered twice has two entries and one record.
"""

from __future__ import annotations

import enum
import json
import os
import socket
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

from redis.commands.core import Script

from rediswq.errors import QueueError
from rediswq.execution import Failure
from rediswq.queue import Lease, WorkQueue
from rediswq.scripts import source


class Settled(enum.Enum):
    REQUEUED = 0
    DEAD_LETTERED = 1
    DELAYED = 2
    NOT_HELD = -1


def worker_name() -> str:
    """Who failed: in a pod, its name (POD_NAME from the Downward API; HOSTNAME is the pod's name
    too, except in an Indexed Job, where it is <job>-<index>); elsewhere the host's."""
    return os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()


class DeadLetter(NamedTuple):  # not a dataclass: see execution.Failure
    item: str
    error: str  # type: message
    traceback: str  # its last lines
    attempts: int | None  # None: no record (pushed by hand)
    time: float | None  # Unix seconds, the server's clock
    worker: str

    def as_json(self) -> dict[str, Any]:
        return {
            "item": self.item,
            "error": self.error,
            "traceback": self.traceback,
            "attempts": self.attempts,
            "time": self.time,
            "worker": self.worker,
        }


class DeadLetters:
    def __init__(self, queue: WorkQueue) -> None:
        self.queue = queue
        self._fail: Script = queue.client.register_script(source("fail"))
        self._requeue: Script = queue.client.register_script(source("requeue"))
        self._purge: Script = queue.client.register_script(source("purge"))
        self._worker = f"{worker_name()} (pid {os.getpid()}, session {queue.session})"

    def settle(self, lease: Lease, failure: Failure, delay: float) -> Settled:
        """Charge a failed attempt: back after `delay` seconds, or to the dead letters."""
        record = {
            "error": failure.reason,
            "traceback": failure.last_lines(),
            "worker": self._worker,
        }
        args = [
            self.queue.session,
            self.queue.next_request(),
            self.queue.max_attempts,
            lease.id,
            round(delay * 1000),
            int(failure.permanent),
            json.dumps(record),
        ]
        return Settled(int(self.queue.run(self._fail, args)))

    def listing(self) -> list[DeadLetter]:
        """Every dead letter, oldest first, with the record of its item's last failure."""
        keys = self.queue.keys
        with self.queue.translate_errors():
            # No MULTI: Redis 7.0 refuses it at maxmemory, when an operator needs to look most.
            # An item dead-lettered or requeued between the two reads shows without its record.
            pipe = self.queue.client.pipeline(transaction=False)
            pipe.lrange(keys.failed, 0, -1)
            pipe.hgetall(keys.failures)
            items, records = cast(tuple[list[bytes], dict[bytes, bytes]], pipe.execute())
        return [_letter(item, records.get(item)) for item in items]

    def requeue(self, items: Sequence[bytes] = (), *, every: bool = False) -> int:
        """Put dead letters back with fresh attempts; all named ones, or none (QueueError)."""
        return self._named(self._requeue, items, every)

    def purge(self, items: Sequence[bytes] = (), *, every: bool = True) -> int:
        """Drop dead letters and their records, every one or the named ones (all or none, as
        requeue); how many were dropped."""
        return self._named(self._purge, items, every and not items)

    def _named(self, script: Script, items: Sequence[bytes], every: bool) -> int:
        args = [self.queue.session, self.queue.next_request(), int(every), *items]
        reply = self.queue.run(script, args)
        if reply[0] == b"missing":
            names = ", ".join(repr(_text(item)) for item in reply[1:])
            raise QueueError(f"not among the dead letters of {self.queue.keys.name!r}: {names}")
        return int(reply[1])


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def _letter(item: bytes, raw: bytes | None) -> DeadLetter:
    if raw is None:  # put there by hand, or by an older version
        return DeadLetter(_text(item), "no record", "", None, None, "")
    record = json.loads(raw)
    return DeadLetter(
        _text(item),
        str(record.get("error", "")),
        str(record.get("traceback", "")),
        int(record["attempts"]),
        float(record["time"]),
        str(record.get("worker", "")),
    )
