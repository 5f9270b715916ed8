"""Runs under random operations: new runs seeded mid-run or after the last item, restores, leases
handed in late, failures and expiries. Nothing is lost or made up: every item ever queued is
pending, held, done, a dead letter or set aside with its run, exactly as often as it was queued."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import ClassVar, cast

import pytest
import redis
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from machines import run_machine
from rediswq import Lease, WorkQueue, seed
from rediswq.deadletter import DeadLetters
from rediswq.execution import Failure
from rediswq.runs import restore

SESSIONS = ("w0", "w1")
MAX_ATTEMPTS = 2
batches = st.lists(st.sampled_from([b"a", b"b", b"c"]), min_size=1, max_size=4)


class RunsMachine(RuleBasedStateMachine):
    client: ClassVar[redis.Redis]
    names = itertools.count()

    @initialize()
    def start(self) -> None:
        self.name = f"runs-model-{next(self.names)}"
        self.queues = {
            s: WorkQueue(self.client, self.name, session=s, max_attempts=MAX_ATTEMPTS)
            for s in SESSIONS
        }
        self.keys = self.queues[SESSIONS[0]].keys
        self.runs = itertools.count()
        self.current: str | None = None
        self.queued: Counter[bytes] = Counter()
        self.done: Counter[bytes] = Counter()
        self.held: dict[str, list[Lease]] = {s: [] for s in SESSIONS}
        self.ended: list[str] = []

    @rule(batch=batches, again=st.booleans())
    def seed_a_run(self, batch: list[bytes], again: bool) -> None:
        run = self.current if again and self.current else f"r{next(self.runs)}"
        result = seed(self.queues[SESSIONS[0]], batch, run=run)
        if run == self.current:
            assert result.already_sealed
            return
        assert result.previous == (self.current or "")
        if self.current:
            self.ended.append(self.current)
        self.current = run
        self.queued.update(batch)

    @rule(session=st.sampled_from(SESSIONS), count=st.integers(1, 3))
    def lease(self, session: str, count: int) -> None:
        self.held[session] += self.queues[session].lease(count)

    @precondition(lambda self: any(self.held.values()))
    @rule(session=st.sampled_from(SESSIONS), data=st.data())
    def complete(self, session: str, data: st.DataObject) -> None:
        if not self.held[session]:
            return
        lease = data.draw(st.sampled_from(self.held[session]))
        self.held[session].remove(lease)
        if self.queues[session].complete(lease) == [True]:
            self.done[lease.item] += 1

    @precondition(lambda self: any(self.held.values()))
    @rule(session=st.sampled_from(SESSIONS), failed=st.booleans())
    def release(self, session: str, failed: bool) -> None:
        if self.held[session]:
            self.queues[session].release(self.held[session].pop(), failed=failed)

    @precondition(lambda self: any(self.held.values()))
    @rule(session=st.sampled_from(SESSIONS))
    def fail_for_a_later_retry(self, session: str) -> None:
        if self.held[session]:
            failure = Failure("ValueError", "no", "")
            DeadLetters(self.queues[session]).settle(self.held[session].pop(), failure, 60)

    @rule()
    def expire_and_reclaim(self) -> None:
        for lease_id in cast(list[bytes], self.client.zrange(self.keys.deadlines, 0, -1)):
            self.client.zadd(self.keys.deadlines, {lease_id: 0}, xx=True)
        self.queues[SESSIONS[1]].reclaim()

    @precondition(lambda self: bool(self.ended))
    @rule(data=st.data())
    def restore_a_run(self, data: st.DataObject) -> None:
        run = data.draw(st.sampled_from(self.ended))
        aside = self.client.llen(self.keys.run(run, ":pending"))
        if aside:
            assert restore(self.queues[SESSIONS[0]], run) == aside

    def _hvals(self, key: str) -> list[bytes]:
        return cast(list[bytes], self.client.hvals(key))

    def _list(self, key: str) -> list[bytes]:
        return cast(list[bytes], self.client.lrange(key, 0, -1))

    @invariant()
    def nothing_is_lost_or_made_up(self) -> None:
        keys = self.keys
        found = Counter(self._list(keys.pending)) + self.done
        found.update(record.split(b"\n", 2)[2] for record in self._hvals(keys.leases))
        found.update(self._list(keys.failed))
        delayed = cast(list[bytes], self.client.zrange(keys.delayed, 0, -1))
        found.update(entry.split(b"\n", 2)[2] for entry in delayed)
        done = int(cast(bytes | None, self.client.hget(keys.stats, "done")) or 0)
        for run in self.ended:
            found.update(self._list(keys.run(run, ":pending")))
            found.update(self._list(keys.run(run, ":failed")))
            done += int(cast(bytes | None, self.client.hget(keys.run(run, ":stats"), "done")) or 0)
        assert found == self.queued
        assert done == self.done.total()

    @invariant()
    def attempts_stay_within_the_limit(self) -> None:
        for record in self._hvals(self.keys.leases):
            assert 1 <= int(record.split(b"\n", 2)[1]) <= MAX_ATTEMPTS
        for stack in self._hvals(self.keys.retries):
            assert all(0 <= int(n) < MAX_ATTEMPTS for n in stack.split())


@pytest.mark.timeout(900)
def test_runs_lose_nothing(client: redis.Redis) -> None:
    run_machine(RunsMachine, client, examples=100, steps=40)
