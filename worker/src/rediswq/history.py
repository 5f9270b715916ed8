"""Each attempt's end as the queue recorded it: a capped Redis stream that outlives the workers'
pods and their logs (`rediswq history`).

The Lua steps write an entry in the same atomic step as the outcome (`log_attempt` and
`log_ends` in scripts/common.lua): done, failed, dead-lettered, released on a shutdown (an
eviction, a node drain), or expired (the worker died holding the item, and another worker
reclaimed it). An attempt alone is an entry with an `item` field, as every entry was before
batches; the attempts a step ended alike (a worker's hand-in of a batch) are one entry, each
under its lease id. The entry's id is the server's time of that step.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from rediswq.leases import shown
from rediswq.queue import WorkQueue

# Entries read per XREVRANGE while filtering: a few ms each; the stream holds about 10,000
# attempts, in as many entries or (batches) fewer.
_PAGE = 500


@dataclass(frozen=True)
class Entry:
    id: str  # the stream id, "<server ms>-<sequence>"
    item: bytes
    attempt: int
    outcome: str  # done | failed: ... | ... dead-lettered | released | expired ...
    worker: str  # the lease holder: in a pod, "<pod name>/<random>"

    @property
    def time(self) -> float:
        """When the step that ended the attempt ran, in seconds (the server's clock)."""
        return int(self.id.partition("-")[0]) / 1000

    def as_json(self) -> dict[str, Any]:
        return {
            "time": self.time,
            "item": shown(self.item),
            "attempt": self.attempt,
            "outcome": self.outcome,
            "worker": self.worker,
        }


_NAMED = {b"outcome", b"worker"}


def _attempts(raw_id: bytes, fields: dict[bytes, bytes]) -> list[Entry]:
    """The attempts of one stream entry, in the order the step ended them."""
    entry_id = raw_id.decode()
    outcome = fields.get(b"outcome", b"").decode("utf-8", "replace")
    worker = fields.get(b"worker", b"").decode("utf-8", "replace")
    if b"item" in fields:  # one attempt
        attempt = int(fields.get(b"attempt", b"0") or 0)
        return [Entry(entry_id, fields[b"item"], attempt, outcome, worker)]
    # The other fields: a lease id each, "<attempt>\n<item>" (the item may hold any bytes).
    ended = []
    for lease, value in fields.items():
        if lease not in _NAMED:
            number, _, item = value.partition(b"\n")
            ended.append(Entry(entry_id, item, int(number or 0), outcome, worker))
    return ended


def newest_first(queue: WorkQueue) -> Iterator[Entry]:
    """Every entry the stream still holds, newest first, read a page at a time."""
    end = b"+"
    while True:
        with queue.translate_errors():
            reply = queue.client.xrevrange(queue.keys.history, end, "-", count=_PAGE)
        # The client decodes nothing (connection.py): ids and fields come back as bytes.
        page = cast(list[tuple[bytes, dict[bytes, bytes]]], reply)
        for raw_id, fields in page:
            yield from reversed(_attempts(raw_id, fields))
        if len(page) < _PAGE:
            return
        end = b"(" + page[-1][0]


def entries(
    queue: WorkQueue, count: int, item: bytes | None = None, worker: str | None = None
) -> list[Entry]:
    """The last `count` entries, oldest first, of `item` and of workers whose name starts with
    `worker` when given."""
    found: list[Entry] = []
    for entry in newest_first(queue):
        if len(found) == count:
            break
        if item is not None and entry.item != item:
            continue
        if worker is not None and not entry.worker.startswith(worker):
            continue
        found.append(entry)
    found.reverse()
    return found
