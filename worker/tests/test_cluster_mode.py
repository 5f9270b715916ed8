"""A queue on a Redis Cluster: its keys share one hash slot, the pending list keeps the bare queue
name, and the client finds the node that holds the slot by itself (no setting says "cluster")."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import redis
from clustered import Cluster
from conftest import assert_drained_status, cli_env, outputs_of, rediswq, said_until, spawn_worker
from recording import recorded
from redis.crc import key_slot
from rediswq.keys import QueueKeys
from rediswq.runs import run_id
from rediswq.server import EmbeddedRedis

ITEMS = 2000


def elsewhere(cluster: Cluster, queue_name: str) -> str:
    """A queue name like `queue_name` whose slot is not on the node the URL names: the client
    must find the node that holds it."""
    for n in range(100):
        name = f"{queue_name}-{n}"
        if cluster.holder(QueueKeys(name, cluster=True).slot) != 0:
            return name
    raise AssertionError("no queue name with its slot on another node")


def test_a_run_on_a_three_primary_cluster_is_done_once_per_item(
    redis_cluster: Cluster, queue_name: str, tmp_path: Path
) -> None:
    queue_name = elsewhere(redis_cluster, queue_name)
    items_file, record = tmp_path / "items.txt", tmp_path / "done"
    items = [f"item-{n:04d}" for n in range(ITEMS)]
    items_file.write_text("".join(f"{item}\n" for item in items))
    env = cli_env(REDIS_URL=redis_cluster.url, QUEUE_NAME=queue_name)
    seeded = rediswq("seed", str(items_file), env=env)
    assert seeded.returncode == 0, seeded.stderr
    worker_env = {**env, "RECORD_FILE": str(record), "HANDLER": "recording:record",
                  "RUN_ITEMS": str(items_file)}  # fmt: skip
    command = [sys.executable, "-m", "rediswq", "worker"]
    pipe, joined = subprocess.PIPE, subprocess.STDOUT
    workers = [
        subprocess.Popen(command, text=True, env=worker_env, stdout=pipe, stderr=joined)
        for _ in range(2)
    ]
    outputs = outputs_of(workers, timeout=180)
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    assert Counter(recorded(str(record))) == Counter(items)
    assert_drained_status(env, ITEMS)


def test_every_key_of_a_queue_is_in_the_slot_of_its_bare_pending_list(
    redis_cluster: Cluster, queue_name: str, tmp_path: Path
) -> None:
    items_file = tmp_path / "items.txt"
    items_file.write_text("a\nb\n")
    env = cli_env(REDIS_URL=redis_cluster.url, QUEUE_NAME=queue_name)
    assert rediswq("seed", str(items_file), env=env).returncode == 0
    keys = QueueKeys(queue_name, cluster=True)
    client = redis.RedisCluster.from_url(redis_cluster.url)
    assert client.llen(queue_name) == 2  # the tutorial's `LLEN job2` still reads it
    primaries = client.get_primaries()  # type: ignore[no-untyped-call]
    found = [key for node in primaries for key in node.redis_connection.keys("*")]
    assert found and {key_slot(key) for key in found} == {keys.slot}, found
    assert keys.sealed.encode() in found and keys.sealed == f"{{{queue_name}}}:sealed"


def test_a_queue_name_whose_braces_split_its_keys_is_refused_on_a_cluster(
    redis_cluster: Cluster,
) -> None:
    shown = rediswq("status", env=cli_env(REDIS_URL=redis_cluster.url, QUEUE_NAME="a}b"))
    assert shown.returncode == 3
    assert shown.stderr.startswith("rediswq: error: queue name 'a}b' cannot keep its keys"), (
        shown.stderr
    )


def test_a_new_run_supersedes_the_last_on_a_cluster_and_keeps_its_remainder(
    redis_cluster: Cluster, queue_name: str, tmp_path: Path
) -> None:
    """Ending a run renames its counters and lists to the run's record: keys of the same slot."""
    first, second = tmp_path / "first.txt", tmp_path / "second.txt"
    first.write_text("a\nb\n")
    second.write_text("c\n")
    env = cli_env(REDIS_URL=redis_cluster.url, QUEUE_NAME=queue_name)
    assert rediswq("seed", str(first), env=env).returncode == 0
    superseded = rediswq("seed", str(second), env=env)
    assert superseded.returncode == 0, superseded.stderr
    assert "moved its 2 unfinished items" in superseded.stdout + superseded.stderr
    client = redis.RedisCluster.from_url(redis_cluster.url)
    assert client.lrange(queue_name, 0, -1) == [b"c"]
    restored = rediswq("runs", "restore", superseded_run(superseded.stdout + superseded.stderr),
                       env=env)  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    assert sorted(client.lrange(queue_name, 0, -1)) == [b"a", b"b", b"c"]


def superseded_run(said: str) -> str:
    found = re.search(r"Superseded run (\S+):", said)
    assert found, said
    return found.group(1)


def test_the_key_names_commands_print_are_the_queue_keys_on_a_cluster(
    redis_cluster: Cluster, queue_name: str, tmp_path: Path
) -> None:
    client = redis.RedisCluster.from_url(redis_cluster.url)
    names, (first, second) = printed_key_names(redis_cluster.url, client, queue_name, tmp_path)
    assert names == run_keys(f"{{{queue_name}}}", first, second)


def test_the_key_names_commands_print_on_one_server_are_the_tutorial_names(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(fresh_server.url)
    names, (first, second) = printed_key_names(fresh_server.url, client, queue_name, tmp_path)
    assert names == run_keys(queue_name, first, second)


def run_keys(prefix: str, first: str, second: str) -> set[str]:
    """The names printed by the flow of `printed_key_names`, written out by hand."""
    return {
        f"{prefix}:failed",
        f"{prefix}:run:{first}:pending",
        f"{prefix}:run:{first}:failed",
        f"{prefix}:run:{second}:stats",
    }


def printed_key_names(
    url: str, client: redis.Redis | redis.RedisCluster, queue: str, tmp_path: Path
) -> tuple[set[str], tuple[str, str]]:
    """The key names seed, worker and status print while a run leaves a dead letter and is
    superseded with items left, and the next fails one and is drained; each checked to exist
    right after it was printed. Also the two runs' ids."""
    named = re.compile(r"\{?" + re.escape(queue) + r"\}?(?::[\w.-]*\w)+")
    printed: set[str] = set()

    def check(said: str) -> None:
        names = set(named.findall(said))
        missing = {name for name in names if not client.exists(name)}
        assert not missing, f"printed but not in Redis: {missing}\n{said}"
        printed.update(names)

    def run(*args: str) -> None:
        done = rediswq(*args, env=env)
        assert done.returncode == 0, done.stderr
        check(done.stdout + done.stderr)

    def items(name: str, *lines: str) -> tuple[Path, str]:
        (path := tmp_path / f"{name}.txt").write_text("".join(f"{line}\n" for line in lines))
        return path, run_id([line.encode() for line in lines])

    gate = tmp_path / "gate"
    env = cli_env(REDIS_URL=url, QUEUE_NAME=queue, MAX_ATTEMPTS="1", GATE_FILE=str(gate),
                  RECORD_FILE=str(tmp_path / "record"))  # fmt: skip
    first, first_run = items("1", "poison-1", "last", "c")
    second, second_run = items("2", "poison-2", "d")
    run("seed", str(first))
    holder = spawn_worker(
        url, queue, env={**env, "HANDLER": "recording:gated", "RUN_ITEMS": str(first)}
    )
    try:
        check("\n".join(said_until(holder, "Working on last")))  # poison-1 dead, last held
        run("seed", str(second))  # supersedes the first run: last and c are set aside
    finally:
        gate.touch()
    check(holder.communicate(timeout=60)[0])
    assert holder.returncode == 3
    drainer = spawn_worker(url, queue, env={**env, "HANDLER": "recording:fail_on_poison",
                                            "RUN_ITEMS": str(second)})  # fmt: skip
    check(drainer.communicate(timeout=60)[0])
    assert drainer.returncode == 0
    run("status")
    run("seed", str(items("3", "e")[0]))  # ends the drained second run
    return printed, (first_run, second_run)
