"""The lease protocol as a state machine: random operations by several sessions on one queue,
each checked against a plain Python model of what the queue must hold after it."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import ClassVar, cast

import pytest
import redis
from conftest import QueueFactory
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from machines import run_machine
from rediswq import Lease, Released, State, WorkQueue, seed
from rediswq.keys import QueueKeys

SESSIONS = ("s0", "s1", "s2")
RUN = "model"
NO_SEAL_SESSION = "s2"  # the tutorial's manual mode: an empty queue is finished, sealed or not
STAT_NAMES = ("done", "failed", "reclaimed", "retried", "released")

# Mostly a few fixed values, so duplicates are common (each copy must keep its own attempt
# count); newlines, spaces and b"" test the lease record's format; any bytes now and then.
values = (
    st.sampled_from([b"a", b"b"]) | st.sampled_from([b"x\ny", b"a b", b""]) | st.binary(max_size=4)
)
batches = st.lists(values, min_size=1, max_size=4)
sessions = st.sampled_from(SESSIONS)


@dataclass
class Held:
    owner: str
    attempt: int
    item: bytes
    aged_to: int | None = None  # the deadline `expire` gave it; None while its own deadline holds


@dataclass
class Copy:
    """One copy of a value in the pending list, with the attempts already spent on it, and
    whether it came back because its lease expired (then it is leased alone)."""

    item: bytes
    attempts: int = 0
    expired: bool = False


@dataclass
class Model:
    """What the queue must hold, copy by copy."""

    max_attempts: int
    pending: deque[Copy] = field(default_factory=deque)
    held: dict[int, Held] = field(default_factory=dict)
    seq: int = 0
    sealed: bool = False
    dead: list[bytes] = field(default_factory=list)
    done: Counter[bytes] = field(default_factory=Counter)
    stats: Counter[str] = field(default_factory=Counter)
    pushed: Counter[bytes] = field(default_factory=Counter)

    def add(self, batch: list[bytes]) -> None:
        self.pending.extend(Copy(item) for item in batch)
        self.pushed.update(batch)

    def owned(self, owner: str, lease_id: int) -> Held | None:
        held = self.held.get(lease_id)
        return held if held is not None and held.owner == owner else None

    def put_back(self, item: bytes, attempts: int, *, expired: bool = False) -> int:
        if attempts >= self.max_attempts:
            self.dead.append(item)
            self.stats["failed"] += 1
            return 1
        self.pending.appendleft(Copy(item, attempts, expired))
        return 0

    def batch(self, count: int) -> int:
        """How many items a step of `count` leases: one if the head came back expired."""
        if count > 1 and self.pending and self.pending[0].expired:
            return 1
        return min(count, len(self.pending))

    def complete(self, owner: str, lease_id: int) -> bool:
        held = self.owned(owner, lease_id)
        if held is None:
            return False
        del self.held[lease_id]
        self.done[held.item] += 1
        self.stats["done"] += 1
        return True

    def reclaim(self, limit: int) -> int:
        # Oldest deadline first; ties never happen because `expire` hands out distinct ones.
        aged = sorted((h.aged_to, i) for i, h in self.held.items() if h.aged_to is not None)
        expired = [lease_id for _, lease_id in aged[:limit]]
        for lease_id in reversed(expired):  # so the oldest ends up at the head
            held = self.held.pop(lease_id)
            self.put_back(held.item, held.attempt, expired=True)
            self.stats["reclaimed"] += 1
        return len(expired)

    def take(self, owner: str, lease: Lease) -> None:
        """The server leased the head of the list: check what it handed out, then record it."""
        assert self.pending, "leased from an empty list"
        head = self.pending.popleft()
        assert lease.item == head.item, "not the head of the list"
        self.seq += 1
        assert lease.id == self.seq, "lease ids are not the queue's sequence"
        assert lease.attempt == head.attempts + 1, "this copy's attempts were not kept"
        self.held[lease.id] = Held(owner, lease.attempt, head.item)

    def state(self, count: int, leased: bool, require_seal: bool) -> State:
        if leased:
            return State.LEASED
        if count == 0 and self.pending:
            return State.PENDING
        if self.held:
            return State.WAIT
        if require_seal and not self.sealed:
            return State.UNSEALED
        return State.DRAINED


class QueueMachine(RuleBasedStateMachine):
    client: ClassVar[redis.Redis]

    def __init__(self) -> None:
        super().__init__()
        self.name = f"sm-{uuid.uuid4().hex[:10]}"
        self.queues: dict[str, WorkQueue] = {}
        self.model = Model(max_attempts=1)
        self.issued: list[Lease] = []  # every lease ever handed out, stale ones included
        self.ages = itertools.count(1)  # fake deadlines far in the past, distinct and increasing

    @initialize(max_attempts=st.sampled_from([3, 2, 1]), first=st.lists(values, max_size=8))
    def open_sessions(self, max_attempts: int, first: list[bytes]) -> None:
        self.model = Model(max_attempts=max_attempts)
        self.queues = {
            session: WorkQueue(
                self.client,
                self.name,
                session=session,
                lease_seconds=600,  # leases never run out by themselves; `expire` ages them
                max_attempts=max_attempts,
                require_seal=session != NO_SEAL_SESSION,
            )
            for session in SESSIONS
        }
        if first:
            self.push(first)

    def teardown(self) -> None:
        keys = list(self.client.scan_iter(match=f"{self.name}*"))
        if keys:
            self.client.delete(*keys)

    def hash(self, key: str) -> dict[bytes, bytes]:
        return cast(dict[bytes, bytes], self.client.hgetall(key))

    @property
    def keys(self) -> QueueKeys:
        return self.queues[SESSIONS[0]].keys

    def pick(self, data: st.DataObject, min_size: int = 1) -> tuple[str, list[Lease]]:
        """Mostly leases held by the session that calls (the path a worker takes), often any
        lease ever issued with any session: stale, foreign, already completed or put back."""
        if not self.issued:
            return data.draw(sessions), []
        held = [lease for lease in self.issued if lease.id in self.model.held]
        either = st.sampled_from(self.issued)
        if held:
            either = st.sampled_from(held) | either
        leases = data.draw(st.lists(either, min_size=min_size, max_size=3))
        holder = self.model.held.get(leases[0].id) if leases else None
        choice = sessions | st.just(holder.owner) if holder else sessions
        return data.draw(choice), leases

    # --- filling the queue

    @rule(batch=batches)
    def push(self, batch: list[bytes]) -> None:
        self.client.rpush(self.keys.pending, *batch)
        self.model.add(batch)

    @rule(batch=batches)
    def seed_and_seal(self, batch: list[bytes]) -> None:
        # One run throughout: a seed of another batch is not a new run here (test_runs.py).
        result = seed(self.queues[SESSIONS[0]], batch, run=RUN)
        if self.model.sealed:
            assert result.already_sealed and result.queued == 0
            return
        assert not result.already_sealed and result.queued == len(batch)
        self.model.add(batch)
        self.model.sealed = True

    # --- the worker's calls

    @rule(count=st.integers(0, 3), reclaim=st.booleans(), data=st.data())
    def step(self, count: int, reclaim: bool, data: st.DataObject) -> None:
        """Any session hands in any leases (its own, stale or foreign ones) and leases more."""
        session, done = self.pick(data, min_size=0)
        self.check_step(session, count, done, reclaim=reclaim)

    @rule(session=sessions, count=st.integers(1, 3), data=st.data())
    @precondition(lambda self: bool(self.model.pending))
    def work(self, session: str, count: int, data: st.DataObject) -> None:
        """A worker's loop: hand in some of what it holds, lease the next items."""
        mine = sorted(i for i, held in self.model.held.items() if held.owner == session)
        done = data.draw(st.lists(st.sampled_from(mine), unique=True)) if mine else []
        self.check_step(session, count, [self.lease_of(i) for i in done], reclaim=True)

    def check_step(self, session: str, count: int, done: list[Lease], *, reclaim: bool) -> None:
        result = self.queues[session].step(count, done, reclaim=reclaim)
        model = self.model
        assert result.completed == [model.complete(session, lease.id) for lease in done]
        if reclaim:
            model.reclaim(100)
        assert len(result.leases) == model.batch(count)
        for lease in result.leases:
            model.take(session, lease)
        self.issued.extend(result.leases)
        require_seal = session != NO_SEAL_SESSION
        assert result.state is model.state(count, bool(result.leases), require_seal)

    @rule(data=st.data())
    @precondition(lambda self: bool(self.issued))
    def complete(self, data: st.DataObject) -> None:
        session, leases = self.pick(data)
        expected = [self.model.complete(session, lease.id) for lease in leases]
        assert self.queues[session].complete(*leases) == expected

    @rule(data=st.data())
    @precondition(lambda self: bool(self.model.held))
    def complete_twice(self, data: st.DataObject) -> None:
        lease_id = data.draw(st.sampled_from(sorted(self.model.held)))
        owner = self.model.held[lease_id].owner
        lease = self.lease_of(lease_id)
        assert self.queues[owner].complete(lease, lease) == [True, False]
        assert self.model.complete(owner, lease_id)
        assert self.queues[owner].complete(lease) == [False]

    @rule(failed=st.booleans(), data=st.data())
    @precondition(lambda self: bool(self.issued))
    def release(self, failed: bool, data: st.DataObject) -> None:
        session, leases = self.pick(data)
        self.check_release(session, leases, failed=failed)

    @rule(data=st.data())
    @precondition(lambda self: bool(self.model.held))
    def fail(self, data: st.DataObject) -> None:
        """A handler raised: its worker gives the one lease back, and the attempt counts."""
        lease_id = data.draw(st.sampled_from(sorted(self.model.held)))
        owner = self.model.held[lease_id].owner
        self.check_release(owner, [self.lease_of(lease_id)], failed=True)

    @rule(data=st.data())
    @precondition(lambda self: bool(self.model.held))
    def stop(self, data: st.DataObject) -> None:
        """A worker stops (SIGTERM): everything it holds goes back, uncharged, in lease order."""
        session = data.draw(st.sampled_from(sorted({h.owner for h in self.model.held.values()})))
        ids = sorted(i for i, held in self.model.held.items() if held.owner == session)
        self.check_release(session, [self.lease_of(i) for i in ids], failed=False)

    def lease_of(self, lease_id: int) -> Lease:
        return next(lease for lease in self.issued if lease.id == lease_id)

    def check_release(self, session: str, leases: list[Lease], *, failed: bool) -> None:
        model = self.model
        expected: list[int] = [0] * len(leases)
        for index in reversed(range(len(leases))):  # the script's order: last id first
            held = model.owned(session, leases[index].id)
            if held is None:
                expected[index] = Released.NOT_HELD.value
                continue
            del model.held[leases[index].id]
            if failed:
                expected[index] = model.put_back(held.item, held.attempt)
                model.stats["retried"] += 1 - expected[index]
            else:
                expected[index] = model.put_back(held.item, held.attempt - 1)
                model.stats["released"] += 1
        outcomes = self.queues[session].release(*leases, failed=failed)
        assert [outcome.value for outcome in outcomes] == expected

    @rule(data=st.data())
    @precondition(lambda self: bool(self.issued))
    def extend(self, data: st.DataObject) -> None:
        session, leases = self.pick(data)
        expected = []
        for lease in leases:
            held = self.model.owned(session, lease.id)
            if held is not None:
                held.aged_to = None
            expected.append(held is not None)
        assert self.queues[session].extend(*leases) == expected

    # --- time passing

    @rule(data=st.data())
    @precondition(lambda self: bool(self.model.held))
    def expire(self, data: st.DataObject) -> None:
        """The server's clock can't be wound forward, so move deadlines into the past, one after
        another in the drawn order, as if those leases had run out in that order."""
        ids = data.draw(st.lists(st.sampled_from(sorted(self.model.held)), min_size=1, unique=True))
        for lease_id in ids:
            age = next(self.ages)
            updated = self.client.zadd(self.keys.deadlines, {str(lease_id): age}, xx=True)
            assert updated == 0  # XX: an update of an existing deadline, never a new one
            self.model.held[lease_id].aged_to = age

    @rule(session=sessions, limit=st.integers(1, 4))
    @precondition(lambda self: bool(self.model.held))
    def reclaim(self, session: str, limit: int) -> None:
        assert self.queues[session].reclaim(limit) == self.model.reclaim(limit)

    # --- what must hold after every step

    @invariant()
    def pending_list_matches_in_order(self) -> None:
        got = self.client.lrange(self.keys.pending, 0, -1)
        assert got == [copy.item for copy in self.model.pending]

    @invariant()
    def leases_match(self) -> None:
        keys = self.keys
        records = {
            int(lease_id): tuple(record.split(b"\n", 2))
            for lease_id, record in self.hash(keys.leases).items()
        }
        expected = {
            lease_id: (h.owner.encode(), str(h.attempt).encode(), h.item)
            for lease_id, h in self.model.held.items()
        }
        assert records == expected
        scored = self.client.zrange(keys.deadlines, 0, -1, withscores=True)
        deadlines = {int(m): s for m, s in cast(list[tuple[bytes, float]], scored)}
        assert set(deadlines) == set(self.model.held)
        for lease_id, held in self.model.held.items():
            if held.aged_to is None:
                assert deadlines[lease_id] > 10**12, "a live lease's deadline is not server time"
            else:
                assert deadlines[lease_id] == held.aged_to

    @invariant()
    def retry_counts_are_kept_for_pending_copies_only(self) -> None:
        """Leased copies take their counts along (checked in `take`); nothing stays behind."""
        pending = Counter(copy.item for copy in self.model.pending)
        for item, stack in self.hash(self.keys.retries).items():
            counts = [int(n.removesuffix(b"!")) for n in stack.split()]
            assert 0 < len(counts) <= pending[item], f"stale retry counts for {item!r}"
            assert all(0 <= n < self.model.max_attempts for n in counts)

    @invariant()
    def dead_letters_counters_seal_and_sequence_match(self) -> None:
        keys = self.keys
        assert self.client.lrange(keys.failed, 0, -1) == self.model.dead
        stats = {k.decode(): int(v) for k, v in self.hash(keys.stats).items()}
        assert set(stats) <= set(STAT_NAMES)
        assert {name: stats.get(name, 0) for name in STAT_NAMES} == {
            name: self.model.stats[name] for name in STAT_NAMES
        }
        assert bool(self.client.exists(keys.sealed)) == self.model.sealed
        assert int(self.client.get(keys.seq) or 0) == self.model.seq

    @invariant()
    def nothing_is_lost_or_made_up(self) -> None:
        model = self.model
        accounted = (
            Counter(copy.item for copy in model.pending)
            + Counter(h.item for h in model.held.values())
            + model.done
            + Counter(model.dead)
        )
        assert accounted == model.pushed
        assert model.stats["done"] == model.done.total()
        assert model.stats["failed"] == len(model.dead)

    @invariant()
    def only_the_documented_keys_exist_and_none_expires(self) -> None:
        """A seed leaves no staging list behind, and queued work never times out."""
        known = {key.encode() for key in [*self.keys.all(), self.keys.run(RUN)]}
        found = set(self.client.scan_iter(match=f"{self.name}*"))
        assert found <= known
        for key in found:
            assert self.client.ttl(key) == -1, f"{key!r} will expire"


# Passing takes ~15 s; a failure is shrunk to a short example, which can take minutes.
@pytest.mark.timeout(900)
def test_the_protocol_matches_its_model(client: redis.Redis) -> None:
    run_machine(QueueMachine, client, examples=200, steps=50)


def test_an_uncharged_release_does_not_take_another_copys_attempts(
    make_queue: QueueFactory,
) -> None:
    """Exact per-copy counts with duplicates, in a case the machine reaches only now and then."""
    queue = make_queue(max_attempts=2)
    queue.client.rpush(queue.keys.pending, b"d", b"d")
    first, second = queue.lease(2)
    assert queue.release(first, failed=True) == [Released.REQUEUED]  # this copy failed once
    assert queue.release(second, failed=False) == [Released.REQUEUED]  # this one never ran
    # The list is now [second's copy (0 failures), first's copy (1 failure)].
    head, tail = queue.lease(2)
    assert (head.attempt, tail.attempt) == (1, 2)
    # So a failure of the copy that never ran must not dead-letter it.
    assert queue.release(head, failed=True) == [Released.REQUEUED]


def test_a_seeded_queue_never_expires(make_queue: QueueFactory) -> None:
    """The seed stages items in a list with a TTL (in case it dies half-way) and renames that
    list onto a new queue; RENAME keeps the TTL unless the script drops it."""
    queue = make_queue()
    seed(queue, [b"a", b"b"])
    (lease,) = queue.lease()
    queue.release(lease, failed=True)
    for key in queue.keys.all():
        assert queue.client.ttl(key) in (-1, -2), f"{key} will expire"
