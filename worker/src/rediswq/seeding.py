"""Filling a queue: stage the items in pipelined batches, then publish and seal in one step."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from rediswq.errors import ConfigError, QueueError
from rediswq.queue import WorkQueue

_BATCH = 1000  # items per RPUSH
_BATCHES_PER_ROUND_TRIP = 20
_STAGING_TTL = 3600  # a seed that dies half-way leaves nothing behind for long


@dataclass(frozen=True)
class SeedResult:
    queued: int
    already_sealed: bool


def read_items(path: str | None) -> list[bytes]:
    """Items from a file (or stdin for None or "-"), one per line, UTF-8, blank lines skipped."""
    name = "stdin" if path in (None, "-") else f"items file {path}"
    try:
        data = sys.stdin.buffer.read() if path in (None, "-") else Path(str(path)).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{name} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
    items = []
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{name}, line {number}: not valid UTF-8 ({exc.reason})") from None
        if line.strip():
            items.append(line)
    if not items:
        raise ConfigError(f"{name} has no items (only blank lines or nothing)")
    return items


def _batches(items: Iterable[bytes]) -> Iterator[list[bytes]]:
    it = iter(items)
    while batch := list(islice(it, _BATCH)):
        yield batch


def seed(queue: WorkQueue, items: Iterable[bytes], *, reset: bool = False) -> SeedResult:
    """Queue `items` and seal the queue. On a sealed queue nothing changes (unless `reset`)."""
    if not reset and queue.is_sealed():
        return SeedResult(queued=0, already_sealed=True)
    staging = queue.keys.staging(uuid.uuid4().hex)
    staged = 0
    with queue.translate_errors():
        pipe = queue.client.pipeline(transaction=False)
        for batch in _batches(items):
            pipe.rpush(staging, *batch)
            pipe.expire(staging, _STAGING_TTL)
            staged += len(batch)
            if len(pipe) >= 2 * _BATCHES_PER_ROUND_TRIP:
                pipe.execute()
        pipe.execute()
    if not staged:  # sealing nothing would tell waiting workers the work is done
        raise QueueError("no items to queue")
    queued = int(queue.run(queue.scripts.seal, [int(reset)], keys=[staging]))
    if queued < 0:
        return SeedResult(queued=0, already_sealed=True)
    return SeedResult(queued=queued, already_sealed=False)
