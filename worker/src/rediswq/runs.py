"""Runs: which list of items a queue is working on, named from the items themselves.

A run's id is computed from the committed items (plus an optional label to re-run the same
items), so the seed and the workers of one deployment agree on it without talking: the seal
records it, and a worker of run R leases only from a queue sealed for R. When a seed starts a
new run, the previous run's counters and dead letters are kept under `Q:run:<id>:*` for
`KEEP_SECONDS`, and what it left undone is moved aside to `Q:run:<id>:pending` until
`rediswq runs restore <id>` puts it back (see seal.lua and restore.lua).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

from rediswq.errors import EXIT_CONFIG, ConfigError, QueueError
from rediswq.queue import WorkQueue

# How long a finished run's counters and dead letters stay readable after the next run starts.
KEEP_SECONDS = 7 * 24 * 3600

# Ids and labels become part of Redis key names and log lines: keep them plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,79}")


class Superseded(QueueError):
    """A newer run took over the queue while this worker's run was in progress."""

    # No retry can bring the run back: a Job's podFailurePolicy fails it at once, and the
    # message says where the remainder went.
    exit_code = EXIT_CONFIG


def run_id(items: Sequence[bytes], label: str = "") -> str:
    """The run id of `items` (as read from the items file) with `label`: `[<label>-]<12 hex>`."""
    return digest_run_id(hashlib.sha256(b"\n".join(items)).hexdigest(), label)


def items_digest(items: Iterable[bytes]) -> str:
    """The SHA-256 (hex) of `items` joined by newlines: what names their run, whatever file,
    compressed or not, holds them (`rediswq digest` prints it)."""
    sha256 = hashlib.sha256()
    separator = b""
    for item in items:
        sha256.update(separator)
        sha256.update(item)
        separator = b"\n"
    return sha256.hexdigest()


def digest_run_id(digest: str, label: str = "") -> str:
    """The run id of the items whose `items_digest` is `digest`, with `label`."""
    return f"{checked(label, 'run label')}-{digest[:12]}" if label else digest[:12]


def checked(name: str, what: str) -> str:
    """`name` if it is fit for a key name and a log line, else a ConfigError naming `what`."""
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} must be 1-80 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def _sealed_run(queue: WorkQueue) -> str:
    with queue.translate_errors():
        value = queue.client.get(queue.keys.sealed)
    return value.decode() if isinstance(value, bytes) else ""


def sealed_run(queue: WorkQueue) -> str:
    """The run the queue is sealed for now; "" if none."""
    return _sealed_run(queue)


def for_run(queue: WorkQueue, sealed: str | None = None) -> str:
    """ " for run R (it is sealed for run S)", to say which seal a worker waited for; `sealed`
    is the seal as already read (else read now)."""
    if not queue.run_id:
        return ""
    if sealed is None:
        sealed = _sealed_run(queue)
    return f" for run {queue.run_id}" + (f" (it is sealed for run {sealed})" if sealed else "")


def check_run_ended(queue: WorkQueue) -> None:
    """Return if the worker's run, sealed before, ended with nothing left undone; else raise
    Superseded, saying where its remainder went."""
    run, name = str(queue.run_id), queue.keys.name
    with queue.translate_errors():
        moved = queue.client.hget(queue.keys.run(run), "moved")
    if moved == b"0":
        return
    now = f"it is now sealed for run {_sealed_run(queue) or '?'}"
    if moved is None:  # no record: `seed --reset` dropped the run
        raise Superseded(f"run {run} was dropped from queue {name!r} by a reset; {now}")
    raise Superseded(
        f"run {run} was superseded in queue {name!r} ({now}): what it left undone is in "
        f"{queue.keys.run(run, ':pending')}; `rediswq runs restore {run}` puts it back"
    )


class RunInfo(NamedTuple):  # not a dataclass: see execution.Failure
    """What the queue remembers of one run (the current one, or one that ended)."""

    id: str
    queued: int  # items its seed queued
    ended: str  # "" while current; "drained", or "superseded" (its remainder moved aside)
    next: str  # the run that followed it
    moved: int  # items moved aside when it was superseded
    restored: int  # of those, put back by `rediswq runs restore`
    done: int  # its counters, while they are kept
    failed: int
    remainder: int  # items still aside, waiting for a restore


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def history(queue: WorkQueue, limit: int = 10) -> tuple[RunInfo | None, list[RunInfo]]:
    """The current run (None if the queue is not sealed) and up to `limit` runs that ended,
    newest first, each with what it kept."""
    keys = queue.keys
    with queue.translate_errors():
        current = _sealed_run(queue)
        ended = [_text(run) for run in queue.client.zrevrange(keys.ended_runs, 0, limit - 1)]
        # No MULTI: Redis 7.0 refuses it at maxmemory, when an operator needs to look most.
        pipe = queue.client.pipeline(transaction=False)
        for run in ended:
            pipe.hgetall(keys.run(run))
            pipe.hget(keys.run(run, ":stats"), "done")
            pipe.llen(keys.run(run, ":failed"))
            pipe.llen(keys.run(run, ":pending"))
        if current:
            pipe.hgetall(keys.run(current))
            pipe.hget(keys.stats, "done")
            pipe.llen(keys.failed)
            pipe.llen(keys.run(current, ":pending"))  # never there: the 0 keeps the shape
        replies = pipe.execute()
    runs = []
    for n, run in enumerate([*ended, current] if current else ended):
        record, done, failed, remainder = replies[4 * n : 4 * n + 4]
        if not record and run != current:
            continue  # expired since the list was read
        fields = {_text(k): _text(v) for k, v in record.items()}
        runs.append(
            RunInfo(
                id=run,
                queued=int(fields.get("queued", 0)),
                ended=fields.get("ended", ""),
                next=fields.get("next", ""),
                moved=int(fields.get("moved", 0)),
                restored=int(fields.get("restored", 0)),
                done=int(done or 0),
                failed=int(failed),
                remainder=int(remainder),
            )
        )
    if current:
        return runs[-1], runs[:-1]
    return None, runs


def restore(queue: WorkQueue, run: str) -> int:
    """Put the items moved aside when `run` was superseded back into the queue, with their
    attempt counts, behind what is pending now; how many."""
    checked(run, "run id")
    # The token lets the script answer a replay (a retry after a lost reply) as the first call.
    reply = queue.run(
        queue.scripts.restore,
        [run, uuid.uuid4().hex, KEEP_SECONDS],
        keys=queue.keys.run_keys(run, 3),  # the record, the remainder, its attempt counts
    )
    outcome, count = reply[0].decode(), int(reply[1])
    if outcome == "already":
        raise QueueError(f"the {count} items set aside from run {run!r} were already restored")
    if outcome == "none":
        raise QueueError(
            f"no items of run {run!r} are set aside in queue {queue.keys.name!r} "
            "(`rediswq status` lists the runs and what each left)"
        )
    return count
