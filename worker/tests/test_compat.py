"""The tutorial's client API, `rediswq.RedisWQ`, on top of our protocol."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import redis
from conftest import TESTS, cli_env
from rediswq import RedisWQ
from rediswq.server import EmbeddedRedis


def _tutorial_workers(
    server: EmbeddedRedis, count: int, **settings: str
) -> list[subprocess.CompletedProcess[str]]:
    """Run `count` tutorial-shaped programs at once until they exit."""
    env = cli_env(TUTORIAL_REDIS_HOST="127.0.0.1", TUTORIAL_REDIS_PORT=str(server.port), **settings)
    program = [sys.executable, str(TESTS / "programs" / "tutorial_worker.py")]

    def run(_: int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            program, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def _worked(results: list[subprocess.CompletedProcess[str]]) -> Counter[str]:
    return Counter(
        line.removeprefix("Working on ")
        for r in results
        for line in r.stdout.splitlines()
        if line.startswith("Working on ")
    )


def test_a_tutorial_shaped_worker_program_drains_the_queue(
    server: EmbeddedRedis, client: redis.Redis
) -> None:
    fruits = ["apple", "banana", "cherry", "date", "fig", "grape", "lemon", "melon", "orange"]
    client.delete("job2", "job2:sealed", "job2:stats")
    client.rpush("job2", *fruits)  # by hand, as in the tutorial: no seed, no seal
    results = _tutorial_workers(server, 2)
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert _worked(results) == Counter(fruits)
    assert all(r.stdout.splitlines()[-1] == "Queue empty, exiting" for r in results)
    assert client.llen("job2") == 0
    assert int(client.hget("job2:stats", "done") or 0) == len(fruits)


def test_a_tutorial_program_that_works_longer_than_its_lease_repeats_no_item(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    server, client = fresh_server, redis.Redis(port=fresh_server.port)
    items = [f"slow-{n}" for n in range(6)]
    client.rpush(queue_name, *items)
    # Each item outlasts its lease: only the background renewal keeps the other program from
    # reclaiming it and working on it again.
    results = _tutorial_workers(
        server, 2, TUTORIAL_QUEUE=queue_name, TUTORIAL_LEASE_SECONDS="1",
        TUTORIAL_WORK_SECONDS="1.5",
    )  # fmt: skip
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert _worked(results) == Counter(items)
    assert int(client.hget(f"{queue_name}:stats", "done") or 0) == len(items)
    assert not client.hget(f"{queue_name}:stats", "reclaimed")


def test_lease_and_complete(server: EmbeddedRedis, client: redis.Redis, queue_name: str) -> None:
    q = RedisWQ(name=queue_name, host="127.0.0.1", port=server.port)
    assert q.empty()
    assert q.lease(block=False) is None
    client.rpush(queue_name, b"one", b"one")
    first = q.lease(lease_secs=5)
    second = q.lease(lease_secs=5)
    assert first == second == b"one"
    assert not q.empty()
    assert q.complete(first)
    assert q.complete(second)
    assert not q.complete(b"never-leased")
    assert q.empty()


def test_a_blocking_lease_times_out(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str
) -> None:
    q = RedisWQ(name=queue_name, host="127.0.0.1", port=server.port)
    other = RedisWQ(name=queue_name, host="127.0.0.1", port=server.port)
    client.rpush(queue_name, b"held")
    assert other.lease() == b"held"
    assert q.lease(block=True, timeout=0.3) is None  # another session holds the only item
    assert q.sessionID() != other.sessionID()
