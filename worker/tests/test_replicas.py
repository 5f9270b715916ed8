"""A primary that refuses writes until its replicas are in sync (`min-replicas-to-write`, as in
components/redis-ha): a seed, a supersede or a restore waits for them within the outage timeout,
saying so in a line, then does its work; past the timeout it fails in one line, having written
nothing. Real servers: the replica attaches late, or stands still (SIGSTOP) and comes back.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import cli_env, rediswq
from rediswq.errors import EXIT_FAILURE
from rediswq.server import EmbeddedRedis
from replication import Replicated

_WAITING = "refuses writes until its replicas are in sync (NOREPLICAS"


@pytest.fixture
def strict_primary(fresh_server: EmbeddedRedis) -> Iterator[EmbeddedRedis]:
    """`fresh_server` refusing writes unless a replica acknowledged within the last second."""
    with redis.Redis(port=fresh_server.port) as admin:
        admin.config_set("min-replicas-max-lag", 1)
        admin.config_set("min-replicas-to-write", 1)
    yield fresh_server


def _replica_of(primary: EmbeddedRedis) -> EmbeddedRedis:
    return EmbeddedRedis(
        binary=primary.binary, options=("--replicaof", "127.0.0.1", str(primary.port))
    )


def _started(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "rediswq", *args]
    return subprocess.Popen(
        command, text=True, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _waits(process: subprocess.Popen[str]) -> str:
    """The line the command says while the primary refuses its writes."""
    assert process.stderr is not None
    line = process.stderr.readline()
    assert _WAITING in line, (line, process.communicate(timeout=60))
    return line


def test_a_seed_waits_for_a_replica_that_attaches_late(
    strict_primary: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\nb\nc\n")
    env = cli_env(REDIS_URL=strict_primary.url, QUEUE_NAME=queue_name, REDIS_OUTAGE_TIMEOUT="60")
    seeding = _started(["seed", str(items)], env)
    line = _waits(seeding)
    assert line.startswith(f"rediswq: Redis at 127.0.0.1:{strict_primary.port} refuses writes")
    assert line.rstrip().endswith("retrying for up to 60s"), line
    with _replica_of(strict_primary) as replica:
        out, err = seeding.communicate(timeout=120)
        assert seeding.returncode == 0, err
        assert out.startswith(f"Queued 3 items in {queue_name!r}"), out
        with redis.Redis(port=replica.port) as follower:  # the seed's WAIT saw to it
            assert follower.lrange(queue_name, 0, -1) == [b"a", b"b", b"c"]
            assert follower.exists(f"{queue_name}:sealed") == 1


def test_a_supersede_and_a_restore_wait_for_a_replica_that_stood_still(
    strict_primary: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("a\nb\n")
    second.write_text("c\n")
    env = cli_env(REDIS_URL=strict_primary.url, QUEUE_NAME=queue_name, REDIS_OUTAGE_TIMEOUT="60")
    with _replica_of(strict_primary) as replica:
        Replicated.wait_in_sync(replica, strict_primary)
        assert rediswq("seed", str(first), env=env).returncode == 0
        superseded = _done_once_back(replica, strict_primary, ["seed", str(second)], env)
        assert "Superseded run" in superseded, superseded
        with redis.Redis(port=strict_primary.port) as admin:
            (ended,) = admin.zrange(f"{queue_name}:runs", 0, -1)
        restored = _done_once_back(
            replica, strict_primary, ["runs", "restore", ended.decode()], env
        )
        assert restored.startswith("Restored 2 items"), restored
        with redis.Redis(port=replica.port) as follower:
            assert follower.lrange(queue_name, 0, -1) == [b"c", b"a", b"b"]


def _done_once_back(
    replica: EmbeddedRedis, primary: EmbeddedRedis, args: list[str], env: dict[str, str]
) -> str:
    """The output of the command `args`, started while `replica` stands still (SIGSTOP) and the
    primary refuses writes for it, once it has said so and the replica is back."""
    replica.pause()
    try:
        with redis.Redis(port=primary.port) as admin:
            _until_refused(admin)
        command = _started(args, env)
        _waits(command)
    finally:
        replica.resume()
    out, err = command.communicate(timeout=120)
    assert command.returncode == 0, err
    return out


def test_a_seed_refused_past_the_outage_timeout_fails_in_a_line_and_writes_nothing(
    strict_primary: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\nb\n")
    env = cli_env(REDIS_URL=strict_primary.url, QUEUE_NAME=queue_name, REDIS_OUTAGE_TIMEOUT="2")
    seeded = rediswq("seed", str(items), env=env)
    assert seeded.returncode == EXIT_FAILURE, seeded.stdout
    assert seeded.stdout == ""
    said, error = seeded.stderr.splitlines()
    assert _WAITING in said, said
    assert error.startswith(
        f"rediswq: error: Redis at 127.0.0.1:{strict_primary.port} refused writes for 2s: "
        "too few of its replicas are in sync (NOREPLICAS"
    ), error
    with redis.Redis(port=strict_primary.port) as admin:
        assert admin.keys(f"*{queue_name}*") == []


def _until_refused(admin: redis.Redis, timeout: float = 30) -> None:
    """Until the primary counts no replica as in sync (its last acknowledgement is older than
    min-replicas-max-lag): before, it still takes writes."""
    deadline = time.monotonic() + timeout
    while int(admin.info("replication").get("min_slaves_good_slaves", 1)) > 0:
        assert time.monotonic() < deadline, "the primary still counts the stopped replica"
        time.sleep(0.1)
