"""Filling a queue for a run: stage the items, then publish them and seal the queue in one step.

Any call here may reach Redis twice: redis-py re-sends a command or a pipeline after a connection
error or a timeout, also when Redis ran it and only the reply was lost. So every step is safe to
repeat, and a seed that lost items fails instead of sealing them as complete:

- each seed stages into a list of its own (`Q:staging:<token>`), batch by batch with stage.lua,
  which appends a batch only at the offset the seed has reached: a re-sent batch changes nothing,
  and items that vanished meanwhile (Redis restarted without persistence) show as a list shorter
  than the offset, which stops the seed with an error;
- seal.lua is told how many items were staged and checks the count before its first write, so a
  partial seed is never sealed;
- seal.lua records the seed's token with the run it seals and answers a replay of that token with
  the first reply: a lost reply to `seed --reset` does not wipe the new items and seal an empty
  queue, and a seed that has just queued never reports "already sealed".

The run (runs.py) decides what a seed does to a sealed queue: the same run changes nothing; a new
run ends the current one, moving what it left undone aside.
"""

from __future__ import annotations

import contextlib
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import redis

from rediswq.errors import ConfigError, QueueError
from rediswq.keys import QueueKeys
from rediswq.queue import WorkQueue
from rediswq.runs import KEEP_SECONDS, checked, digest_run_id, run_id
from rediswq.sources import (
    checked_digest,
    checked_items,
    is_url,
    source_name,
    streamed_items,
)

_BATCH = 1000  # items per stage.lua call
_BATCHES_PER_ROUND_TRIP = 20
_STAGING_TTL = 3600  # a seed that dies half-way leaves nothing behind for long
_PRUNED = 100  # ended runs a seal looks at, to drop those whose record expired
_SEALS_AT_MOST = 10  # tries of a seal that finds the queue sealed for another run than read


@dataclass(frozen=True)
class SeedResult:
    queued: int
    already_sealed: bool
    run: str = ""
    previous: str = ""  # the run this seed ended, if any
    moved: int = 0  # items of `previous` left undone and moved aside
    reset: dict[str, str] | None = None  # what --reset dropped
    dropped_remainder: int = 0  # an earlier run of the same id had left these aside

    def report(self, keys: QueueKeys) -> list[str]:
        """What the seed did to the queue of `keys`, in the lines the `seed` command prints."""
        queue = keys.name
        if self.already_sealed:
            return [
                f"Queue {queue!r} is already sealed for run {self.run}; nothing changed "
                "(a new list or RUN_LABEL starts a new run; --reset starts over)"
            ]
        lines = []
        if self.reset is not None:
            dropped = self.reset
            of_run = f" of run {dropped['dropped_run']}" if dropped["dropped_run"] else ""
            lines.append(
                f"Reset: dropped {dropped['dropped_pending']} pending and "
                f"{dropped['dropped_leased']} leased items, {dropped['dropped_failed']} dead "
                f"letters and the counters (done {dropped['dropped_done']}){of_run}"
            )
        elif self.moved:
            lines.append(
                f"Superseded run {self.previous}: moved its {self.moved} unfinished items "
                f"(pending and leased) to {keys.run(self.previous, ':pending')}; "
                f"`rediswq runs restore {self.previous}` puts them back"
            )
        elif self.previous:
            lines.append(
                f"Run {self.previous} is over; its counters and dead letters are kept in "
                f"{keys.run(self.previous, ':stats')} and :failed for {KEEP_SECONDS // 86400} "
                "days"
            )
        if self.dropped_remainder:
            lines.append(
                f"Run {self.run} starts again: the {self.dropped_remainder} items an earlier run "
                "of it had left aside were dropped, since all its items are queued again"
            )
        lines.append(f"Queued {self.queued} items in {queue!r} for run {self.run} and sealed it")
        return lines


def read_items(path: str | None) -> list[bytes]:
    """Items from a file (or stdin for None or "-"), one per line, UTF-8, blank lines skipped."""
    name = source_name(path or "-")
    try:
        data = sys.stdin.buffer.read() if path in (None, "-") else Path(str(path)).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{name} not found") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
    items = list(checked_items(data.splitlines(), name))
    if not items:
        raise ConfigError(f"{name} has no items (only blank lines or nothing)")
    return items


def planned(source: str, digest: str, run: str, label: str) -> tuple[Iterable[bytes], str]:
    """The items a seed queues from `source` (a file, "-", or a URL) and the run they make.

    With `digest` (ITEMS_SHA256) or an explicit `run` (RUN_ID) the items are streamed, never all
    in memory; the digest then names the run and is checked before the seal. Without either the
    run is computed from the whole list, which a URL may not be read for: Git must pin it.
    """
    if run:
        run = checked(run, "run id (--run-id, RUN_ID)")
    if digest:
        digest = checked_digest(digest)
        return streamed_items(source, digest), run or digest_run_id(digest, label)
    if is_url(source):
        raise ConfigError(
            f"{source_name(source)}: a URL needs its items' digest in ITEMS_SHA256 "
            "(--items-sha256; `rediswq digest` prints it), so that Git pins what is queued"
        )
    if run:
        return streamed_items(source), run
    items = read_items(source)
    return items, run_id(items, label)


def worker_run(run: str, digest: str, items_file: str, label: str) -> str | None:
    """The run a worker is for (RUN_ID, else ITEMS_SHA256, else RUN_ITEMS), or None: then any
    seal will do (the tutorial's manual flows)."""
    if run:
        return checked(run, "run id (--run-id, RUN_ID)")
    if digest and items_file:
        raise ConfigError(
            "--items-sha256 (ITEMS_SHA256) and --run-items (RUN_ITEMS) both name the run: "
            "set one (a list from a URL is named by its digest; components/remote-items "
            "removes RUN_ITEMS from the worker)"
        )
    if digest:
        return digest_run_id(checked_digest(digest), label)
    if items_file:
        return run_id(read_items(items_file), label)
    if label:
        raise ConfigError(
            "--run-label (RUN_LABEL) names a run only with --run-items (RUN_ITEMS) or "
            "--items-sha256 (ITEMS_SHA256)"
        )
    return None


def _batches(items: Iterable[bytes]) -> Iterator[list[bytes]]:
    it = iter(items)
    while batch := list(islice(it, _BATCH)):
        yield batch


def seed(
    queue: WorkQueue, items: Iterable[bytes], *, reset: bool = False, run: str | None = None
) -> SeedResult:
    """Queue `items` for `run` (by default the items' own run id) and seal the queue.

    On a queue sealed for the same run nothing changes (unless `reset`), and `items` is not read:
    a list streamed from a URL is not even fetched. A new run ends the current one.
    """
    if run is None:
        items = list(items)
        if not items:  # sealing nothing would tell waiting workers the work is done
            raise QueueError("no items to queue")
        run = run_id(items)
    token = uuid.uuid4().hex
    staging = queue.keys.staging(token)
    # Asked of seal.lua, not read: spares staging a long list for nothing, and as a write it
    # makes the WAIT after it wait for the replicas to hold the seal (seal.lua).
    if not reset and seal(queue, run, token, staging, 0)[0] == b"unchanged":
        return SeedResult(queued=0, already_sealed=True, run=run)
    try:
        staged = _stage(queue, staging, items)
        if not staged:
            raise QueueError("no items to queue")
    except (QueueError, OSError):
        # The list failed (a digest that does not match, a broken download) or Redis refused it:
        # what was staged would hold Redis's memory until its TTL; a retry stages a new copy.
        _discard(queue, staging)
        raise
    try:
        reply = seal(queue, run, token, staging, staged, reset=reset)
    except redis.ResponseError as exc:
        raise _lost(exc) from None
    outcome, fields = reply[0].decode(), reply[1:]
    record = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}
    if outcome == "unchanged":
        return SeedResult(queued=0, already_sealed=True, run=run)
    return SeedResult(
        queued=int(record["queued"]),
        already_sealed=False,
        run=run,
        previous=record.get("previous", ""),
        moved=int(record.get("previous_moved", 0)),
        reset=_dropped(record) if "dropped_run" in record else None,
        dropped_remainder=int(record.get("dropped_remainder", 0)),
    )


def _discard(queue: WorkQueue, staging: str) -> None:
    # Best effort, and never a long wait: Redis answered the last call, or it did not and the
    # staging list expires on its own.
    with contextlib.suppress(redis.RedisError):
        queue.client.delete(staging)


def _dropped(record: dict[str, str]) -> dict[str, str]:
    dropped = {k: v for k, v in record.items() if k.startswith("dropped_")}
    dropped.pop("dropped_remainder", None)
    return dropped


def seal(
    queue: WorkQueue, run: str, token: str, staging: str, staged: int, *, reset: bool = False
) -> list[Any]:
    """The reply of seal.lua for `staged` items in `staging` (0: only whether the queue is sealed
    for `run`), given the keys it touches: which depend on the run the queue is sealed for now,
    read first, and read again while the script finds another (a seed that came in between)."""
    keys = queue.keys
    with queue.translate_errors():
        current = _text(queue.client.get(keys.sealed))
    try:
        # The oldest first: those whose records expired. A few at each seal keep the list short.
        ended = [_text(id) for id in queue.client.zrange(keys.ended_runs, 0, _PRUNED - 1)]
    except redis.ResponseError:
        ended = []  # not a sorted set: seal.lua's check says which key holds what
    for _ in range(_SEALS_AT_MOST):
        reply: list[Any] = queue.run(
            queue.scripts.seal,
            [int(reset), run, token, staged, KEEP_SECONDS, current, *ended],
            keys=[
                staging, keys.ended_runs, *keys.run_keys(run, 3),
                *keys.run_keys(current or run), *(keys.run(id) for id in ended),
            ],
        )  # fmt: skip
        if reply[0] != b"moved":
            return reply
        current = _text(reply[1])
    raise QueueError(
        f"the seal of queue {keys.name!r} changed {_SEALS_AT_MOST} times while this seed sealed "
        "it: are several seeds running at once? Seed again"
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else ""


def _stage(queue: WorkQueue, staging: str, items: Iterable[bytes]) -> int:
    """Stage `items` in `staging`, `_BATCHES_PER_ROUND_TRIP` batches per pipeline; how many."""
    keys = [*queue.keys.all(), staging]
    offset = 0
    batches: list[tuple[int, list[bytes]]] = []
    for batch in _batches(items):
        batches.append((offset, batch))
        offset += len(batch)
        if len(batches) == _BATCHES_PER_ROUND_TRIP:
            _send(queue, keys, batches)
            batches = []
    if batches:
        _send(queue, keys, batches)
    return offset


def _send(queue: WorkQueue, keys: list[str], batches: list[tuple[int, list[bytes]]]) -> None:
    script = queue.scripts.stage
    for attempt in range(2):
        # EVALSHA, not the Script object: in a pipeline that costs a SCRIPT EXISTS round trip
        # per execute. A server restarted mid-seed answers NOSCRIPT: load, and send again.
        pipe = queue.client.pipeline(transaction=False)
        for offset, batch in batches:
            pipe.evalsha(script.sha, len(keys), *keys, offset, _STAGING_TTL, *batch)
        try:
            with queue.translate_errors():
                pipe.execute()
            return
        except redis.exceptions.NoScriptError:
            if attempt:
                raise
            with queue.translate_errors():  # a server older than 7.0 refuses it here
                queue.client.script_load(script.script)
        except redis.ResponseError as exc:
            raise _lost(exc) from None


def _lost(exc: redis.ResponseError) -> Exception:
    """A QueueError for the scripts' STAGING error (items staged earlier are gone), else `exc`."""
    text = str(exc)
    if "STAGING" not in text:
        return exc
    found = text.split("STAGING", 1)[1].strip()
    return QueueError(
        f"Redis lost items this seed had staged ({found}; restarted without persistence?); "
        "nothing was sealed: seed again"
    )
