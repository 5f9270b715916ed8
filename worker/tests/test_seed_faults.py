"""A seed (and a restore) under faults: a lost reply makes redis-py send a script or a pipeline
again, a Redis without persistence can restart mid-seed, and the seed's process can be killed
mid-way. Each test drives the fault for real, through the fault proxy on loopback, by restarting
a real server or by killing a real seed, on each kind installed."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from clustered import Cluster
from conftest import cli_env, pending_of, rediswq
from faults import Command, FaultProxy, called, loaded, sealing
from itemserver import ItemServer, encoded, text
from rediswq import WorkQueue, seed
from rediswq.connection import connect
from rediswq.keys import QueueKeys
from rediswq.runs import items_digest, restore
from rediswq.seeding import seal
from rediswq.server import EmbeddedRedis


@pytest.fixture
def through_proxy(fault_proxy: FaultProxy, queue_name: str) -> Iterator[WorkQueue]:
    """A queue whose client (with the retries users get) talks through the fault proxy."""
    client = connect(fault_proxy.url)
    yield loaded(WorkQueue(client, queue_name))
    client.close()


def staging_command(queue: WorkQueue) -> Callable[[Command], bool]:
    """Matches any command on one of the queue's staging lists."""
    prefix = f"{queue.keys.name}:staging:".encode()
    return lambda args: any(arg.startswith(prefix) for arg in args[1:])


def test_a_lost_reply_to_seed_reset_does_not_seal_an_empty_queue(
    fault_proxy: FaultProxy, through_proxy: WorkQueue
) -> None:
    queue = through_proxy
    seed(queue, [b"old-1", b"old-2"])
    lost = fault_proxy.lose_reply(called(queue.scripts.seal))
    new = [f"new-{n}".encode() for n in range(3000)]
    result = seed(queue, new, reset=True)
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert result.queued == 3000
    assert pending_of(queue) == new
    assert queue.is_sealed()


def test_a_lost_reply_to_the_seal_called_again_for_the_run_it_found_seals_once(
    fault_proxy: FaultProxy, through_proxy: WorkQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another seed sealed the queue between this seed's read of the seal and its seal: the
    script answers "moved", and the seed calls it again with the keys of the run it found. That
    second call's reply is lost and redis-py sends it again: the copy must find this seal done,
    not move the run aside a second time."""
    queue = through_proxy
    seed(queue, [b"old-1", b"old-2"], run="old")
    staging = queue.keys.staging("mine")
    queue.client.rpush(staging, b"new-1")
    read, reads = queue.client.get, iter([None])  # the seal as it was before the other seed's
    monkeypatch.setattr(
        queue.client, "get", lambda key: next(reads) if key == queue.keys.sealed else read(key)
    )
    lost = fault_proxy.lose_reply(called(queue.scripts.seal), nth=2)
    reply = seal(queue, "new", "my-token", staging, 1)
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert reply[0] == b"sealed"
    record = dict(zip(reply[1::2], reply[2::2], strict=True))
    assert (record[b"queued"], record[b"previous_moved"]) == (b"1", b"2")
    assert pending_of(queue) == [b"new-1"]
    assert queue.client.lrange(queue.keys.run("old", ":pending"), 0, -1) == [b"old-1", b"old-2"]


def test_a_lost_reply_to_staging_queues_each_item_once(
    fault_proxy: FaultProxy, through_proxy: WorkQueue
) -> None:
    queue = through_proxy
    lost = fault_proxy.lose_reply(staging_command(queue))
    items = [f"item-{n}".encode() for n in range(3000)]
    result = seed(queue, items)
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert result.queued == 3000
    assert pending_of(queue) == items


def test_a_lost_reply_to_the_seal_still_reports_what_this_seed_queued(
    fault_proxy: FaultProxy, queue_name: str, tmp_path: Path
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("apple\nbanana\n", encoding="utf-8")
    probe = loaded(WorkQueue(redis.Redis(port=fault_proxy.upstream_port), queue_name))
    lost = fault_proxy.lose_reply(sealing(probe))
    result = rediswq("seed", str(items), "--redis-url", fault_proxy.url, "--queue", queue_name)
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert result.returncode == 0, result.stderr
    assert "nothing changed" not in result.stdout
    assert result.stdout.splitlines()[-1].startswith(f"Queued 2 items in {queue_name!r}")
    assert pending_of(probe) == [b"apple", b"banana"]


def test_a_lost_reply_to_a_restore_still_reports_what_it_restored(
    fault_proxy: FaultProxy, through_proxy: WorkQueue
) -> None:
    queue = through_proxy
    seed(queue, [b"a", b"b"], run="old")
    seed(queue, [b"c"], run="new")  # supersedes "old" with both items pending
    lost = fault_proxy.lose_reply(called(queue.scripts.restore))
    assert restore(queue, "old") == 2
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert pending_of(queue) == [b"c", b"a", b"b"]


def test_a_seed_that_loses_staged_items_to_a_restart_fails_and_seals_nothing(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    """Redis without persistence restarts mid-seed: what was staged is gone, the rest is not."""
    items = tmp_path / "items.txt"
    items.write_text("".join(f"item-{n:07d}\n" for n in range(1_000_000)), encoding="utf-8")
    watcher = redis.Redis(port=fresh_server.port)
    restarted = threading.Event()

    def restart_mid_seed() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):  # the watcher's, while it restarts
                staged = [watcher.llen(key) for key in watcher.scan_iter(f"{queue_name}:staging:*")]
                if staged and staged[0] >= 100_000:
                    fresh_server.restart()  # --save "" and no AOF: everything is gone
                    restarted.set()
                    return
            time.sleep(0.005)

    thread = threading.Thread(target=restart_mid_seed)
    thread.start()
    result = rediswq(
        "seed", str(items), "--redis-url", fresh_server.url, "--queue", queue_name, timeout=300
    )
    thread.join()
    assert restarted.is_set(), "the seed finished before the restart: the test proves nothing"
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("rediswq: error: Redis lost items this seed had staged")
    assert "nothing was sealed" in line
    after = redis.Redis(port=fresh_server.port)
    assert after.exists(f"{queue_name}:sealed") == 0
    assert after.llen(queue_name) == 0


def test_the_seal_checks_the_staged_count_before_it_writes(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    """Staged items lost between the last batch and the seal: the seal refuses, changing nothing."""
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    seed(queue, [b"old"], run="old")
    staging = queue.keys.staging("lost-one")
    queue.client.rpush(staging, b"a", b"b")  # a seed staged 3; one vanished
    before = {key: queue.client.dump(key) for key in queue.client.keys("*")}
    with pytest.raises(redis.ResponseError, match="STAGING 2 of the 3 staged items"):
        seal(queue, "new", "token", staging, 3, reset=True)
    assert {key: queue.client.dump(key) for key in queue.client.keys("*")} == before


def test_a_seal_replayed_after_another_seed_answers_as_the_first_time(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    """The retry of a seal whose reply was lost can come after another seed's seal."""
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    staging = queue.keys.staging("mine")
    queue.client.rpush(staging, b"a-1", b"a-2")
    first = seal(queue, "a", "my-token", staging, 2)
    seed(queue, [b"b-1"], run="b")  # supersedes "a", both its items pending
    again = seal(queue, "a", "my-token", staging, 2)
    assert again[0] == first[0] == b"sealed"
    assert dict(zip(again[1::2], again[2::2], strict=True))[b"queued"] == b"2"
    assert pending_of(queue) == [b"b-1"]
    assert queue.client.lrange(queue.keys.run("a", ":pending"), 0, -1) == [b"a-1", b"a-2"]


def test_a_seal_that_read_another_current_run_says_which_and_changes_nothing(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    """Another seed sealed the queue between this seed's read of the seal and its seal: the
    script, given the keys of the run read, names the run it found before any write."""
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    seed(queue, [b"old"], run="old")
    staging = queue.keys.staging("mine")
    queue.client.rpush(staging, b"new")
    before = {key: queue.client.dump(key) for key in queue.client.keys("*")}
    keys = [staging, queue.keys.ended_runs, *queue.keys.run_keys("new", 3)]
    args = [0, "new", "my-token", 1, 60, ""]  # read as not sealed at all
    stale = queue.run(queue.scripts.seal, args, keys=[*keys, *queue.keys.run_keys("new")])
    assert stale == [b"moved", b"old"]
    assert {key: queue.client.dump(key) for key in queue.client.keys("*")} == before
    assert seal(queue, "new", "my-token", staging, 1)[0] == b"sealed"  # reads, and seals
    assert pending_of(queue) == [b"new"]


def _killed_mid_stream_then_seeded_again(
    url: str, client: redis.Redis, keys: QueueKeys, items: ItemServer
) -> None:
    """SIGKILL a seed streaming a list once it staged its first round trip's 20,000 items and
    waits for the rest; then seed again. The killed one left no item a worker can take, and the
    second queues each item once."""
    listed = [f"item-{n:06d}" for n in range(30_000)]
    items.files["/items.txt"] = text(listed)
    items.hold["/items.txt"] = len(text(listed[:25_000]))
    env = cli_env(ITEMS_SHA256=items_digest(encoded(listed)))
    command = ["seed", items.url("/items.txt"), "--redis-url", url, "--queue", keys.name]
    seeder = subprocess.Popen([sys.executable, "-m", "rediswq", *command], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (staged := client.keys(keys.staging("*"))) or client.llen(staged[0]) < 20_000:
            assert seeder.poll() is None and time.monotonic() < deadline, "never staged 20,000"
            time.sleep(0.02)
    finally:
        alive = seeder.poll() is None
        seeder.kill()
        seeder.wait()
    assert alive and seeder.returncode == -signal.SIGKILL, "the seed ended before the kill"
    assert client.llen(keys.pending) == 0
    assert client.exists(keys.sealed) == 0
    (orphan,) = staged
    assert 0 < client.ttl(orphan) <= 3600  # it goes on its own

    items.released.set()
    again = rediswq(*command, env=env)
    assert again.returncode == 0, again.stderr
    assert f"Queued {len(listed)} items" in again.stdout
    assert client.lrange(keys.pending, 0, -1) == encoded(listed)
    assert client.exists(keys.sealed) == 1
    assert client.keys(keys.staging("*")) == [orphan]  # the second seed's went into the queue


def test_a_seed_killed_mid_stream_queues_nothing_and_the_next_queues_each_item_once(
    fresh_server: EmbeddedRedis, queue_name: str, item_server: ItemServer
) -> None:
    with redis.Redis(port=fresh_server.port) as client:
        keys = QueueKeys(queue_name)
        _killed_mid_stream_then_seeded_again(fresh_server.url, client, keys, item_server)


def test_a_seed_killed_mid_stream_on_a_cluster_queues_nothing_and_the_next_each_item_once(
    redis_cluster: Cluster, queue_name: str, item_server: ItemServer
) -> None:
    keys = QueueKeys(queue_name, cluster=True)
    holder = redis_cluster.nodes[redis_cluster.holder(keys.slot)]
    with redis.Redis(port=holder.port) as client:  # every key of the queue is on it
        _killed_mid_stream_then_seeded_again(redis_cluster.url, client, keys, item_server)
