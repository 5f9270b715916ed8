"""The `rediswq` command as users run it: seed, status, worker, local."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import redis
from conftest import cli_env, rediswq
from rediswq.logs import message, messages
from rediswq.server import EmbeddedRedis

REPO = Path(__file__).resolve().parents[2]


def test_seed_queues_seals_and_is_idempotent(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str, tmp_path: Path
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("apple\n\nbanana\r\ncherry\n", encoding="utf-8")
    first = rediswq("seed", str(items), "--redis-url", server.url, "--queue", queue_name)
    assert first.returncode == 0, first.stderr
    run = hashlib.sha256(b"apple\nbanana\ncherry").hexdigest()[:12]  # the items' run id
    assert first.stdout.strip() == f"Queued 3 items in {queue_name!r} for run {run} and sealed it"
    assert client.lrange(queue_name, 0, -1) == [b"apple", b"banana", b"cherry"]
    again = rediswq("seed", str(items), "--redis-url", server.url, "--queue", queue_name)
    assert again.returncode == 0
    assert f"already sealed for run {run}; nothing changed" in again.stdout
    assert client.llen(queue_name) == 3
    reset = rediswq("seed", "--reset", "--redis-url", server.url, "--queue", queue_name,
                    stdin=b"fresh\n")  # fmt: skip
    assert reset.returncode == 0, reset.stderr
    assert client.lrange(queue_name, 0, -1) == [b"fresh"]


def test_status_as_text_and_json(server: EmbeddedRedis, queue_name: str) -> None:
    url = ("--redis-url", server.url, "--queue", queue_name)
    rediswq("seed", *url, stdin=b"a\nb\nc\n")
    worker = rediswq("worker", *url, "--work-seconds", "0")
    assert worker.returncode == 0, worker.stderr
    text = rediswq("status", *url)
    assert text.returncode == 0
    assert "done       3" in text.stdout and "sealed, drained" in text.stdout
    shown = json.loads(rediswq("status", "--json", *url).stdout)
    assert shown["done"] == 3 and shown["pending"] == 0 and shown["drained"] is True
    watched = rediswq("status", "--watch", *url)
    assert "3/3" in watched.stdout


def test_environment_configures_the_worker(server: EmbeddedRedis, queue_name: str) -> None:
    env = cli_env(REDIS_URL=server.url, QUEUE_NAME=queue_name, WORK_SECONDS="0")
    rediswq("seed", env=env, stdin=b"from-env\n")
    worker = rediswq("worker", env=env)
    assert worker.returncode == 0, worker.stderr
    assert "Working on from-env" in messages(worker.stdout)


def test_local_runs_the_whole_system_on_the_tutorials_items() -> None:
    result = rediswq("local", "--items", str(REPO / "seed" / "items.txt"), "--work-seconds", "0.05")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    fruits = (REPO / "seed" / "items.txt").read_text().split()
    said = [message(line.partition("] ")[2]) for line in lines if line.startswith("[worker-")]
    for fruit in fruits:
        assert said.count(f"Working on {fruit}") == 1
    assert "Summary: 9/9 done, 0 failed" in result.stdout
    assert said.count("Queue empty, exiting") == 2
    done = [int(line.split(":")[1].split()[0]) for line in lines if line.startswith("  worker-")]
    assert sum(done) == 9


def test_help_lists_the_commands() -> None:
    result = rediswq("--help")
    assert result.returncode == 0
    for command in ("worker", "seed", "status", "local"):
        assert command in result.stdout
