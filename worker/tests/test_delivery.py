"""The delivery guarantee (docs/how-it-works.md) under a lost reply, a stalled server and a
reconnect: every step redis-py may send twice counts once."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from collected import Log
from conftest import QueueFactory, stats_of
from faults import FaultProxy, called, command, loaded
from rediswq import Released, WorkQueue, seed
from rediswq.connection import connect
from rediswq.errors import QueueError
from rediswq.scripts import source
from rediswq.server import EmbeddedRedis
from rediswq.summary import Summary
from rediswq.worker import Worker

ITEMS = [f"item-{n:03d}".encode() for n in range(60)]


def drained_once(queue: WorkQueue, worked: list[bytes], log: Log, summary: Summary) -> None:
    """Each item ran once and was counted once, by the worker and in Redis, and nothing was
    reported lost."""
    assert Counter(worked) == Counter(ITEMS)
    assert stats_of(queue) == {"done": len(ITEMS)}
    assert (summary.done, summary.lost, summary.dead_lettered) == (len(ITEMS), 0, 0)
    assert queue.counts() == (0, 0)
    assert not [line for line in log if line.startswith(("Lease on", "Failed on"))]


@pytest.mark.parametrize("nth", [1, 7])
@pytest.mark.parametrize("prefetch", [1, 3])  # 1: a lease handed in and one taken, alone
def test_a_lost_reply_to_a_lease_step_orphans_no_lease(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis, nth: int, prefetch: int
) -> None:
    name = "q"
    seed(WorkQueue(connect(fresh_server.url), name), ITEMS)
    # One attempt and a short lease: a lease the first call took and nobody works on would
    # expire and be dead-lettered without running.
    queue = loaded(WorkQueue(connect(fault_proxy.url), name, max_attempts=1, lease_seconds=1))
    lost = fault_proxy.lose_reply(called(queue.scripts.lease), nth=nth)
    worked: list[bytes] = []
    log = Log()
    summary = Worker(queue, worked.append, prefetch=prefetch, log=log).run()
    assert lost.fired.is_set()
    drained_once(queue, worked, log, summary)


def test_a_lost_reply_to_a_step_that_leases_an_expired_item_alone_takes_it_once(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis
) -> None:
    """The step sent again answers from its memory: the expired item leased alone, not the next
    one as well (which would be held by nobody until its lease ran out)."""
    queue = loaded(WorkQueue(connect(fault_proxy.url), "q", lease_seconds=0.2))
    seed(queue, [b"a", b"b", b"c"])
    assert len(queue.lease(3)) == 3  # and never completed: its worker died
    time.sleep(0.3)
    assert queue.reclaim() == 3
    lost = fault_proxy.lose_reply(called(queue.scripts.lease))
    (again,) = queue.step(3, lease_seconds=60, reclaim=False).leases
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert (again.item, again.attempt) == (b"a", 2)
    assert queue.counts() == (2, 1)  # b and c pending, only a held


@pytest.mark.parametrize("count", [1, 2])  # 1: complete_one in common.lua
def test_a_lost_reply_to_complete_still_says_completed(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis, count: int
) -> None:
    queue = loaded(WorkQueue(connect(fault_proxy.url), "q"))
    seed(queue, [b"a", b"b"])
    leases = queue.lease(count)
    fault_proxy.lose_reply(called(queue.scripts.complete))
    assert queue.complete(*leases) == [True] * count
    assert stats_of(queue) == {"done": count}


def test_a_lost_reply_to_a_failed_release_still_says_dead_lettered(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis
) -> None:
    queue = loaded(WorkQueue(connect(fault_proxy.url), "q", max_attempts=1))
    seed(queue, [b"poison", b"fine"])
    poison, fine = queue.lease(2)
    fault_proxy.lose_reply(called(queue.scripts.release))
    assert queue.release(poison, failed=True) == [Released.DEAD_LETTERED]
    fault_proxy.lose_reply(called(queue.scripts.release))
    assert queue.release(fine, failed=False) == [Released.REQUEUED]
    assert queue.client.lrange(queue.keys.failed, 0, -1) == [b"poison"]
    assert queue.client.lrange(queue.keys.pending, 0, -1) == [b"fine"]
    assert stats_of(queue) == {"failed": 1, "released": 1, "retried": 0}


def test_a_server_stopped_longer_than_the_socket_timeout_costs_no_item(
    fresh_server: EmbeddedRedis,
) -> None:
    # The reply to the step sent while the server is stopped times out; redis-py reconnects and
    # sends it again; once the server runs again, it finds both copies waiting.
    queue = WorkQueue(connect(fresh_server.url, timeout=0.5), "q", max_attempts=1, lease_seconds=4)
    seed(queue, ITEMS)
    worked: list[bytes] = []

    def handler(item: bytes) -> None:
        worked.append(item)
        if len(worked) == 20:  # the next step goes to a stopped server
            fresh_server.pause()
            threading.Timer(1.5, fresh_server.resume).start()

    log = Log()
    summary = Worker(queue, handler, prefetch=2, log=log).run()
    drained_once(queue, worked, log, summary)


def test_a_key_of_the_wrong_type_mid_run_loses_no_item(fresh_server: EmbeddedRedis) -> None:
    queue = WorkQueue(connect(fresh_server.url), "q", lease_seconds=1)
    seed(queue, ITEMS)
    worked: list[bytes] = []
    saved: list[bytes] = []

    def handler(item: bytes) -> None:
        worked.append(item)
        if len(worked) == 20:  # someone reuses the counter's name for a hash
            value = queue.client.getdel(queue.keys.seq)
            assert isinstance(value, bytes)
            saved.append(value)
            queue.client.hset(queue.keys.seq, "oops", 1)

    with pytest.raises(QueueError, match="holds a hash"):
        Worker(queue, handler, prefetch=4).run()
    queue.client.delete(queue.keys.seq)
    queue.client.set(queue.keys.seq, saved[0])
    after = WorkQueue(connect(fresh_server.url), "q", lease_seconds=1)
    Worker(after, worked.append, prefetch=4).run()
    assert set(worked) == set(ITEMS)  # the step that failed had popped nothing
    assert stats_of(after)["done"] == len(ITEMS)


def test_a_step_refuses_wrong_typed_deadlines_before_it_writes(
    fresh_server: EmbeddedRedis,
) -> None:
    queue = WorkQueue(connect(fresh_server.url), "q")
    seed(queue, ITEMS)
    held = queue.lease(2)
    queue.client.delete(queue.keys.deadlines)
    queue.client.hset(queue.keys.deadlines, "oops", 1)
    before = {key: queue.client.dump(key) for key in queue.keys.all()}
    with pytest.raises(QueueError, match="holds a hash"):
        queue.step(1, held, reclaim=False)
    assert {key: queue.client.dump(key) for key in queue.keys.all()} == before


def test_a_lost_reply_to_a_failed_attempt_still_says_dead_lettered(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis
) -> None:
    queue = loaded(WorkQueue(connect(fault_proxy.url), "q", max_attempts=1))
    seed(queue, [b"poison", *ITEMS])
    fail = queue.client.script_load(source("fail"))  # its SHA, as DeadLetters will call it
    lost = fault_proxy.lose_reply(command("EVALSHA", fail))

    def handler(item: bytes) -> None:
        if item == b"poison":
            raise ValueError("indigestible")

    log = Log()
    summary = Worker(queue, handler, log=log).run()
    assert lost.fired.is_set()
    assert (summary.done, summary.dead_lettered, summary.lost) == (len(ITEMS), 1, 0)
    assert [line for line in log if line.startswith("Failed on")] == [
        "Failed on poison (attempt 1; moved to q:failed): ValueError: indigestible"
    ]
    assert stats_of(queue) == {"done": len(ITEMS), "failed": 1}


def test_a_session_taken_up_again_by_a_new_process_is_not_a_replay(
    make_queue: QueueFactory,
) -> None:
    first = make_queue(session="fixed")
    seed(first, [b"a", b"b", b"c"])
    for _ in range(3):  # its request ids move on
        (lease,) = first.lease()
        first.complete(lease)
    again = make_queue(session="fixed")  # a restart: same session, a new request counter
    seed(again, [b"d"])
    (lease,) = again.lease()
    assert lease.item == b"d"
    assert again.complete(lease) == [True]
