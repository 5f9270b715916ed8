"""The handler contract: where handlers are found, what a failure logs, what the summary counts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from collected import Log
from conftest import QueueFactory, cli_env
from rediswq import WorkQueue, seed
from rediswq.server import EmbeddedRedis
from rediswq.worker import Worker

HANDLER_MODULE = """
def shout(item):
    print("shouting", item, flush=True)
    return item.upper()
"""


def _run_in(
    folder: Path, command: list[str], server: EmbeddedRedis, queue: str
) -> subprocess.CompletedProcess[str]:
    env = cli_env()
    env.pop("PYTHONPATH")  # only the working directory can provide the handler
    return subprocess.run(
        [*command, "worker", "--redis-url", server.url, "--queue", queue,
         "--handler", "myhandlers:shout", "--redis-wait-timeout", "5"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_handler_in_the_working_directory_is_found_by_both_entry_points(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    (tmp_path / "myhandlers.py").write_text(HANDLER_MODULE, encoding="utf-8")
    script = str(Path(sys.executable).with_name("rediswq"))
    for command in ([script], [sys.executable, "-m", "rediswq"]):
        queue = make_queue()
        seed(queue, [b"hello"], reset=True)
        run = _run_in(tmp_path, command, server, queue.keys.name)
        assert run.returncode == 0, (command, run.stderr)
        assert "shouting hello" in run.stdout


def test_a_failed_attempt_logs_its_whole_traceback_once(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=2)
    seed(queue, [b"x"])

    def parse(item: bytes) -> None:
        int(item)

    def handler(item: bytes) -> None:
        try:
            parse(item)
        except ValueError as exc:
            raise RuntimeError("could not parse") from exc

    log = Log()
    Worker(queue, handler, log=log).run()
    tracebacks = [line for line in log if line.startswith("Traceback")]
    assert len(tracebacks) == 2  # one per attempt
    first = tracebacks[0]
    # Both exceptions of the chain and the innermost frame are there, not just the first line.
    assert "in parse" in first and "ValueError: invalid literal" in first
    assert first.rstrip().endswith("RuntimeError: could not parse")
    failed = [line for line in log if line.startswith("Failed on x")]
    assert failed == [
        "Failed on x (attempt 1; will be retried): RuntimeError: could not parse",
        f"Failed on x (attempt 2; moved to {queue.keys.failed}): RuntimeError: could not parse",
    ]


def test_the_summary_counts_items_not_attempts(make_queue: QueueFactory) -> None:
    queue: WorkQueue = make_queue(max_attempts=3)
    seed(queue, [b"ok", b"flaky"])
    tries: list[bytes] = []

    def handler(item: bytes) -> None:
        tries.append(item)
        if item == b"flaky" and tries.count(item) < 3:
            raise OSError("try again")

    log = Log()
    summary = Worker(queue, handler, log=log).run()
    assert (summary.done, summary.failed_attempts, summary.dead_lettered) == (2, 2, 0)
    assert log[-2] == "Done 2 items; 2 failed attempts, 0 items dead-lettered, 0 lost leases"


def test_the_summary_says_one_item(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=1)
    seed(queue, [b"ok", b"bad"])

    def handler(item: bytes) -> None:
        if item == b"bad":
            raise OSError("no")

    log = Log()
    Worker(queue, handler, log=log).run()
    assert log[-2] == "Done 1 item; 1 failed attempt, 1 item dead-lettered, 0 lost leases"


def test_local_runs_a_handler_from_the_working_directory_with_the_worker_flags(
    tmp_path: Path,
) -> None:
    (tmp_path / "myhandlers.py").write_text(HANDLER_MODULE, encoding="utf-8")
    (tmp_path / "items.txt").write_text("one\ntwo\n", encoding="utf-8")
    env = cli_env()
    env.pop("PYTHONPATH")
    run = subprocess.run(
        [sys.executable, "-m", "rediswq", "local", "--items", "items.txt", "--workers", "1",
         "--handler", "myhandlers:shout", "--results", "--item-timeout", "30",
         "--retry-backoff", "off"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Summary: 2/2 done, 0 failed" in run.stdout
    assert 'result {"item": "one", "result": "ONE"}' in run.stdout
    assert 'result {"item": "two", "result": "TWO"}' in run.stdout


def test_a_handler_that_calls_sys_exit_fails_its_attempt_and_the_worker_goes_on(
    make_queue: QueueFactory,
) -> None:
    # sys.exit(0) must not end the worker with 0 while it holds the item (a Job would count the
    # pod a success with work left), nor argparse's SystemExit(2) fail the whole Job.
    queue = make_queue(max_attempts=1)
    seed(queue, [b"a", b"exit-0", b"exit-2", b"b"])

    def handler(item: bytes) -> None:
        if item.startswith(b"exit-"):
            sys.exit(int(item[-1:]))

    log = Log()
    summary = Worker(queue, handler, log=log).run()
    assert (summary.done, summary.dead_lettered) == (2, 2)
    failed = [line for line in log if line.startswith("Failed on")]
    assert failed == [
        f"Failed on exit-{code} (attempt 1; moved to {queue.keys.failed}): SystemExit: {code}"
        for code in (0, 2)
    ]


def test_a_failed_attempt_whose_lease_was_lost_counts_as_a_lost_lease(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(max_attempts=3)
    seed(queue, [b"slow"])
    other = make_queue(max_attempts=3)
    tries: list[bytes] = []

    def handler(item: bytes) -> None:
        tries.append(item)
        if len(tries) == 1:
            # As if this worker had been stopped past its lease: the lease runs out and another
            # worker's step puts the item back, before this attempt fails.
            queue.client.zadd(queue.keys.deadlines, {b"1": 0})
            other.reclaim()
            raise OSError("too late anyway")

    log = Log()
    summary = Worker(queue, handler, log=log).run()
    assert "Failed on slow (attempt 1; lease already lost): OSError: too late anyway" in log
    assert (summary.done, summary.failed_attempts, summary.lost) == (1, 1, 1)
    assert log[-2] == "Done 1 item; 1 failed attempt, 0 items dead-lettered, 1 lost lease"
