"""Runs under random operations: new runs seeded mid-run or after the last item, restores, leases
handed in late, failures and expiries. Nothing is lost or made up: every item ever queued is
pending, held, done, a dead letter or set aside with its run, exactly as often as it was queued."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import ClassVar, cast

import pytest
import redis
from collected import Log
from faults import FaultProxy, called
from fullredis import filled
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
from rediswq.connection import connect
from rediswq.deadletter import DeadLetters
from rediswq.execution import Failure
from rediswq.results import ResultStore
from rediswq.runs import restore
from rediswq.server import EmbeddedRedis
from rediswq.worker import Worker

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
            assert all(0 <= int(n.removesuffix(b"!")) < MAX_ATTEMPTS for n in stack.split())


@pytest.mark.timeout(900)
def test_runs_lose_nothing(client: redis.Redis) -> None:
    run_machine(RunsMachine, client, examples=100, steps=40)


class WorkerRunsMachine(RuleBasedStateMachine):
    """Whole workers (rediswq.worker.Worker) over runs, with the faults at the process boundary:
    a full Redis with results on, a handler that forks, a signal while Redis hangs, a requeue of
    no dead letters, each with or without a lost reply. An item whose handler returned is never
    run again unless its lease was cut (the outage), and is never dead-lettered as expired."""

    client: ClassVar[redis.Redis]  # to the server itself, for the test's own reads and settings
    proxied: ClassVar[redis.Redis]  # through the fault proxy, with the retries users get
    server: ClassVar[EmbeddedRedis]
    proxy: ClassVar[FaultProxy]
    names = itertools.count()

    @initialize()
    def start(self) -> None:
        self.name = f"worker-model-{next(self.names)}"
        self.items = itertools.count()
        self.seeded = False
        self.returned: Counter[bytes] = Counter()  # how often the handler returned on an item
        self.cut: set[bytes] = set()  # items whose lease an outage may have cut
        self.again: list[bytes] = []  # items run again after their handler returned

    def _queue(self) -> WorkQueue:
        """A new worker's queue: a session of its own, leases that expire in a second."""
        return WorkQueue(self.proxied, self.name, lease_seconds=1, max_attempts=3)

    def _handler(self, fork: bool) -> Callable[[bytes], str]:
        def handle(item: bytes) -> str:
            if self.returned[item] and item not in self.cut:
                self.again.append(item)
            if fork:  # a helper process that ends with sys.exit(0), as a handler's may
                helper = os.fork()
                if helper == 0:
                    sys.exit(0)
                os.waitpid(helper, 0)
            self.returned[item] += 1
            return item.decode()

        return handle

    def _lose(self, queue: WorkQueue, which: str | None) -> None:
        if which is not None:  # the reply of a step of the worker, after Redis ran it
            self.proxy.lose_reply(called(getattr(queue.scripts, which)), nth=2)

    @rule(n=st.integers(1, 3))
    def seed_a_run(self, n: int) -> None:
        batch = [f"i{next(self.items)}".encode() for _ in range(n)]
        seed(WorkQueue(self.client, self.name), batch)  # a new list: a new run
        self.seeded = True

    @precondition(lambda self: self.seeded)
    @rule(
        results=st.booleans(),
        full=st.booleans(),
        fork=st.booleans(),
        lose=st.sampled_from([None, "lease", "complete"]),
    )
    def work(self, results: bool, full: bool, fork: bool, lose: str | None) -> None:
        queue = self._queue()
        if full:  # no result can be stored (a cap at what it holds now would leave room)
            filled(self.client)
        self._lose(queue, lose)
        try:
            worker = Worker(
                queue, self._handler(fork), results=ResultStore(queue) if results else None,
                poll_interval=0.05, log=Log(),
            )  # fmt: skip
            summary = worker.run()
        finally:
            self.client.config_set("maxmemory", 0)
            self.proxy.forget_faults()
        assert summary.stopped_by is None
        if full and results:
            assert summary.results_not_kept == summary.done

    @precondition(lambda self: self.seeded)
    @rule(lose=st.sampled_from([None, "lease"]))
    def stop_while_redis_hangs(self, lose: str | None) -> None:
        batch = [f"i{next(self.items)}".encode() for _ in range(2)]
        seed(WorkQueue(self.client, self.name), batch)
        queue = self._queue()
        self._lose(queue, lose)

        def hang(item: bytes) -> None:
            self.cut.update(batch)  # the attempt is cut: its item may well run again
            self.server.pause()
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()
            time.sleep(30)  # until the SIGTERM's Shutdown

        try:
            summary = Worker(queue, hang, poll_interval=0.05, log=Log()).run()
        finally:
            self.server.resume()
            self.proxy.forget_faults()
        assert summary.stopped_by == signal.SIGTERM

    @rule(lose=st.booleans())
    def requeue_every_dead_letter(self, lose: bool) -> None:
        letters = DeadLetters(WorkQueue(self.proxied, self.name))
        before = self.client.llen(DeadLetters(self._queue()).queue.keys.failed)
        if lose:
            self.proxied.script_load(letters._requeue.script)  # else the fault hits NOSCRIPT
            self.proxy.lose_reply(called(letters._requeue))
        try:
            assert letters.requeue(every=True) == before  # none, often: Redis 7.0 took -0 badly
        finally:
            self.proxy.forget_faults()

    @invariant()
    def a_returned_item_runs_again_only_if_its_lease_was_cut(self) -> None:
        assert self.again == []

    @invariant()
    def a_returned_item_is_never_dead_lettered_as_expired(self) -> None:
        keys = WorkQueue(self.client, self.name).keys
        for item, raw in cast(dict[bytes, bytes], self.client.hgetall(keys.failures)).items():
            expired = json.loads(raw)["error"].startswith("LeaseExpired")
            assert not (expired and self.returned[item] and item not in self.cut), item

    def teardown(self) -> None:
        self.client.config_set("maxmemory", 0)


@pytest.mark.timeout(900)
def test_whole_workers_never_redo_finished_work_across_the_process_boundary(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rediswq.stops.STOP_SECONDS", 0.5)  # 3 s as users get it: slow here
    admin = connect(fresh_server.url)
    admin.config_set("maxmemory-policy", "noeviction")
    WorkerRunsMachine.proxied = connect(fault_proxy.url)
    WorkerRunsMachine.server = fresh_server
    WorkerRunsMachine.proxy = fault_proxy
    try:
        run_machine(WorkerRunsMachine, admin, examples=12, steps=8)
    finally:
        WorkerRunsMachine.proxied.close()
        admin.close()
