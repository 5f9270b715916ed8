"""Runs: a new list is a new run, the same list re-runs nothing, a superseded run's remainder is
kept and restorable. Seed and workers run as the Jobs run them: `rediswq` processes with the
items file mounted in both (RUN_ITEMS in the worker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import redis
from collected import Log
from conftest import (
    QueueFactory,
    cli_env,
    loop_pid,
    pending_of,
    rediswq,
    said_until,
    spawn_worker,
    stats_of,
)
from recording import recorded
from rediswq import ConfigError, State, WorkQueue, seed
from rediswq.runs import Superseded, restore, run_id
from rediswq.server import EmbeddedRedis
from rediswq.worker import Worker


@dataclass(frozen=True)
class Deployment:
    """One queue on the tests' server, and the commands a deploy runs against it."""

    url: str
    queue: str
    folder: Path

    def items(self, name: str, items: list[str]) -> Path:
        path = self.folder / f"{name}.txt"
        path.write_text("".join(f"{item}\n" for item in items), encoding="utf-8")
        return path

    def seed(self, items: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return rediswq("seed", str(items), *self.where, *args)

    def worker(self, items: Path, *args: str, slow: float = 0) -> subprocess.Popen[str]:
        env = cli_env(
            RECORD_FILE=str(self.folder / "record"),
            RUN_ITEMS=str(items),
            SLOW_SECONDS=str(slow),
        )
        handler = "recording:record_slowly" if slow else "recording:record"
        return spawn_worker(self.url, self.queue, "--handler", handler, *args, env=env)

    def status(self) -> dict[str, object]:
        result = rediswq("status", "--json", *self.where)
        assert result.returncode == 0, result.stderr
        return cast(dict[str, object], json.loads(result.stdout))

    @property
    def where(self) -> tuple[str, ...]:
        return ("--redis-url", self.url, "--queue", self.queue)

    def worked_on(self) -> list[str]:
        return recorded(str(self.folder / "record"))


@pytest.fixture
def deploy(server: EmbeddedRedis, queue_name: str, tmp_path: Path) -> Deployment:
    return Deployment(server.url, queue_name, tmp_path)


def ran(worker: subprocess.Popen[str], timeout: float = 60) -> str:
    out = worker.communicate(timeout=timeout)[0]
    assert worker.returncode == 0, out
    return out


def test_the_same_list_twice_redoes_nothing(deploy: Deployment) -> None:
    items = deploy.items("a", ["apple", "banana"])
    first = deploy.seed(items)
    assert first.returncode == 0, first.stderr
    ran(deploy.worker(items))
    assert sorted(deploy.worked_on()) == ["apple", "banana"]
    again = deploy.seed(items)
    assert again.returncode == 0, again.stderr
    assert "already sealed for run" in again.stdout and "nothing changed" in again.stdout
    out = ran(deploy.worker(items))
    assert "Done 0 items" in out
    assert sorted(deploy.worked_on()) == ["apple", "banana"]


def test_a_new_list_after_a_drained_run_runs_only_the_new_items_once(
    deploy: Deployment,
) -> None:
    old = deploy.items("a", ["apple", "banana"])
    assert deploy.seed(old).returncode == 0
    ran(deploy.worker(old))
    new = deploy.items("b", ["banana", "cherry", "date"])
    result = deploy.seed(new)
    assert result.returncode == 0, result.stderr
    old_run, new_run = run_id([b"apple", b"banana"]), run_id([b"banana", b"cherry", b"date"])
    assert result.stdout.splitlines()[0].startswith(f"Run {old_run} is over;")
    workers = [deploy.worker(new), deploy.worker(new)]
    for worker in workers:
        ran(worker)
    assert Counter(deploy.worked_on()) == Counter(["apple", "banana", "banana", "cherry", "date"])
    shown = deploy.status()
    assert shown["done"] == 3 and shown["drained"] is True
    assert cast(dict[str, object], shown["run"])["id"] == new_run
    (earlier,) = cast(list[dict[str, object]], shown["earlier_runs"])
    assert (earlier["id"], earlier["done"], earlier["ended"], earlier["next"]) == (
        old_run, 2, "drained", new_run
    )  # fmt: skip


def test_a_label_bump_runs_the_same_list_again(deploy: Deployment) -> None:
    items = deploy.items("a", ["apple"])
    assert deploy.seed(items).returncode == 0
    ran(deploy.worker(items))
    bumped = deploy.seed(items, "--run-label", "again")
    assert bumped.returncode == 0, bumped.stderr
    assert f"for run again-{run_id([b'apple'])}" in bumped.stdout
    ran(deploy.worker(items, "--run-label", "again"))
    assert deploy.worked_on() == ["apple", "apple"]


def test_workers_of_a_new_run_wait_for_its_seed_despite_the_old_seal(
    deploy: Deployment,
) -> None:
    old = deploy.items("a", ["apple"])
    assert deploy.seed(old).returncode == 0
    ran(deploy.worker(old))
    new = deploy.items("b", ["cherry", "date"])
    early = [deploy.worker(new), deploy.worker(new)]
    for worker in early:  # each saw the old run's seal and drained queue, and stays
        said_until(worker, "Waiting for queue")
    assert all(worker.poll() is None for worker in early), "a new run's worker ended early"
    assert deploy.seed(new).returncode == 0
    for worker in early:
        ran(worker)
    assert sorted(deploy.worked_on()) == ["apple", "cherry", "date"]


def test_a_new_list_mid_run_moves_the_remainder_aside_restorably(deploy: Deployment) -> None:
    old_items = [f"old-{n}" for n in range(6)]
    old = deploy.items("a", old_items)
    assert deploy.seed(old).returncode == 0
    old_worker = deploy.worker(old, slow=1.5)
    deadline = time.monotonic() + 20
    while len(deploy.worked_on()) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # the old run is under way: one done, one leased, four pending
    new = deploy.items("b", ["new-1", "new-2"])
    result = deploy.seed(new)
    assert result.returncode == 0, result.stderr
    old_run = run_id([item.encode() for item in old_items])
    remainder = f"{deploy.queue}:run:{old_run}:pending"
    line = result.stdout.splitlines()[0]
    assert line.startswith(f"Superseded run {old_run}: moved its ")
    assert remainder in line and f"rediswq runs restore {old_run}" in line
    out = old_worker.communicate(timeout=30)[0]
    assert old_worker.returncode not in (0, None), out
    assert f"run {old_run} was superseded in queue" in out and remainder in out
    shown = rediswq("status", *deploy.where).stdout
    assert f"superseded by {run_id([b'new-1', b'new-2'])}" in shown
    ran(deploy.worker(new))
    assert "new-1" in deploy.worked_on() and "new-2" in deploy.worked_on()
    restored = rediswq("runs", "restore", old_run, *deploy.where)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.startswith("Restored ")
    ran(deploy.worker(new))  # the current run's workers finish what came back
    # Nothing lost: every old item was worked on at least once (the one cut short maybe twice).
    assert set(deploy.worked_on()) == {*old_items, "new-1", "new-2"}
    again = rediswq("runs", "restore", old_run, *deploy.where)
    assert again.returncode == 1 and "already restored" in again.stderr


def test_the_remainder_keeps_its_attempt_counts(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=5)
    first = seed(queue, [b"a", b"b", b"c"])
    (a,) = queue.lease()
    queue.release(a, failed=True)  # a: attempt 1 charged, back at the head
    held = queue.lease(2)  # a (attempt 2) and b (attempt 1) in flight; c pending
    assert [(lease.item, lease.attempt) for lease in held] == [(b"a", 2), (b"b", 1)]
    second = seed(queue, [b"x"])
    assert (second.previous, second.moved) == (first.run, 3)
    # The held attempts were cut short, not failed: they are not charged.
    assert queue.client.lrange(queue.keys.run(first.run, ":pending"), 0, -1) == [b"a", b"b", b"c"]
    assert queue.complete(*held) == [False, False]
    assert pending_of(queue) == [b"x"]
    queue.client.rpush(queue.keys.pending, b"a")  # a copy pending now, without a count
    assert restore(queue, first.run) == 3
    assert pending_of(queue) == [b"x", b"a", b"a", b"b", b"c"]
    attempts = [(lease.item, lease.attempt) for lease in queue.lease(5)]
    assert attempts == [(b"x", 1), (b"a", 1), (b"a", 2), (b"b", 1), (b"c", 1)]


@pytest.mark.parametrize("pending_now", [False, True])
def test_a_restored_item_whose_lease_expired_keeps_its_count_and_its_mark(
    make_queue: QueueFactory, pending_now: bool
) -> None:
    """The mark of an expired lease ("1!", lease.lua's together()) travels with the count: moved
    aside whole by the seal, and put back by the restore, which renames the keys into an empty
    queue and joins the stacks of a queue that has items."""
    queue = make_queue(lease_seconds=0.2)
    first = seed(queue, [b"a", b"b", b"c"])
    assert [lease.item for lease in queue.lease()] == [b"a"]  # and its worker died
    time.sleep(0.3)
    assert queue.reclaim() == 1
    assert queue.client.hget(queue.keys.retries, b"a") == b"1!"
    seed(queue, [b"x"])
    aside = queue.keys.run(first.run, ":retries")
    assert queue.client.hgetall(aside) == {b"a": b"1!"}
    if pending_now:
        queue.client.rpush(queue.keys.pending, b"a")  # a copy pending now, without a count
    else:
        (x,) = queue.step(1, lease_seconds=60).leases
        queue.complete(x)  # the queue is empty: restore renames the keys
    assert restore(queue, first.run) == 3
    marked = b"1! 0" if pending_now else b"1!"  # under the count, 0, of the copy pending now
    assert queue.client.hget(queue.keys.retries, b"a") == marked
    taken = [queue.step(3, lease_seconds=60, reclaim=False).leases for _ in range(3)]
    shown = [[(lease.item, lease.attempt) for lease in step] for step in taken]
    if pending_now:  # the head is not marked: the restored copy comes in its batch
        assert shown == [[(b"x", 1), (b"a", 1), (b"a", 2)], [(b"b", 1), (b"c", 1)], []]
    else:
        assert shown == [[(b"a", 2)], [(b"b", 1), (b"c", 1)], []]


def test_an_ended_run_keeps_its_counters_and_dead_letters(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=1)
    first = seed(queue, [b"good", b"bad"])
    good, bad = queue.lease(2)
    queue.complete(good)
    queue.release(bad, failed=True)
    seed(queue, [b"next"])
    keys = queue.keys
    assert stats_of(queue) == {}
    assert queue.client.lrange(keys.failed, 0, -1) == []
    kept = cast(dict[bytes, bytes], queue.client.hgetall(keys.run(first.run, ":stats")))
    assert (kept[b"done"], kept[b"failed"]) == (b"1", b"1")
    assert queue.client.lrange(keys.run(first.run, ":failed"), 0, -1) == [b"bad"]
    for part in (":stats", ":failed", ""):
        assert 6 * 86400 < queue.client.ttl(keys.run(first.run, part)) <= 7 * 86400


def test_a_worker_of_one_run_never_leases_another_runs_items(make_queue: QueueFactory) -> None:
    seed(make_queue(), [b"a-1"], run="a")
    assert make_queue(run="b").step().state is State.OTHER_RUN
    assert make_queue(run="a").lease() != []
    queue = make_queue()
    queue.client.delete(queue.keys.sealed)
    queue.client.rpush(queue.keys.pending, b"by-hand")
    assert make_queue(run="a").step().state is State.UNSEALED  # no seal at all
    assert make_queue().lease() != []  # a worker without a run takes it, as before


def test_reset_says_what_it_dropped(deploy: Deployment) -> None:
    old = deploy.items("a", ["apple", "banana"])
    assert deploy.seed(old).returncode == 0
    result = deploy.seed(deploy.items("b", ["fresh"]), "--reset")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        "Reset: dropped 2 pending and 0 leased items, 0 dead letters and the counters "
        f"(done 0) of run {run_id([b'apple', b'banana'])}"
    )


def test_run_settings_that_cannot_work_are_named(deploy: Deployment) -> None:
    items = deploy.items("a", ["apple"])
    label_alone = rediswq("worker", *deploy.where, "--run-label", "x", "--seal-timeout", "1")
    assert label_alone.returncode != 0
    assert "--run-label (RUN_LABEL) names a run only with --run-items" in label_alone.stderr
    no_seal = rediswq("worker", *deploy.where, "--run-items", str(items), "--no-seal")
    assert no_seal.returncode != 0 and "contradict" in no_seal.stderr
    bad = deploy.seed(items, "--run-label", "a b")
    assert bad.returncode == 3 and "run label 'a b' must be" in bad.stderr
    assert redis.Redis.from_url(deploy.url).exists(deploy.queue) == 0


def test_a_worker_whose_run_ended_drained_before_the_next_seed_exits_0(
    deploy: Deployment, client: redis.Redis
) -> None:
    old = deploy.items("a", ["apple"])
    assert deploy.seed(old).returncode == 0
    (held,) = WorkQueue(client, deploy.queue).lease()  # another worker's lease: this one waits
    waiting = deploy.worker(old)
    said_until(waiting, "Nothing pending in queue")  # waiting on the lease
    stalled = loop_pid(waiting)
    os.kill(stalled, signal.SIGSTOP)  # so its next look comes after both steps below
    try:
        assert WorkQueue(client, deploy.queue).complete(held) == [False]  # another session's
        client.hdel(f"{deploy.queue}:leases", held.id)
        client.zrem(f"{deploy.queue}:deadlines", held.id)  # done: the holder's complete, by hand
        assert deploy.seed(deploy.items("b", ["banana"])).returncode == 0
    finally:
        os.kill(stalled, signal.SIGCONT)
    out = ran(waiting)  # exit 0: its run was over, nothing of it was moved
    assert "Done 0 items" in out


def test_a_worker_whose_run_was_reset_away_stops(make_queue: QueueFactory) -> None:
    seed(make_queue(), [b"a-1", b"a-2"], run="a")

    def handler(item: bytes) -> None:
        seed(make_queue(), [b"b-1"], run="b", reset=True)

    worker = Worker(make_queue(run="a"), handler, log=Log())
    with pytest.raises(Superseded, match=r"dropped .* by a reset; it is now sealed for run b"):
        worker.run()


@pytest.mark.parametrize("part", [":runs", ":run:a", ":run:b:pending"])
def test_a_run_key_of_another_type_stops_the_seal_before_it_writes(
    make_queue: QueueFactory, part: str
) -> None:
    queue = make_queue()
    seed(queue, [b"a-1", b"a-2"], run="a")
    queue.lease()
    client = queue.client
    client.delete(f"{queue.keys.name}{part}")
    client.set(f"{queue.keys.name}{part}", "in the way")
    before = {key: client.dump(key) for key in client.scan_iter(f"{queue.keys.name}*")}
    with pytest.raises(ConfigError, match=f"Redis key '{queue.keys.name}{part}' holds a string"):
        seed(queue, [b"b-1"], run="b")
    after = {key: client.dump(key) for key in client.scan_iter(f"{queue.keys.name}*")}
    assert after.keys() - before.keys() <= {k for k in after if b":staging:" in k}
    assert {k: v for k, v in after.items() if b":staging:" not in k} == before


def _replies(queue: WorkQueue) -> int:
    return int(queue.client.hlen(queue.keys.replies))


def test_the_replay_memory_of_three_runs_of_16_workers_stays_empty(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    client = redis.Redis.from_url(fresh_server.url)
    # A worker killed mid-run: it never ends its session, and its lease expires.
    killed = WorkQueue(client, queue_name, lease_seconds=1)
    for run in ("a", "b", "c"):
        seed(WorkQueue(client, queue_name), [f"{run}-{n}".encode() for n in range(64)], run=run)
        if run == "b":
            assert killed.lease()
        workers = [Worker(WorkQueue(client, queue_name), lambda item: None, log=Log())
                   for _ in range(16)]  # fmt: skip
        threads = [threading.Thread(target=worker.run) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sum(worker.summary.done for worker in workers) == 64
        # The workers' entries went as they ended; the killed one's goes with its run.
        assert _replies(killed) == (1 if run == "b" else 0)
    client.close()


def test_30000_one_item_sessions_leave_no_replay_memory_once_their_run_ends(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    client = redis.Redis.from_url(fresh_server.url)
    queue = WorkQueue(client, queue_name)
    seed(queue, [f"item-{n}".encode() for n in range(30_000)], run="first")
    session = WorkQueue(client, queue_name)
    for n in range(30_000):  # as KEDA runs them, a Job each; killed before they end, or not
        session.session = f"job-{n}"  # a session is its name in Redis: a new one each time
        session.step(0, session.lease())
        if n % 2:
            session.end_session()
    assert queue.counts() == (0, 0)
    assert _replies(queue) == 15_000
    seed(queue, [b"next"], run="second")
    assert _replies(queue) == 0
    client.close()
