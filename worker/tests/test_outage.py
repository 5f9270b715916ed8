"""Redis lost mid-run (a crash, then a restart from its AOF): a worker rides out an outage shorter
than --redis-outage-timeout and says so, or gives up with one line once the budget is spent."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from conftest import cli_env, spawn_worker, stats_of
from recording import recorded
from rediswq import WorkQueue, seed
from rediswq.connection import connect
from rediswq.errors import EXIT_FAILURE
from rediswq.logs import messages
from rediswq.server import EmbeddedRedis

ITEMS = [f"item-{n:02d}" for n in range(40)]


def _crashed_mid_run(
    server: EmbeddedRedis, queue_name: str, record: Path, budget: str
) -> subprocess.Popen[str]:
    """A worker busy on ITEMS, a tenth of a second each, once a few are done and `server` (with
    its AOF) has just been killed."""
    seed(WorkQueue(connect(server.url), queue_name), [item.encode() for item in ITEMS])
    env = cli_env(RECORD_FILE=str(record), SLOW_SECONDS="0.1", REDIS_OUTAGE_TIMEOUT=budget)
    worker = spawn_worker(server.url, queue_name, "--handler", "recording:record_slowly", env=env)
    deadline = time.monotonic() + 30
    while len(recorded(str(record))) < 5:
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()
        time.sleep(0.05)
    server.kill()
    return worker


def test_a_worker_rides_out_an_outage_longer_than_fifteen_seconds(
    durable_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    record = tmp_path / "done"
    worker = _crashed_mid_run(durable_server, queue_name, record, budget="60")
    time.sleep(20)  # redis-py's count of retries gave up after 13-15 s
    assert worker.poll() is None, worker.communicate()
    durable_server.start()
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert set(recorded(str(record))) == set(ITEMS)
    assert stats_of(WorkQueue(connect(durable_server.url), queue_name))["done"] == len(ITEMS)
    lines = messages(out)
    # Said once when it began, once when it ended; not on every try.
    assert sum("is unreachable" in line for line in lines) == 1, out
    assert sum("still unreachable" in line for line in lines) == 0, out
    (back,) = [line for line in lines if line.startswith("Reconnected to Redis")]
    assert float(back.rsplit(" after ", 1)[1].rstrip("s")) >= 15, back


def test_a_worker_gives_up_with_one_line_once_its_outage_budget_is_spent(
    durable_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    worker = _crashed_mid_run(durable_server, queue_name, tmp_path / "done", budget="3")
    killed = time.monotonic()
    out, _ = worker.communicate(timeout=60)
    elapsed = time.monotonic() - killed
    assert worker.returncode == EXIT_FAILURE, out
    assert 3 <= elapsed < 15, f"gave up {elapsed:.1f}s after the crash"
    (error,) = [line for line in out.splitlines() if line.startswith("rediswq: error:")]
    assert f"cannot reach Redis at 127.0.0.1:{durable_server.port}" in error, error
    assert "unreachable for 3s" in error and "--redis-outage-timeout" in error, error
    assert "Traceback" not in out
    durable_server.start()  # nothing was lost: what is not done is pending or still leased
    queue = WorkQueue(connect(durable_server.url), queue_name)
    pending, in_flight = queue.counts()
    assert pending + in_flight + stats_of(queue)["done"] == len(ITEMS)
