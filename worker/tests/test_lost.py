"""What a worker says when Redis forgets: a lease lost to another holder (said once), and a
whole queue lost by a Redis restart without persistence (fail at once, not blame the seed)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import cli_env, loop_pid, said_until, spawn_worker
from recording import recorded
from rediswq import WorkQueue, seed
from rediswq.connection import connect
from rediswq.errors import EXIT_FAILURE
from rediswq.lostqueue import SealWatch
from rediswq.server import EmbeddedRedis

# Long enough that a worker waiting for a seal could not end the test on its own.
SEAL_TIMEOUT = ("--seal-timeout", "120")


def _wait_for(
    predicate: Callable[[], bool], worker: subprocess.Popen[str], timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        time.sleep(0.05)


def _restarted_empty(server: EmbeddedRedis, worker: subprocess.Popen[str], queue_name: str) -> str:
    """Restart `server` (no AOF, no snapshot: it comes back empty); the one line `worker` fails
    with soon after, which says Redis lost the queue rather than blaming the seed."""
    server.restart()
    since = time.monotonic()
    out, _ = worker.communicate(timeout=60)
    elapsed = time.monotonic() - since
    assert worker.returncode == EXIT_FAILURE, out
    assert elapsed < 20, f"took {elapsed:.1f}s"
    (line,) = [line for line in out.splitlines() if line.startswith("rediswq: error:")]
    assert f"lost queue {queue_name!r}" in line and "seed" in line, line
    assert "was not sealed" not in out, out
    return line


def test_a_worker_whose_leases_vanished_with_the_seal_says_redis_lost_the_queue(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    record = tmp_path / "done"
    seed(WorkQueue(connect(fresh_server.url), queue_name), [f"i-{n}".encode() for n in range(10)])
    env = cli_env(RECORD_FILE=str(record), SLOW_SECONDS="0.5")
    worker = spawn_worker(
        fresh_server.url, queue_name, "--handler", "recording:record_slowly", *SEAL_TIMEOUT,
        env=env,
    )  # fmt: skip
    _wait_for(lambda: len(recorded(str(record))) >= 2, worker)
    line = _restarted_empty(fresh_server, worker, queue_name)
    assert "lease(s) this worker held are gone" in line


def test_a_waiting_worker_that_saw_the_seal_says_redis_lost_the_queue(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    record = tmp_path / "done"
    queue = WorkQueue(connect(fresh_server.url), queue_name, lease_seconds=300)
    seed(queue, [b"held-elsewhere", b"mine"])
    assert [lease.item for lease in queue.lease()] == [b"held-elsewhere"]
    worker = spawn_worker(
        fresh_server.url, queue_name, "--handler", "recording:record", *SEAL_TIMEOUT,
        env=cli_env(RECORD_FILE=str(record)),
    )  # fmt: skip
    said_until(worker, "Nothing pending in queue")  # it waits for the other lease now
    assert recorded(str(record)) == ["mine"]
    assert "nothing is pending or leased" in _restarted_empty(fresh_server, worker, queue_name)


def test_a_worker_that_saw_the_seal_does_not_ask_for_it_when_handed_items(
    fresh_server: EmbeddedRedis, queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    seed(queue, [b"a", b"b", b"c"])
    asked: list[bool] = []

    def is_sealed() -> bool:
        asked.append(True)
        return True

    monkeypatch.setattr(queue, "is_sealed", is_sealed)
    SealWatch(queue, sealed=queue.checked()[0]).check(queue.step())  # seen at its start
    woken = SealWatch(queue)
    woken.saw_seal()  # by the seal's own wake-up
    woken.check(queue.step())
    assert asked == []
    SealWatch(queue).check(queue.step())  # one that saw neither asks
    assert asked == [True]


def test_a_lost_lease_is_logged_once(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    queue = WorkQueue(connect(fresh_server.url), queue_name, lease_seconds=0.6)
    seed(queue, [b"slow"])
    env = cli_env(RECORD_FILE=str(tmp_path / "done"), SLOW_SECONDS="3")
    worker = spawn_worker(
        fresh_server.url, queue_name, "--handler", "recording:record_slowly",
        "--lease-seconds", "0.6", env=env,
    )  # fmt: skip
    said_until(worker, "Working on slow")
    stalled = loop_pid(worker)
    os.kill(stalled, signal.SIGSTOP)  # a pause longer than the lease, as a long GC or a stall
    try:
        time.sleep(1.5)
        assert queue.reclaim() == 1  # what another worker would do
    finally:
        os.kill(stalled, signal.SIGCONT)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    # The keeper renews every 0.2 s for the 1.5 s of work left: it said so once, not each time.
    assert out.count("Lease on slow was lost") == 1, out


def test_a_run_worker_woken_by_another_runs_seal_does_not_take_its_loss_for_its_own(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    client = connect(fresh_server.url)
    seed(WorkQueue(client, queue_name), [b"a-1"], run="a")
    queue = WorkQueue(client, queue_name, run="b")
    watch = SealWatch(queue)
    watch.saw_seal()  # run a's seal woke it: not the seal this worker waits for
    watch.check(queue.step())  # other-run
    client.delete(*queue.keys.all())  # Redis forgot run a's queue (a restart, a hand's DEL)
    watch.check(queue.step())  # unsealed: it still waits for run b's seal, nothing was lost
