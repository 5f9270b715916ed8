"""The queue protocol, one script at a time, against a real server."""

from __future__ import annotations

import threading
import time
from typing import cast

import pytest
import redis
from conftest import QueueFactory, pending_of, stats_of
from faults import FaultProxy, called, loaded
from rediswq import Lease, Released, State, WorkQueue, seed
from rediswq.connection import connect
from rediswq.keys import QueueKeys
from rediswq.server import EmbeddedRedis


def expire(queue: WorkQueue) -> None:
    """Move every deadline into the past: the server clock can't be wound forward."""
    for lease_id in cast(list[bytes], queue.client.zrange(queue.keys.deadlines, 0, -1)):
        queue.client.zadd(queue.keys.deadlines, {lease_id: 0}, xx=True)


def test_items_come_out_in_rpush_order(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.client.rpush(queue.keys.pending, b"a", b"b", b"c")
    assert [lease.item for lease in queue.lease(2)] == [b"a", b"b"]
    assert [lease.item for lease in queue.lease(5)] == [b"c"]


def test_every_copy_of_a_duplicate_is_leased_and_completed_once(make_queue: QueueFactory) -> None:
    queue = make_queue(require_seal=False)
    seed(queue, [b"x", b"x", b"y", b"x"])
    leases = queue.lease(10)
    assert sorted(lease.item for lease in leases) == [b"x", b"x", b"x", b"y"]
    assert len({lease.id for lease in leases}) == 4
    assert queue.complete(*leases) == [True] * 4
    assert queue.complete(*leases) == [False] * 4
    assert stats_of(queue)["done"] == 4
    assert queue.step().state is State.DRAINED


def test_only_the_current_holder_completes(make_queue: QueueFactory) -> None:
    first, second = make_queue(), make_queue()
    first.client.rpush(first.keys.pending, b"job")
    (lease,) = first.lease()
    expire(first)
    (again,) = second.lease()  # reclaims the expired lease, then leases the item anew
    assert again.item == b"job" and again.attempt == 2
    assert first.complete(lease) == [False]
    assert second.complete(again) == [True]
    assert stats_of(first) == {"done": 1, "reclaimed": 1}


def test_items_whose_leases_expired_are_leased_alone_before_a_batch_of_the_rest(
    make_queue: QueueFactory,
) -> None:
    """A batch whose worker died comes back one item a lease: the item that killed it must not
    take the others along again. A failure its worker lived through goes back into a batch."""
    queue = make_queue(lease_seconds=0.2)
    queue.client.rpush(queue.keys.pending, b"a", b"b", b"c", b"d", b"e", b"f")
    assert len(queue.lease(3)) == 3  # and never completed: its worker died
    time.sleep(0.3)
    assert queue.reclaim() == 3
    taken = [queue.step(3, lease_seconds=60, reclaim=False).leases for _ in range(4)]
    assert [[(lease.item, lease.attempt) for lease in step] for step in taken] == [
        [(b"a", 2)],
        [(b"b", 2)],
        [(b"c", 2)],
        [(b"d", 1), (b"e", 1), (b"f", 1)],
    ]
    queue.release(*taken[3][:2], failed=True)  # d and e failed; their worker goes on
    assert [lease.item for lease in queue.step(3, lease_seconds=60).leases] == [b"d", b"e"]


def test_extend_keeps_a_lease_alive_past_its_first_deadline(make_queue: QueueFactory) -> None:
    queue = make_queue(lease_seconds=0.3)
    other = make_queue()
    queue.client.rpush(queue.keys.pending, b"long")
    (lease,) = queue.lease()
    for _ in range(4):
        time.sleep(0.15)
        assert queue.extend(lease) == [True]
    assert other.reclaim() == 0
    assert other.lease() == []
    assert queue.complete(lease) == [True]


def test_an_expired_lease_goes_back_to_the_head(make_queue: QueueFactory) -> None:
    queue = make_queue(lease_seconds=0.2)
    queue.client.rpush(queue.keys.pending, b"first", b"second")
    (lease,) = queue.lease()
    time.sleep(0.3)  # a real expiry, on the server's clock
    assert queue.reclaim() == 1
    assert pending_of(queue) == [b"first", b"second"]
    (again,) = queue.lease()
    assert (again.item, again.attempt) == (b"first", 2)
    assert queue.extend(lease) == [False]


def test_after_max_attempts_an_item_is_dead_lettered(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=3)
    queue.client.rpush(queue.keys.pending, b"poison", b"fine")
    for attempt in (1, 2, 3):
        (lease,) = queue.lease()
        assert (lease.item, lease.attempt) == (b"poison", attempt)
        expire(queue)
        queue.reclaim()
    assert queue.client.lrange(queue.keys.failed, 0, -1) == [b"poison"]
    assert pending_of(queue) == [b"fine"]
    assert stats_of(queue) == {"failed": 1, "reclaimed": 3}
    assert not queue.client.exists(queue.keys.retries)


def test_a_failed_attempt_counts_and_a_released_one_does_not(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=2)
    queue.client.rpush(queue.keys.pending, b"item")
    (lease,) = queue.lease()
    assert queue.release(lease, failed=False) == [Released.REQUEUED]
    (lease,) = queue.lease()
    assert lease.attempt == 1
    assert queue.release(lease, failed=True) == [Released.REQUEUED]
    (lease,) = queue.lease()
    assert lease.attempt == 2
    assert queue.release(lease, failed=True) == [Released.DEAD_LETTERED]
    assert queue.release(lease, failed=True) == [Released.NOT_HELD]
    assert stats_of(queue) == {"released": 1, "retried": 1, "failed": 1}


def test_released_prefetch_goes_back_in_its_order(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.client.rpush(queue.keys.pending, b"1", b"2", b"3", b"4")
    leases = queue.lease(3)
    queue.release(*leases)
    assert pending_of(queue) == [b"1", b"2", b"3", b"4"]


def test_retry_counts_follow_each_copy_of_a_duplicate(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=5)
    queue.client.rpush(queue.keys.pending, b"d", b"d")
    one, two = queue.lease(2)
    queue.release(one, failed=True)
    queue.release(two, failed=True)
    first, second = queue.lease(2)  # failed, not expired: leased together
    assert sorted([first.attempt, second.attempt]) == [2, 2]
    queue.release(first, failed=True)
    assert queue.complete(second) == [True]
    (last,) = queue.lease()
    assert last.attempt == 3
    assert queue.complete(last) == [True]
    assert not queue.client.exists(queue.keys.retries)


def test_step_hands_in_and_leases_in_one_call(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.client.rpush(queue.keys.pending, b"a", b"b")
    (a,) = queue.lease()
    step = queue.step(1, done=[a])
    assert step.completed == [True]
    assert [lease.item for lease in step.leases] == [b"b"]
    assert stats_of(queue)["done"] == 1


def test_a_batch_of_leases_is_kept_unpacked_and_nothing_else_is_kept(
    fresh_server: EmbeddedRedis,
) -> None:
    """A packed hash or sorted set is scanned whole by every insert (see UNPACK_AT in
    common.lua): the step that takes the leases past 32 unpacks both keys, which stay so."""
    queue = WorkQueue(connect(fresh_server.url), "q", require_seal=False)
    queue.client.rpush(queue.keys.pending, *[b"item-%d" % n for n in range(100)])
    few = queue.lease(31)
    assert queue.client.object("encoding", queue.keys.deadlines) == b"listpack"
    many = queue.lease(9)
    held = sorted(str(lease.id).encode() for lease in few + many)
    for key in (queue.keys.leases, queue.keys.deadlines):
        assert queue.client.object("encoding", key) in (b"hashtable", b"skiplist")
    assert sorted(cast(list[bytes], queue.client.hkeys(queue.keys.leases))) == held
    assert sorted(cast(list[bytes], queue.client.zrange(queue.keys.deadlines, 0, -1))) == held
    assert queue.complete(*few, *many[1:]) == [True] * 39
    assert queue.client.object("encoding", queue.keys.deadlines) == b"skiplist"


def test_leases_taken_one_a_step_are_unpacked_at_the_32nd(fresh_server: EmbeddedRedis) -> None:
    """A step of one item takes a path of its own (lease.lua), which must still unpack the keys
    when its lease is the one that reaches UNPACK_AT, as 32 workers at PREFETCH=1 do."""
    queue = WorkQueue(connect(fresh_server.url), "q", require_seal=False)
    queue.client.rpush(queue.keys.pending, *[b"item-%d" % n for n in range(40)])
    leases = [lease for _ in range(31) for lease in queue.lease(1)]
    assert queue.client.object("encoding", queue.keys.deadlines) == b"listpack"
    leases += queue.lease(1)
    for key in (queue.keys.leases, queue.keys.deadlines):
        assert queue.client.object("encoding", key) in (b"hashtable", b"skiplist")
    held = sorted(str(lease.id).encode() for lease in leases)
    assert sorted(cast(list[bytes], queue.client.hkeys(queue.keys.leases))) == held
    assert sorted(cast(list[bytes], queue.client.zrange(queue.keys.deadlines, 0, -1))) == held
    assert [lease.item for lease in leases] == [b"item-%d" % n for n in range(32)]
    assert all(queue.complete(lease) == [True] for lease in leases)
    assert queue.client.hlen(queue.keys.leases) == 0


def test_a_lost_reply_to_the_step_that_unpacks_leases_nothing_twice_and_no_stray_member(
    fault_proxy: FaultProxy, queue_name: str
) -> None:
    """The copy sent again finds the step remembered: the same leases, and the member that
    unpacked the keys (UNPACK_AT in common.lua) gone with the first run."""
    queue = loaded(WorkQueue(connect(fault_proxy.url), queue_name, require_seal=False))
    queue.client.rpush(queue.keys.pending, *[b"item-%d" % n for n in range(100)])
    few = queue.lease(31)
    lost = fault_proxy.lose_reply(called(queue.scripts.lease))
    many = queue.lease(9)  # the step past 32, sent again on a new connection
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert [lease.item for lease in few + many] == [b"item-%d" % n for n in range(40)]
    held = sorted(str(lease.id).encode() for lease in few + many)
    assert sorted(cast(list[bytes], queue.client.hkeys(queue.keys.leases))) == held
    assert sorted(cast(list[bytes], queue.client.zrange(queue.keys.deadlines, 0, -1))) == held
    assert queue.client.object("encoding", queue.keys.deadlines) == b"skiplist"
    assert queue.client.llen(queue.keys.pending) == 60


def test_a_batch_keeps_each_lease_under_its_id_in_decimal(fresh_server: EmbeddedRedis) -> None:
    """The step writes a batch's ids with a table of last digits (id_texts in common.lua), kept
    by the library across calls."""
    client = connect(fresh_server.url)
    for start in (0, 7, 95, 199, 12_345_678_950):
        queue = WorkQueue(client, f"q{start}", require_seal=False)
        queue.client.set(queue.keys.seq, start)
        queue.client.rpush(queue.keys.pending, *[b"item-%d" % n for n in range(250)])
        leases = queue.lease(3) + queue.lease(247)
        assert [lease.id for lease in leases] == list(range(start + 1, start + 251))
        ids = [str(lease.id).encode() for lease in leases]
        records = cast(list[bytes], queue.client.hmget(queue.keys.leases, ids))
        assert [record.split(b"\n")[2] for record in records] == [lease.item for lease in leases]
        members = cast(list[bytes], queue.client.zrange(queue.keys.deadlines, 0, -1))
        assert sorted(members) == sorted(ids)
        assert queue.complete(*leases) == [True] * 250


def test_the_end_needs_the_seal(make_queue: QueueFactory) -> None:
    queue = make_queue()
    other = make_queue()
    assert queue.step().state is State.UNSEALED
    seed(queue, [b"only"])
    (lease,) = queue.lease()
    assert other.step().state is State.WAIT
    assert queue.step(1, done=[lease]).state is State.DRAINED
    assert make_queue(require_seal=False).step().state is State.DRAINED


def test_an_unsealed_queue_ends_without_the_seal_in_manual_mode(make_queue: QueueFactory) -> None:
    queue = make_queue(require_seal=False)
    queue.client.rpush(queue.keys.pending, b"manual")
    (lease,) = queue.lease()
    assert queue.step(1, done=[lease]).state is State.DRAINED


def test_seed_publishes_and_seals_at_once_and_only_once(make_queue: QueueFactory) -> None:
    queue = make_queue()
    items = [f"item-{n}".encode() for n in range(2500)]
    result = seed(queue, items)
    assert (result.queued, result.already_sealed) == (2500, False)
    assert pending_of(queue) == items
    assert queue.is_sealed()
    again = seed(queue, [b"more"], run=result.run)  # the same run: nothing changes
    assert again.already_sealed and pending_of(queue) == items
    assert not list(queue.client.scan_iter(f"{queue.keys.name}:staging:*"))


def test_seed_appends_after_items_pushed_by_hand(make_queue: QueueFactory) -> None:
    queue = make_queue()
    queue.client.rpush(queue.keys.pending, b"by-hand")
    seed(queue, [b"seeded-1", b"seeded-2"])
    assert pending_of(queue) == [b"by-hand", b"seeded-1", b"seeded-2"]


def test_seed_reset_starts_over(make_queue: QueueFactory) -> None:
    queue = make_queue()
    seed(queue, [b"old-1", b"old-2"])
    (lease,) = queue.lease()
    queue.complete(lease)
    result = seed(queue, [b"new"], reset=True)
    assert result.queued == 1
    assert pending_of(queue) == [b"new"]
    assert stats_of(queue) == {}
    assert queue.counts() == (1, 0)


def test_counts_and_emptiness(make_queue: QueueFactory) -> None:
    queue = make_queue()
    assert queue.is_empty()
    queue.client.rpush(queue.keys.pending, b"a", b"b")
    queue.lease()
    assert queue.counts() == (1, 1)
    assert not queue.is_empty()


def test_keys_are_named_after_the_queue() -> None:
    keys = QueueKeys("job2")
    assert keys.pending == "job2"
    assert keys.failed == "job2:failed"
    assert keys.sealed == "job2:sealed"


@pytest.mark.parametrize("pooled", [False, True], ids=["one connection", "pool"])
def test_scripts_survive_a_flush_of_scripts_and_functions(
    fresh_server: EmbeddedRedis, queue_name: str, pooled: bool
) -> None:
    # The worker's single-connection client takes scripts.call's own path, a pool redis-py's.
    queue = WorkQueue(connect(fresh_server.url, pooled=pooled), queue_name)
    queue.client.rpush(queue.keys.pending, b"a", b"b")
    # What a Redis restart without persistence does to loaded scripts and functions.
    queue.client.script_flush()
    queue.client.function_flush()
    (first,) = queue.lease()
    queue.client.script_flush()
    queue.client.function_flush()
    assert queue.complete(first) == [True]
    assert [lease.item for lease in queue.lease()] == [b"b"]


def test_an_argument_redis_cannot_take_fails_as_redis_py_would(make_queue: QueueFactory) -> None:
    """A RedisError, as on redis-py's own path: the lease keeper survives those."""
    queue = make_queue()
    with pytest.raises(redis.DataError):
        queue.run(queue.scripts.reclaim, [None, 1])


def test_threads_can_share_a_queue_and_its_one_connection(make_queue: QueueFactory) -> None:
    """The lease keeper renews from its own thread while the worker steps on the same client."""
    queue = make_queue()
    seed(queue, [f"item-{n}".encode() for n in range(2000)])
    held: list[Lease] = []
    stop = threading.Event()
    renewals: list[list[bool]] = []

    def renew() -> None:
        while not stop.is_set():
            renewals.append(queue.extend(*held[-3:]))

    keeper = threading.Thread(target=renew)
    keeper.start()
    seen = []
    try:
        step = queue.step(1)
        while step.leases:
            held[:] = step.leases
            seen += [lease.item for lease in step.leases]
            step = queue.step(1, step.leases)
            assert step.completed == [True]
    finally:
        stop.set()
        keeper.join()
    assert seen == [f"item-{n}".encode() for n in range(2000)]
    assert len(renewals) > 100  # the two threads did overlap
    assert stats_of(queue)["done"] == 2000
