"""Dead letters that explain themselves: records, `rediswq failed`, requeue, purge, reset."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from collected import Log
from conftest import QueueFactory, cli_env, pending_of, rediswq
from faults import FaultProxy, called
from recording import recorded
from rediswq import Reject, WorkQueue, seed
from rediswq.connection import connect
from rediswq.deadletter import DeadLetters
from rediswq.errors import EXIT_USAGE
from rediswq.server import EmbeddedRedis
from rediswq.worker import Worker


def _dead_letter(make_queue: QueueFactory, *items: bytes) -> WorkQueue:
    """A drained queue whose `items` failed their one attempt."""
    queue: WorkQueue = make_queue(max_attempts=1)
    seed(queue, list(items))
    _fail_all(queue)
    return queue


def _dead_letters_behind(
    fault_proxy: FaultProxy, queue_name: str, items: list[bytes]
) -> tuple[WorkQueue, DeadLetters]:
    """`items` failed their one attempt, on a queue reached through `fault_proxy` with the
    retries users get."""
    queue = WorkQueue(connect(fault_proxy.url), queue_name, max_attempts=1)
    seed(queue, items)
    _fail_all(queue)
    return queue, DeadLetters(queue)


def _fail_all(queue: WorkQueue) -> None:
    def handler(item: bytes) -> None:
        raise KeyError(item.decode())

    Worker(queue, handler, log=Log()).run()


def test_a_dead_letter_keeps_the_error_attempts_time_and_pod(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    queue = make_queue()
    seed(queue, [b"good", b"poison-1"])
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    env = cli_env(RECORD_FILE=str(tmp_path / "done"), HOSTNAME="job-wq-2-abcde")
    before = time.time()
    worker = rediswq(
        "worker", *url, "--handler", "recording:fail_on_poison", "--max-attempts", "2",
        "--retry-backoff", "off", env=env,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    listed = rediswq("failed", *url, "--json")
    assert listed.returncode == 0, listed.stderr
    (letter,) = json.loads(listed.stdout)
    assert letter["item"] == "poison-1"
    assert letter["error"] == "ValueError: cannot digest poison-1"
    assert letter["attempts"] == 2
    assert before - 1 <= letter["time"] <= time.time() + 1
    assert letter["worker"].startswith("job-wq-2-abcde (pid ")
    # The end of the traceback: the handler's own frame and the exception.
    lines = letter["traceback"].splitlines()
    assert "in fail_on_poison" in letter["traceback"]
    assert lines[-1] == "ValueError: cannot digest poison-1"
    text = rediswq("failed", *url)
    assert "'poison-1': ValueError: cannot digest poison-1" in text.stdout
    assert "after 2 attempt(s)" in text.stdout and "on job-wq-2-abcde" in text.stdout


def test_reject_dead_letters_at_once(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=5)
    seed(queue, [b"fine", b"bad"])
    tries: list[bytes] = []

    def handler(item: bytes) -> None:
        tries.append(item)
        if item == b"bad":
            raise Reject("malformed, retrying cannot help")

    log = Log()
    summary = Worker(queue, handler, log=log).run()
    assert tries == [b"fine", b"bad"]
    assert (summary.done, summary.failed_attempts, summary.dead_lettered) == (1, 1, 1)
    assert f"Failed on bad (attempt 1; rejected, moved to {queue.keys.failed})" in "\n".join(log)
    assert "traceback" not in [event for event, _ in log.events]  # meant, not a crash
    (letter,) = DeadLetters(queue).listing()
    assert (letter.error, letter.attempts) == ("Reject: malformed, retrying cannot help", 1)


def test_requeue_puts_named_dead_letters_back_with_fresh_attempts(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    queue = _dead_letter(make_queue, b"a", b"b", b"a")
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    assert [letter.item for letter in DeadLetters(queue).listing()] == ["a", "b", "a"]

    missing = rediswq("failed", *url, "requeue", "a", "zzz")
    assert missing.returncode == 1
    assert missing.stderr.strip().endswith(
        f"not among the dead letters of {queue.keys.name!r}: 'zzz'"
    )
    assert pending_of(queue) == []  # nothing changed

    requeued = rediswq("failed", *url, "requeue", "a")
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stdout.strip() == f"Requeued 1 dead letter in {queue.keys.name!r}"
    assert pending_of(queue) == [b"a"]
    assert [letter.item for letter in DeadLetters(queue).listing()] == ["b", "a"]

    # And a worker does it again, from attempt 1, until it fails again.
    env = cli_env(RECORD_FILE=str(tmp_path / "done"))
    worker = rediswq("worker", *url, "--handler", "recording:record", env=env)
    assert worker.returncode == 0, worker.stderr
    assert recorded(str(tmp_path / "done")) == ["a"]
    assert [letter.item for letter in DeadLetters(queue).listing()] == ["b", "a"]


def test_requeue_all_then_purge(server: EmbeddedRedis, make_queue: QueueFactory) -> None:
    queue = _dead_letter(make_queue, b"x", b"y")
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    assert rediswq("failed", *url, "requeue", "--all").stdout.startswith("Requeued 2 dead letters")
    assert pending_of(queue) == [b"x", b"y"]
    assert DeadLetters(queue).listing() == []
    assert queue.client.hlen(queue.keys.failures) == 0
    # Worked again, they fail again, each at attempt 1 of 1: the attempts started afresh.
    _fail_all(queue)
    assert [(d.item, d.attempts) for d in DeadLetters(queue).listing()] == [("x", 1), ("y", 1)]
    purged = rediswq("failed", *url, "purge")
    assert purged.stdout.strip() == f"Purged 2 dead letters from {queue.keys.name!r}"
    assert rediswq("failed", *url).stdout.strip() == f"No dead letters in {queue.keys.name!r}"
    usage = rediswq("failed", *url, "list", "x")
    assert usage.returncode == EXIT_USAGE and "takes no items" in usage.stderr
    usage = rediswq("failed", *url, "requeue")
    assert usage.returncode == EXIT_USAGE
    assert (
        usage.stderr.splitlines()[-1]
        == "rediswq failed: error: failed requeue takes either items or --all"
    )


def test_requeue_and_purge_leave_no_replay_memory_once_they_returned(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    queue = WorkQueue(connect(fresh_server.url), queue_name, max_attempts=1)
    seed(queue, [b"a", b"b", b"c", b"d"])
    _fail_all(queue)
    replies = queue.keys.replies
    assert queue.client.hlen(replies) == 0  # the worker's went as it ended
    url = ("--redis-url", fresh_server.url, "--queue", queue_name)
    for command in (["requeue", "a"], ["purge", "b"], ["requeue", "--all"], ["purge", "zzz"]):
        done = rediswq("failed", *url, *command)
        assert done.returncode == (1 if "zzz" in command else 0), done.stderr
        # One-shot sessions: the next seal would drop them, but a queue may never be sealed
        # again, and a cron job requeueing each hour would grow the hash by one a time.
        assert queue.client.hgetall(replies) == {}, command
    assert sorted(pending_of(queue)) == [b"a", b"c", b"d"]
    _fail_all(queue)
    # A purge of every letter keeps its memory: a late copy run anew would drop later letters.
    assert rediswq("failed", *url, "purge", "--all").returncode == 0
    assert queue.client.hlen(replies) == 1
    assert queue.client.llen(queue.keys.failed) == 0


def test_requeue_all_without_dead_letters_requeues_nothing(
    server: EmbeddedRedis, make_queue: QueueFactory
) -> None:
    queue = make_queue()
    seed(queue, [b"a"])
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    result = rediswq("failed", *url, "requeue", "--all")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Requeued 0 dead letters"), result.stdout
    assert pending_of(queue) == [b"a"]
    assert queue.client.hget(queue.keys.stats, "failed") in (None, b"0")


def test_seed_reset_says_what_it_dropped(server: EmbeddedRedis, make_queue: QueueFactory) -> None:
    queue = _dead_letter(make_queue, b"x", b"y")
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    reset = rediswq("seed", "--reset", *url, stdin=b"fresh\n")
    assert reset.returncode == 0, reset.stderr
    assert "Reset: dropped 0 pending and 0 leased items, 2 dead letters" in reset.stdout
    assert DeadLetters(queue).listing() == []


def test_a_dead_letter_whose_leases_ran_out_says_so(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=2, lease_seconds=0.05)
    seed(queue, [b"oom-killer"])
    for _ in range(2):  # leased, and never completed: as by a worker killed each time
        assert len(queue.lease()) == 1
        time.sleep(0.1)
        queue.reclaim()
    (letter,) = DeadLetters(queue).listing()
    assert letter.item == "oom-killer" and letter.attempts == 2
    assert letter.error.startswith("LeaseExpired: its lease ran out")
    assert letter.worker == f"session {queue.session}"
    assert letter.time is not None and abs(letter.time - time.time()) < 5


def test_a_lost_reply_to_requeue_still_reports_what_it_requeued(
    fault_proxy: FaultProxy, queue_name: str
) -> None:
    queue, letters = _dead_letters_behind(fault_proxy, queue_name, [b"a", b"b", b"a"])
    client = queue.client
    for named, every, requeued in ([b"a", b"a"], False, [b"a", b"a"]), ([], True, [b"b"]):
        client.script_load(letters._requeue.script)  # else the fault hits a NOSCRIPT reply
        lost = fault_proxy.lose_reply(called(letters._requeue))
        assert letters.requeue(named, every=every) == len(requeued)
        assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
        assert pending_of(queue)[: len(requeued)] == requeued
    assert sorted(pending_of(queue)) == [b"a", b"a", b"b"]
    assert letters.listing() == []
    client.close()


def test_a_dead_letter_that_is_not_utf8_can_be_requeued_by_name(
    server: EmbeddedRedis, make_queue: QueueFactory
) -> None:
    queue = _dead_letter(make_queue, b"caf\xe9", b"ok")
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    # The shell passes the item's bytes as they are ($'caf\xe9'); Python's argv keeps them.
    requeued = rediswq("failed", *url, "requeue", os.fsdecode(b"caf\xe9"))
    assert requeued.returncode == 0, requeued.stderr
    assert pending_of(queue) == [b"caf\xe9"]
    assert [letter.item for letter in DeadLetters(queue).listing()] == ["ok"]


def test_a_lost_reply_to_purge_still_reports_what_it_purged(
    fault_proxy: FaultProxy, queue_name: str
) -> None:
    queue, letters = _dead_letters_behind(fault_proxy, queue_name, [b"a", b"b"])
    client = queue.client
    client.script_load(letters._purge.script)  # else the fault hits a NOSCRIPT reply
    lost = fault_proxy.lose_reply(called(letters._purge))
    assert letters.purge() == 2
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert letters.listing() == []
    client.close()


def test_a_lost_reply_to_a_named_purge_neither_fails_as_missing_nor_drops_more(
    fault_proxy: FaultProxy, queue_name: str
) -> None:
    # The retry finds the named letters gone: only the run's memory of the request tells it that
    # they went by this purge, not that they never were.
    queue, letters = _dead_letters_behind(fault_proxy, queue_name, [b"a", b"b", b"c"])
    client = queue.client
    client.script_load(letters._purge.script)  # else the fault hits a NOSCRIPT reply
    lost = fault_proxy.lose_reply(called(letters._purge))
    assert letters.purge([b"a", b"c"]) == 2
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert [letter.item for letter in letters.listing()] == ["b"]
    client.close()


def test_requeue_all_with_no_dead_letters_requeues_none(fresh_server: EmbeddedRedis) -> None:
    # Redis 7.0 refused the stats' increment by -0 that Lua wrote for no items; Valkey took it.
    queue = WorkQueue(connect(fresh_server.url), "q", max_attempts=1)
    seed(queue, [b"a"])
    _fail_all(queue)
    url = ("--redis-url", fresh_server.url, "--queue", "q")
    for _ in range(2):  # with one dead letter, then with none
        requeued = rediswq("failed", *url, "requeue", "--all")
        assert requeued.returncode == 0, requeued.stderr
        Worker(queue, lambda item: None, log=Log()).run()
    assert requeued.stdout.strip() == "Requeued 0 dead letters in 'q'"
    assert rediswq("failed", *url, "purge").stdout.strip() == "Purged 0 dead letters from 'q'"
    assert json.loads(rediswq("status", *url, "--json").stdout)["failed"] == 0


def test_purge_drops_the_named_dead_letters_and_status_stops_counting_them(
    server: EmbeddedRedis, make_queue: QueueFactory
) -> None:
    queue = _dead_letter(make_queue, b"a", b"b", b"a", b"c")
    url = ("--redis-url", server.url, "--queue", queue.keys.name)
    missing = rediswq("failed", *url, "purge", "a", "zzz")
    assert missing.returncode == 1 and missing.stderr.strip().endswith(": 'zzz'")
    purged = rediswq("failed", *url, "purge", "a", "c")
    assert purged.stdout.strip() == f"Purged 2 dead letters from {queue.keys.name!r}"
    assert [letter.item for letter in DeadLetters(queue).listing()] == ["b", "a"]
    assert "failed     2  (dead letters" in rediswq("status", *url).stdout
    assert rediswq("failed", *url, "purge", "--all").stdout.startswith("Purged 2 dead letters")
    assert "failed     0  (dead letters" in rediswq("status", *url).stdout
    both = rediswq("failed", *url, "purge", "b", "--all")
    assert both.returncode == EXIT_USAGE and "takes either items or --all" in both.stderr
    listed = rediswq("failed", *url, "list", "--all")
    assert listed.returncode == EXIT_USAGE and "list takes no items" in listed.stderr


def test_failed_help_says_what_purge_takes() -> None:
    shown = " ".join(rediswq("failed", "--help").stdout.split())
    assert "purge ITEM... or --all: drop them" in shown
    assert "requeue or purge every dead letter" in shown
