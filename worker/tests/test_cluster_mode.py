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
from conftest import assert_drained_status, cli_env, outputs_of, rediswq
from recording import recorded
from redis.crc import key_slot
from rediswq.keys import QueueKeys

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
