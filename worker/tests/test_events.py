"""Wake-ups of waiting workers: how often a subscribed worker polls, and a dropped subscription."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
from collected import Log
from conftest import calls
from faults import FaultProxy, command
from rediswq import events as events_module
from rediswq import seed
from rediswq.connection import connect
from rediswq.events import FLEET_POLLS, Heard, QueueEvents
from rediswq.queue import WorkQueue
from rediswq.server import EmbeddedRedis
from rediswq.worker import Worker


@pytest.fixture
def queue(fresh_server: EmbeddedRedis) -> Iterator[WorkQueue]:
    db = connect(fresh_server.url)
    yield WorkQueue(db, "events")
    db.close()


def _subscribe(queue: WorkQueue, count: int) -> list[redis.client.PubSub]:
    """`count` subscribers to the queue's events, each on a connection of its own, as workers."""
    others = []
    for _ in range(count):
        pubsub = redis.Redis(port=queue.client.connection_pool.connection_kwargs["port"]).pubsub()
        pubsub.subscribe(f"{queue.keys.pending}:events")
        others.append(pubsub)
    return others


def test_a_worker_alone_polls_at_its_interval(queue: WorkQueue) -> None:
    with QueueEvents(queue, Log()) as events:
        events.subscribe()
        assert events.pause(0.25) == 0.25


def test_among_many_subscribers_a_worker_polls_so_that_all_together_poll_as_one_fleet(
    queue: WorkQueue,
) -> None:
    others = _subscribe(queue, 99)  # the other workers
    try:
        with QueueEvents(queue, Log()) as events:
            events.subscribe()
            pauses = [events.pause(0.25) for _ in range(50)]
    finally:
        for pubsub in others:
            pubsub.close()
    shared = 100 / FLEET_POLLS
    assert all(0.5 * shared <= p <= 1.5 * shared for p in pauses), pauses
    assert len(set(pauses)) > 1  # jittered: workers started together do not poll together


def test_a_worker_counts_again_soon_while_the_subscribers_grow(
    queue: WorkQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workers that begin to wait together (as a drain ends) subscribe one after another: the
    # first counts a few, and must not keep that count, polling too often, for 30 s.
    monkeypatch.setattr(events_module, "_RECOUNT_FEW", 0.05)
    others = _subscribe(queue, 9)
    try:
        with QueueEvents(queue, Log()) as events:
            events.subscribe()
            assert events.pause(0.25) > 0.25  # 10: each of them polls every 0.5 s or so
            others += _subscribe(queue, 90)
            time.sleep(0.1)
            pauses = [events.pause(0.25) for _ in range(20)]
            shared = 100 / FLEET_POLLS
            assert all(0.5 * shared <= p <= 1.5 * shared for p in pauses), pauses
            time.sleep(0.1)
            counted = calls(queue.client, "pubsub|numsub")
            events.pause(0.25)  # the same count as before: not asked again for 30 s
            time.sleep(0.1)
            events.pause(0.25)
            assert calls(queue.client, "pubsub|numsub") == counted + 1
    finally:
        for pubsub in others:
            pubsub.close()


def test_a_subscriber_count_no_server_could_hold_leaves_a_worker_at_its_interval(
    queue: WorkQueue,
) -> None:
    """Valkey 9.1.2 answers PUBSUB NUMSUB with hundreds of millions while the table of a channel's
    subscribers is being resized (from 7 * 2**k to 8 * 2**k of them), and keeps that answer until a
    client joins or leaves: with 8 subscribers it does every time (Redis 7.0 counts right)."""
    others = _subscribe(queue, 7)  # with the worker's own, 8: 8 / FLEET_POLLS is under 1 s
    try:
        with QueueEvents(queue, Log()) as events:
            events.subscribe()
            pauses = [events.pause(1.0) for _ in range(3)]
    finally:
        for pubsub in others:
            pubsub.close()
    assert pauses == [1.0, 1.0, 1.0]


def test_a_waiting_worker_tells_the_seal_from_other_wake_ups(queue: WorkQueue) -> None:
    with QueueEvents(queue, Log()) as events:
        events.subscribe()
        assert events.wait(0.1) is Heard.NOTHING
        queue.client.publish(f"{queue.keys.pending}:events", "pending")
        assert events.wait(5) is Heard.EVENT
        seed(queue, [b"a"])  # stages (publishing nothing) and seals
        assert events.wait(5) is Heard.SEALED


def test_a_worker_whose_subscription_was_dropped_wakes_when_it_is_back(queue: WorkQueue) -> None:
    # What was published while the connection was down is lost: coming back is the wake-up.
    with QueueEvents(queue, Log()) as events:
        events.subscribe()
        killed = queue.client.client_kill_filter(_type="pubsub")
        assert killed == 1
        started = time.monotonic()
        events.wait(30)
        assert time.monotonic() - started < 5


def test_a_subscription_that_failed_is_made_at_a_later_wait(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis
) -> None:
    queue = WorkQueue(connect(fault_proxy.url, outage=0), "events")  # no retries of its own
    seal = connect(fresh_server.url)
    try:
        with QueueEvents(queue, Log()) as events:
            fault_proxy.outage(1)  # the subscription's connection is refused
            assert events.wait(0.1) is Heard.NOTHING  # polled
            time.sleep(1.2)
            assert events.wait(0.1) is Heard.NOTHING  # subscribed: the worker steps again
            seal.publish(f"{queue.keys.pending}:events", "sealed")
            assert events.wait(5) is Heard.SEALED
    finally:
        queue.client.close()
        seal.close()


def test_a_subscription_whose_confirmation_was_lost_is_made_once_more_and_hears_the_seal(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis
) -> None:
    # SUBSCRIBE ran, its reply never came: redis-py subscribes again as it reconnects, and the
    # worker must not add a SUBSCRIBE of its own on top.
    queue = WorkQueue(connect(fault_proxy.url, outage=0), "events")
    seal = connect(fresh_server.url)
    try:
        with QueueEvents(queue, Log()) as events:
            lost = fault_proxy.lose_reply(command("SUBSCRIBE"))
            assert events.wait(0.1) is Heard.NOTHING
            assert lost.fired.is_set()
            assert events.wait(0.5) is Heard.NOTHING  # reconnected and subscribed again
            seal.publish(f"{queue.keys.pending}:events", "sealed")
            assert events.wait(5) is Heard.SEALED
            assert calls(seal, "subscribe") == 2
    finally:
        queue.client.close()
        seal.close()


def test_a_user_who_may_not_count_subscribers_polls_at_its_interval(
    fresh_server: EmbeddedRedis,
) -> None:
    admin = connect(fresh_server.url)
    admin.acl_setuser(
        "waiter", enabled=True, passwords=["+secret"], keys=["~*"], channels=["&*"],
        commands=["+@all", "-pubsub"],
    )  # fmt: skip
    url = fresh_server.url.replace("redis://", "redis://waiter:secret@")
    queue = WorkQueue(connect(url), "events")
    try:
        with QueueEvents(queue, Log()) as events:
            events.subscribe()
            with pytest.raises(redis.ResponseError):
                queue.client.pubsub_numsub("x")
            assert events.pause(0.25) == 0.25
            assert events.pause(0.25) == 0.25
    finally:
        queue.client.close()
        admin.close()


def test_a_worker_that_finds_work_at_every_step_never_subscribes(queue: WorkQueue) -> None:
    seed(queue, [b"a", b"b"])
    summary = Worker(queue, lambda item: None, log=Log()).run()
    assert summary.done == 2
    assert calls(queue.client, "subscribe") == 0


def test_a_seal_that_comes_as_a_worker_subscribes_is_not_missed(
    queue: WorkQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker's first step finds the queue unsealed; the seal lands before its subscription,
    # so no message will tell of it: the worker must step again at once, not after its poll.
    subscribe = QueueEvents.subscribe

    def sealed_first(events: QueueEvents) -> bool:
        seed(queue, [b"a"])
        return subscribe(events)

    monkeypatch.setattr(QueueEvents, "subscribe", sealed_first)
    started = time.monotonic()
    summary = Worker(queue, lambda item: None, log=Log(), poll_interval=30).run()
    assert summary.done == 1
    assert time.monotonic() - started < 10
    assert calls(queue.client, "subscribe") == 1
