"""Handlers' return values, kept per item in `<queue>:results` (opt-in: `--results`).

A result is stored as a one-byte tag and its bytes, so the export gives back what the handler
returned: `s` a str (UTF-8), `b` bytes, `j` anything else as JSON. An item queued twice keeps
one result: the last one written wins. The hash expires `ttl` seconds after its last write.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from rediswq.errors import QueueError, first_line
from rediswq.queue import WorkQueue


class NotKept(QueueError):
    """Redis refused a result: it is over its maxmemory (noeviction)."""


def encoded(value: object) -> bytes | None:
    """The tagged bytes of a handler's return value; None for None (nothing to keep)."""
    if value is None:
        return None
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogateescape")
    if isinstance(value, bytes | bytearray | memoryview):
        return b"b" + bytes(value)
    try:
        return b"j" + json.dumps(value, ensure_ascii=False).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"the handler returned a {type(value).__name__}: not str, bytes or JSON ({exc})"
        ) from None


def decoded(stored: bytes) -> Any:
    """The value a result was stored from (bytes that are not UTF-8 stay bytes)."""
    tag, data = stored[:1], stored[1:]
    if tag == b"j":
        return json.loads(data)
    if tag == b"s":
        return data.decode("utf-8", "surrogateescape")
    return data


def as_json(item: bytes, stored: bytes) -> dict[str, Any]:
    """One exported result; bytes that are not UTF-8 come as base64."""
    value = decoded(stored)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return {"item": _text(item), "result_base64": base64.b64encode(value).decode()}
    if isinstance(value, str):
        value = _text(value.encode("utf-8", "surrogateescape"))
    return {"item": _text(item), "result": value}


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class ResultStore:
    queue: WorkQueue
    max_bytes: int = 65536
    ttl_seconds: int = 7 * 24 * 3600
    encode = staticmethod(encoded)  # a handler's value as this store keeps it

    def too_big(self, stored: bytes) -> bool:
        return len(stored) - 1 > self.max_bytes

    def keep(self, item: bytes, stored: bytes) -> None:
        """Store one result; HSET and EXPIRE are safe to repeat after a lost reply. Raises
        NotKept if Redis is full: the caller decides what a lost result costs."""
        pipe = self.queue.client.pipeline(transaction=True)
        pipe.hset(self.queue.keys.results, item, stored)
        pipe.expire(self.queue.keys.results, self.ttl_seconds)
        with self.queue.translate_errors():
            try:
                pipe.execute()
            except redis.ResponseError as exc:
                # Over maxmemory the HSET is refused inside the MULTI, and EXEC answers
                # EXECABORT; both name the OOM.
                if isinstance(exc, redis.OutOfMemoryError) or "OOM" in str(exc):
                    raise NotKept(f"Redis is over its maxmemory ({first_line(exc)})") from None
                raise


def stored_results(queue: WorkQueue) -> Iterator[tuple[bytes, bytes]]:
    """Every (item, stored result) of the queue, in batches (HSCAN), in no particular order."""
    try:
        yield from queue.client.hscan_iter(queue.keys.results, count=1000)
    except redis.ResponseError as exc:
        if "WRONGTYPE" in str(exc):
            queue.check_types()
        raise
