"""Many worker processes at once, and the failures a Job meets: a killed pod, a Redis restart."""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import cli_env, rediswq, said_until, spawn_worker, stats_of
from recording import recorded
from rediswq import WorkQueue, seed
from rediswq.connection import connect
from rediswq.deadletter import DeadLetters
from rediswq.logs import messages
from rediswq.server import EmbeddedRedis


@pytest.fixture
def own_server() -> Iterator[EmbeddedRedis]:
    """A server this test may kill or restart, with every write in the AOF."""
    with EmbeddedRedis(appendonly=True) as embedded:
        yield embedded


def finish(workers: list[subprocess.Popen[str]], timeout: float = 120) -> list[str]:
    """Read every worker's output at once: a full pipe would stall a worker mid-run."""
    with ThreadPoolExecutor(len(workers)) as pool:
        return list(pool.map(lambda w: w.communicate(timeout=timeout)[0], workers))


def test_eight_workers_do_twenty_thousand_items_exactly_once(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    record = tmp_path / "done"
    items = [f"item-{n:05d}" for n in range(20_000)]
    queue = WorkQueue(connect(server.url), queue_name)
    env = cli_env(RECORD_FILE=str(record))
    workers = [
        spawn_worker(server.url, queue_name, "--handler", "recording:record", env=env)
        for _ in range(8)
    ]
    seed(queue, [item.encode() for item in items])  # after the workers started: they wait
    outputs = finish(workers)
    assert [w.returncode for w in workers] == [0] * 8, outputs
    assert Counter(recorded(str(record))) == Counter(items)
    assert stats_of(queue) == {"done": 20_000}
    assert queue.counts() == (0, 0)
    assert all(out.rstrip().endswith("Queue empty, exiting") for out in outputs)
    done_per_worker = [int(_summary(out).split()[1]) for out in outputs]
    assert sum(done_per_worker) == 20_000


def test_a_killed_workers_item_is_reclaimed_and_done_by_another(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    record = tmp_path / "done"
    items = [f"fruit-{n}" for n in range(6)]
    queue = WorkQueue(connect(server.url), queue_name)
    seed(queue, [item.encode() for item in items])
    env = cli_env(RECORD_FILE=str(record), SLOW_SECONDS="0.5")
    args = ("--handler", "recording:record_slowly", "--lease-seconds", "1.5")
    victim = spawn_worker(server.url, queue_name, *args, env=env)
    held = said_until(victim, "Working on ")[-1].removeprefix("Working on ").strip()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    survivors = [spawn_worker(server.url, queue_name, *args, env=env) for _ in range(2)]
    outputs = finish(survivors)
    assert [w.returncode for w in survivors] == [0, 0], outputs
    assert set(recorded(str(record))) == set(items)
    assert held in "".join(outputs)
    assert stats_of(queue)["reclaimed"] == 1
    assert stats_of(queue)["done"] == len(items)
    assert queue.counts() == (0, 0)


def test_an_item_that_kills_its_worker_goes_to_the_dead_letters_alone(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    """At PREFETCH 8 the poison item dies with its batch leased: restarted as a Job restarts its
    pods, the workers take the batch back an item at a time, and only the poison runs out of
    attempts."""
    items = [f"item-{n}" for n in range(4)] + ["poison"] + [f"item-{n}" for n in range(4, 7)]
    seed(WorkQueue(connect(fresh_server.url), queue_name), [item.encode() for item in items])
    record = tmp_path / "done"
    env = cli_env(RECORD_FILE=str(record))
    command = (
        "worker", "--redis-url", fresh_server.url, "--queue", queue_name, "--prefetch", "8",
        "--lease-seconds", "1", "--max-attempts", "3", "--handler", "recording:killed_by_poison",
    )  # fmt: skip
    codes: list[int] = []
    while not codes or codes[-1] != 0:
        assert len(codes) < 8, f"not drained after {len(codes)} workers: exit codes {codes}"
        codes.append(rediswq(*command, env=env).returncode)
    assert len(codes) == 4, codes  # three deaths, one per attempt of the poison, then the drain
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    assert [letter.item for letter in DeadLetters(queue).listing()] == ["poison"]
    # The four done before the first death are done again; the rest once.
    assert Counter(recorded(str(record))) == {item: 2 if item < "item-4" else 1
                                              for item in items if item != "poison"}  # fmt: skip


def test_a_redis_restart_mid_run_loses_nothing(own_server: EmbeddedRedis, tmp_path: Path) -> None:
    record = tmp_path / "done"
    items = [f"job-{n}" for n in range(300)]
    seeded = rediswq("seed", "--redis-url", own_server.url, stdin="\n".join(items).encode())
    assert seeded.returncode == 0, seeded.stderr
    env = cli_env(RECORD_FILE=str(record), SLOW_SECONDS="0.01")
    workers = [
        spawn_worker(own_server.url, "job2", "--handler", "recording:record_slowly", env=env)
        for _ in range(2)
    ]
    while len(recorded(str(record))) < 50:
        time.sleep(0.05)
    own_server.kill()  # a crash, not a clean shutdown: only the AOF keeps the queue
    time.sleep(1.0)
    own_server.start()
    outputs = finish(workers)
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert set(recorded(str(record))) == set(items)
    queue = WorkQueue(connect(own_server.url), "job2")
    assert stats_of(queue)["done"] == len(items)
    assert queue.counts() == (0, 0)


def test_workers_started_before_the_seed_never_exit_early(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    record = tmp_path / "done"
    env = cli_env(RECORD_FILE=str(record))
    workers = [
        spawn_worker(server.url, queue_name, "--handler", "recording:record", env=env)
        for _ in range(2)
    ]
    said = [said_until(worker, "Waiting for queue") for worker in workers]
    assert [w.poll() for w in workers] == [None, None]
    seeded = rediswq(
        "seed", "--redis-url", server.url, "--queue", queue_name, stdin=b"late\nlater\n"
    )
    assert seeded.returncode == 0, seeded.stderr
    outputs = finish(workers)
    assert [w.returncode for w in workers] == [0, 0], outputs
    assert sorted(recorded(str(record))) == ["late", "later"]
    assert all("Initial queue state: empty=True" in lines for lines in said)


def test_the_worker_process_exits_zero_after_dead_lettering(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    record = tmp_path / "done"
    queue = WorkQueue(connect(server.url), queue_name)
    seed(queue, [b"ok-1", b"poison-pill", b"ok-2"])
    env = cli_env(RECORD_FILE=str(record))
    worker = spawn_worker(
        server.url, queue_name, "--handler", "recording:fail_on_poison", "--max-attempts", "2",
        env=env,
    )  # fmt: skip
    (out,) = finish([worker])
    assert worker.returncode == 0, out
    assert sorted(recorded(str(record))) == ["ok-1", "ok-2"]
    assert queue.client.lrange(queue.keys.failed, 0, -1) == [b"poison-pill"]
    assert "Done 2 items; 2 failed attempts, 1 item dead-lettered, 0 lost leases" in out
    assert messages(out)[-1:] == ["Queue empty, exiting"]


def _summary(output: str) -> str:
    (line,) = [said for said in messages(output) if said.startswith("Done ")]
    return line
