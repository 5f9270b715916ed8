"""The finite work queue: lease, complete, extend, release, reclaim (docs/how-it-works.md).

Retries and replays. redis-py sends a call again after a dropped connection or a timeout, and
the first copy may have run: its reply was lost, or a stalled server runs it late. So every call
here is safe to run twice, and this is the one place that says how:
- A step that changes what a worker holds (lease, complete, release, and deadletter.py's failed
  attempt) carries a request id: the session and a sequence number. The script keeps, per
  session, the last request id and the essentials of its reply (state, flags, lease ids; not the
  items). A second copy of that request gets the first reply again, the leases rebuilt from their
  records, instead of running again; an older copy (one that reached Redis after a newer
  request) is refused. So a lost reply never leaves leases nobody works on, and never makes a
  completed lease look lost.
- extend only moves the deadlines of leases the session holds, and reclaim puts back leases
  whose deadline passed: running either twice changes nothing more, so they carry no id. The
  seed's scripts (stage, seal) carry their own token (seeding.py).
Chosen over not retrying (a worker would then fail on every blip and its leases expire) and over
reading the state back after an error (a second round trip the script can do in place).
A session's steps come from one thread at a time; extend may run from another (the lease keeper).
Request ids start at the clock in microseconds, so a new WorkQueue given an old session (a
restarted process) is not taken for a replay of its predecessor.

The memory is one entry of `<queue>:replies` per session (about 100 bytes), and it is bounded: a
worker drops its own when its session ends cleanly (drained, or stopped by a signal with Redis
answering: `end_session`), as the commands `failed requeue` and `failed purge` do once answered;
the seal of the next run drops the rest (workers killed or cut off, a command that lost Redis
after its script ran), as `seed --reset` does. So the hash holds at most an entry per session of
the current run, and, once its workers have exited, only those of killed workers: 30,000
one-item sessions leave none. A late copy of a request that reaches Redis after its memory went
runs as a new one: at worst it leases items nobody works on, which come back when their lease
expires; a late `failed` command finds its named items gone and changes nothing, or, with
`requeue --all`, requeues the dead letters of the moment. Such a copy must have been held up in
the network past its retry's reply and the HDEL that followed it. `failed purge --all` keeps its
entry until the next seal: a late copy of it would drop letters nobody has seen.
"""

from __future__ import annotations

import enum
import itertools
import operator
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, NamedTuple

import redis
from redis.commands.core import Script

from rediswq.errors import ConfigError, QueueError
from rediswq.keys import QueueKeys
from rediswq.replicas import acknowledged
from rediswq.scripts import Scripts, call


class State(enum.Enum):
    """What the queue looked like when a worker asked for work."""

    LEASED = "leased"  # items were leased
    PENDING = "pending"  # items are pending (the caller asked for none)
    WAIT = "wait"  # nothing pending, but other leases are out and may come back
    UNSEALED = "unsealed"  # nothing pending or out, and the seed has not sealed the queue yet
    OTHER_RUN = "other-run"  # sealed for another run than the caller's (see runs.py)
    DRAINED = "drained"  # sealed, nothing pending, nothing out: the work is done


_STATES = {state.value.encode(): state for state in State}


class Released(enum.Enum):
    REQUEUED = 0
    DEAD_LETTERED = 1
    NOT_HELD = -1


# Named tuples, not frozen dataclasses: those set each field through object.__setattr__, and the
# 64 leases of a prefetch took a third of a step's time to make here. A tuple is as immutable,
# and `_lease` makes one without a Python call.
class Lease(NamedTuple):
    id: int
    item: bytes
    attempt: int


class Step(NamedTuple):
    state: State
    leases: list[Lease]
    completed: list[bool]


# The id of a Lease, read in C: a list comprehension is a Python frame a call.
_lease_id = operator.itemgetter(0)

# A Lease of an (id, item, attempt) tuple; its class's __new__ would be a Python call a lease.
_lease = partial(tuple.__new__, Lease)
_step = partial(tuple.__new__, Step)
# Whether a hand-in's flag says the lease was held (1), read in C as _lease_id is.
_held = partial(operator.eq, 1)


class WorkQueue:
    """A finite queue of byte items in Redis, leased one (or a few) at a time.

    Every method is one round trip and one atomic script on the server.
    """

    def __init__(
        self,
        client: redis.Redis,
        name: str = "job2",
        *,
        session: str | None = None,
        lease_seconds: float = 60.0,
        max_attempts: int = 5,
        require_seal: bool = True,
        run: str | None = None,
        handin_replicas: int = 0,
        cluster: bool = False,
    ) -> None:
        if lease_seconds <= 0:
            raise ConfigError(f"lease seconds must be positive, got {lease_seconds}")
        if max_attempts < 1:
            raise ConfigError(f"max attempts must be at least 1, got {max_attempts}")
        self.client = client
        self.keys = QueueKeys(name, cluster)
        self._keys = self.keys.all()
        self.session = session or uuid.uuid4().hex
        self.lease_ms = max(1, round(lease_seconds * 1000))
        self.max_attempts = max_attempts
        self.require_seal = require_seal
        # A worker of a run leases only from a queue sealed for that run.
        self.run_id = run
        self._seal_arg: str | int = f"={run}" if run else int(require_seal)
        self.scripts = Scripts.register(client)
        # Replicas a hand-in waits for (REPLICATED_HANDINS), up to a second: fewer completions
        # lost to a failover, so fewer repeats; a replica that lags only slows the worker.
        self.handin_replicas = handin_replicas
        # Request ids (see the module's docstring) grow across restarts too: a process that
        # reuses a session starts above the ids its predecessor left in Redis.
        self._requests = itertools.count(time.time_ns() // 1000)

    def step(
        self,
        count: int = 1,
        done: Sequence[Lease] = (),
        *,
        lease_seconds: float | None = None,
        reclaim: bool = True,
    ) -> Step:
        """Complete `done`, reclaim expired leases, lease up to `count` items: one round trip.

        A busy worker passes reclaim=False on most steps: reclaiming scans the deadlines, and
        doing it a few times a second is as good as on every item.
        """
        lease_ms = self.lease_ms if lease_seconds is None else max(1, round(lease_seconds * 1000))
        args: list[Any] = [
            self.session,
            next(self._requests),  # next_request(), without a call a step
            lease_ms,
            count,
            self.max_attempts,
            self._seal_arg,
            int(reclaim),
        ]
        args += map(_lease_id, done)
        reply = self.run(self.scripts.lease, args)
        if done and self.handin_replicas:
            acknowledged(self.client, self.handin_replicas)
        first = 1 + len(done)
        # id, attempt, item per lease, made by map() and zip() without a Python loop.
        ids, attempts, items = reply[first::3], reply[first + 1 :: 3], reply[first + 2 :: 3]
        leases = list(map(_lease, zip(map(int, ids), items, map(int, attempts), strict=True)))
        return _step((_STATES[reply[0]], leases, list(map(_held, reply[1:first]))))

    def next_request(self) -> int:
        """A new request id of this session, for a script that remembers its reply."""
        return next(self._requests)

    def lease(self, count: int = 1) -> list[Lease]:
        return self.step(count).leases

    def complete(self, *leases: Lease) -> list[bool]:
        """True for each lease this session still held; False if it expired and was re-leased."""
        args = [self.session, self.next_request(), *self._ids(leases)]
        completed = [bool(f) for f in self.run(self.scripts.complete, args)]
        if self.handin_replicas:
            acknowledged(self.client, self.handin_replicas)
        return completed

    def extend(self, *leases: Lease) -> list[bool]:
        """Renew the leases' deadlines; False for each lease this session no longer holds."""
        args = [self.session, self.lease_ms, *self._ids(leases)]
        return [bool(f) for f in self.run(self.scripts.extend, args)]

    def release(self, *leases: Lease, failed: bool = False) -> list[Released]:
        """Put leases back at the head of the queue.

        failed=True: the attempt failed and counts toward max_attempts (then the dead letters).
        failed=False: the item was never worked on (a shutdown); the attempt is not charged.
        """
        args = [
            self.session, self.next_request(), self.max_attempts, int(failed), *self._ids(leases)
        ]  # fmt: skip
        return [Released(int(f)) for f in self.run(self.scripts.release, args)]

    def end_session(self) -> None:
        """Drop this session's replay memory (see the module's docstring): it sends no more
        requests. HDEL is safe to repeat."""
        with self.translate_errors():
            self.client.hdel(self.keys.replies, self.session)

    def reclaim(self, limit: int = 1000) -> int:
        """Put back every expired lease (up to `limit`); workers also do this on every step."""
        return int(self.run(self.scripts.reclaim, [self.max_attempts, limit]))

    def counts(self) -> tuple[int, int]:
        """(pending, in flight), read at one instant."""
        pending, in_flight, _ = self.run(self.scripts.snapshot, [0])
        return int(pending), int(in_flight)

    def is_empty(self) -> bool:
        """Nothing pending and nothing in flight (the tutorial's notion; ignores the seal)."""
        return self.counts() == (0, 0)

    def is_sealed(self) -> bool:
        with self.translate_errors():
            return bool(self.client.exists(self.keys.sealed))

    def check_types(self) -> None:
        """Fail with a clear message if a queue key holds some other kind of Redis value."""
        self.checked()

    def checked(self) -> tuple[bool, bool]:
        """check_types(), then whether the queue is sealed and whether it is empty (as
        is_empty()), read by one script in one round trip: what a starting worker asks, before
        its first step."""
        try:
            pending, in_flight, _, sealed = call(
                self.client, self.scripts.snapshot, self._keys, ["check"]
            )
        except redis.ResponseError as exc:
            if (named := _wrong_type(str(exc))) is not None:
                raise named from None
            if "WRONGTYPE" not in str(exc):  # else _explain would come back here
                self._explain(exc)
            raise
        return bool(sealed), (pending, in_flight) == (0, 0)

    def run(self, script: Script, args: Sequence[Any], keys: Sequence[str] = ()) -> Any:
        # A plain try, not translate_errors(): this is the per-item path, and a context manager
        # costs as much as a tenth of the client's time per round trip.
        try:
            return call(self.client, script, [*self._keys, *keys] if keys else self._keys, args)
        except redis.ResponseError as exc:
            self._explain(exc)
            raise

    @contextmanager
    def translate_errors(self) -> Iterator[None]:
        """Turn a WRONGTYPE reply into a QueueError that names the key and both types."""
        try:
            yield
        except redis.ResponseError as exc:
            self._explain(exc)
            raise

    def _explain(self, exc: redis.ResponseError) -> None:
        """Raise a one-line QueueError for the errors a user can act on."""
        text = str(exc)
        if "WRONGTYPE" in text:
            # A script's check() names the key; a command's own WRONGTYPE does not, then ask.
            if (named := _wrong_type(text)) is not None:
                raise named from None
            self.check_types()  # raises QueueError for the offending key
        elif "Error compiling script" in text and "user_script:1:" in text:
            # Line 1 of every script is its #!lua line, which only Redis 7.0 and later read.
            raise ConfigError(
                "the Redis server is too old: rediswq needs Redis 7.0 or later, or Valkey 7.2 "
                f"or later ({text.strip()})"
            ) from None
        elif isinstance(exc, redis.OutOfMemoryError) or "OOM command not allowed" in text:
            raise QueueError(
                f"Redis refused to store more: it is over its maxmemory ({text.strip()}); "
                "workers can still drain the queue, which frees memory"
            ) from None

    @staticmethod
    def _ids(leases: Sequence[Lease]) -> list[int]:
        return [lease.id for lease in leases]


def _wrong_type(text: str) -> ConfigError | None:
    """The error of a script's check() (scripts/common.lua) in one line, or None if `text` is
    not one. The last "holds a" is the error's own: the key's name may hold the words too. A
    module's type may have a dash in its name (RedisJSON's ReJSON-RL)."""
    found = re.match(r"WRONGTYPE (.+) holds a ([\w-]+), not a (\w+)", text)
    if found is None:
        return None
    key, got, want = found.groups()
    return ConfigError(f"Redis key {key!r} holds a {got}, not a {want}; wrong queue name?")
