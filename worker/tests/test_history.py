"""The history: each attempt's end (item, attempt, outcome, worker, time), written in the step
that decides it and kept in Redis, capped, after the worker and its log are gone."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest
from collected import Log
from conftest import cli_env, rediswq, spawn_worker
from faults import FaultProxy, called, loaded
from rediswq import WorkQueue, seed
from rediswq.connection import connect
from rediswq.errors import QueueError
from rediswq.history import entries
from rediswq.leases import shown
from rediswq.server import EmbeddedRedis
from rediswq.worker import Worker


def outcomes(queue: WorkQueue) -> list[tuple[bytes, int, str, str]]:
    return [(e.item, e.attempt, e.outcome, e.worker) for e in entries(queue, 10**6)]


def fail_on_poison(item: bytes) -> None:
    if item.startswith(b"poison"):
        raise ValueError("cannot digest")


def test_each_attempt_is_listed_with_its_outcome_and_worker_oldest_first(
    fresh_server: EmbeddedRedis,
) -> None:
    queue = WorkQueue(connect(fresh_server.url), "q", max_attempts=2, session="pod-a/1")
    seed(queue, [b"apple", b"poison", b"pear"])
    before = time.time()
    Worker(queue, fail_on_poison, log=Log()).run()
    listed = entries(queue, 10)
    # Oldest first; a success is recorded when it is handed in, with the next step.
    assert [e.id for e in listed] == sorted(e.id for e in listed)
    assert sorted((e.item, e.attempt, e.outcome, e.worker) for e in listed) == [
        (b"apple", 1, "done", "pod-a/1"),
        (b"pear", 1, "done", "pod-a/1"),
        (b"poison", 1, "failed: ValueError: cannot digest", "pod-a/1"),
        (b"poison", 2, "failed, dead-lettered: ValueError: cannot digest", "pod-a/1"),
    ]
    assert before - 1 <= listed[0].time <= listed[-1].time <= time.time() + 1
    url = ("--redis-url", fresh_server.url, "--queue", "q")
    text = rediswq("history", *url).stdout.splitlines()
    assert len(text) == 4 and "  poison  attempt 1  failed: ValueError" in text[1], text
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text[0].split("  ")[0])
    as_json = json.loads(rediswq("history", *url, "--json", "--item", "poison").stdout)
    assert [(e["item"], e["attempt"]) for e in as_json] == [("poison", 1), ("poison", 2)]
    last = json.loads(rediswq("history", *url, "--json", "--count", "1").stdout)
    assert [(e["item"], e["attempt"]) for e in last] == [
        (shown(listed[-1].item), listed[-1].attempt)
    ]
    none = rediswq("history", *url, "--worker", "pod-b").stdout.strip()
    assert none == "No attempts recorded in 'q'"


def test_a_killed_workers_attempt_is_listed_as_expired_under_its_name(
    fresh_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """An OOM kill leaves no log line behind the item; the reclaim that puts it back says whose it
    was."""
    seed(WorkQueue(connect(fresh_server.url), "q"), [b"slow"])
    env = cli_env(RECORD_FILE=str(tmp_path / "done"), SLOW_SECONDS="30")
    doomed = spawn_worker(
        fresh_server.url, "q", "--lease-seconds", "1", "--handler", "recording:record_slowly",
        env=env,
    )  # fmt: skip
    queue = WorkQueue(connect(fresh_server.url), "q", lease_seconds=1)
    while queue.counts() != (0, 1):
        time.sleep(0.05)
    doomed.kill()  # the command's process: its worker child dies with it (PDEATHSIG)
    said, _ = doomed.communicate(timeout=30)
    [name] = [line.split("sessionID: ")[1] for line in said.splitlines() if "sessionID" in line]
    Worker(queue, lambda item: None, log=Log()).run()
    assert [o[:3] for o in outcomes(queue)] == [(b"slow", 1, "expired"), (b"slow", 2, "done")]
    assert outcomes(queue)[0][3] == name


def test_a_worker_stopped_mid_item_lists_it_released(
    fresh_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """An eviction or a node drain: SIGTERM, the item goes back uncharged, the pod goes."""
    seed(WorkQueue(connect(fresh_server.url), "q"), [b"slow"])
    env = cli_env(RECORD_FILE=str(tmp_path / "done"), SLOW_SECONDS="30")
    stopped = spawn_worker(fresh_server.url, "q", "--handler", "recording:record_slowly", env=env)
    queue = WorkQueue(connect(fresh_server.url), "q")
    while queue.counts() != (0, 1):
        time.sleep(0.05)
    stopped.send_signal(signal.SIGTERM)
    said, _ = stopped.communicate(timeout=30)
    [name] = [line.split("sessionID: ")[1] for line in said.splitlines() if "sessionID" in line]
    assert outcomes(queue) == [(b"slow", 1, "released", name)]


@pytest.mark.parametrize("prefetch", [1, 2])  # 1: a step hands in one lease (complete_one)
def test_a_lost_reply_records_each_attempt_once(
    fault_proxy: FaultProxy, fresh_server: EmbeddedRedis, prefetch: int
) -> None:
    queue = loaded(WorkQueue(connect(fault_proxy.url), "q"))
    seed(queue, [b"a", b"b", b"c"])
    fault_proxy.lose_reply(called(queue.scripts.lease), nth=2)  # the step that hands a (, b) in
    Worker(queue, lambda item: None, prefetch=prefetch, log=Log()).run()
    assert sorted(o[:3] for o in outcomes(queue)) == [
        (b"a", 1, "done"), (b"b", 1, "done"), (b"c", 1, "done"),
    ]  # fmt: skip


def test_the_history_is_capped(fresh_server: EmbeddedRedis) -> None:
    queue = WorkQueue(connect(fresh_server.url), "q")
    items = [f"item-{n}".encode() for n in range(12_000)]
    seed(queue, items)
    Worker(queue, lambda item: None, prefetch=500, log=Log()).run()
    listed = entries(queue, 10**6)
    # An entry a hand-in of 500; `~` trims whole stream nodes: 10,000 attempts or a node more.
    assert 10_000 <= len(listed) <= 10_500, len(listed)
    assert queue.client.xlen(queue.keys.history) <= 21
    assert [e.item for e in listed[-2:]] == items[-2:]


def test_a_hand_in_of_several_leases_is_one_entry_with_each_attempt(
    fresh_server: EmbeddedRedis,
) -> None:
    queue = WorkQueue(connect(fresh_server.url), "q", session="pod-a/1")
    seed(queue, [b"a", b"line\nbreak", b"c"])
    held = queue.lease(3)
    queue.step(0, held, reclaim=False)
    assert queue.client.xlen(queue.keys.history) == 1
    assert outcomes(queue) == [
        (b"a", 1, "done", "pod-a/1"), (b"line\nbreak", 1, "done", "pod-a/1"),
        (b"c", 1, "done", "pod-a/1"),
    ]  # fmt: skip


def test_entries_of_one_attempt_and_of_a_batch_read_in_their_order(
    fresh_server: EmbeddedRedis,
) -> None:
    """An attempt alone keeps the entry every earlier version wrote: a rolling upgrade has
    workers of both versions writing to one history."""
    queue = WorkQueue(connect(fresh_server.url), "q", session="pod-new/1")
    seed(queue, [b"a", b"b", b"c"])
    queue.client.xadd(  # an earlier version's worker
        queue.keys.history,
        {"item": "old", "attempt": 2, "outcome": "failed: ValueError: x", "worker": "pod-old/1"},
    )
    queue.step(0, queue.lease(1), reclaim=False)
    queue.step(0, queue.lease(2), reclaim=False)
    assert queue.client.xlen(queue.keys.history) == 3
    assert outcomes(queue) == [
        (b"old", 2, "failed: ValueError: x", "pod-old/1"), (b"a", 1, "done", "pod-new/1"),
        (b"b", 1, "done", "pod-new/1"), (b"c", 1, "done", "pod-new/1"),
    ]  # fmt: skip
    assert [e.item for e in entries(queue, 2)] == [b"b", b"c"]
    assert [e.item for e in entries(queue, 3, item=b"a")] == [b"a"]


def test_a_step_refuses_a_wrong_typed_history_before_it_writes(
    fresh_server: EmbeddedRedis,
) -> None:
    queue = WorkQueue(connect(fresh_server.url), "q")
    seed(queue, [b"a", b"b"])
    held = queue.lease(2)
    queue.client.hset(queue.keys.history, "oops", 1)
    before = {key: queue.client.dump(key) for key in queue.keys.all()}
    for call in (lambda: queue.step(1, held, reclaim=False), lambda: queue.complete(*held)):
        with pytest.raises(QueueError, match="holds a hash"):
            call()
        assert {key: queue.client.dump(key) for key in queue.keys.all()} == before
