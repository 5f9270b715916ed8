"""A per-item time limit: a handler stuck where no exception reaches cannot hold its item."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import QueueFactory, cli_env, rediswq, said_until, spawn_worker
from recording import recorded
from rediswq import seed
from rediswq.deadletter import DeadLetters
from rediswq.execution import Outcome, TimeLimited
from rediswq.handlers import HandlerSpec
from rediswq.server import EmbeddedRedis


def test_a_handler_hung_in_c_code_is_killed_at_the_limit(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    queue = make_queue()
    seed(queue, [b"a", b"hang-1", b"b"])
    env = cli_env(RECORD_FILE=str(tmp_path / "done"))
    started = time.monotonic()
    worker = rediswq(
        "worker", "--redis-url", server.url, "--queue", queue.keys.name,
        "--handler", "recording:block_in_c", "--item-timeout", "1", "--max-attempts", "2",
        "--retry-backoff", "0.2", env=env, timeout=60,
    )  # fmt: skip
    took = time.monotonic() - started
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert recorded(str(tmp_path / "done")) == ["a", "b"]
    assert worker.stdout.count("TimeoutError: timed out after 1 s") == 2
    assert "Done 2 items; 2 failed attempts, 1 item dead-lettered" in worker.stdout
    (letter,) = DeadLetters(queue).listing()
    assert (letter.item, letter.error, letter.attempts) == (
        "hang-1",
        "TimeoutError: timed out after 1 s",
        2,
    )
    assert queue.counts() == (0, 0)  # nothing held
    assert took < 30  # two limits, a process start each, and a loaded machine


def test_a_handler_whose_process_dies_fails_its_attempt(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    (tmp_path / "dying.py").write_text(
        "import os\n\ndef work(item):\n    if item == 'die':\n        os._exit(7)\n",
        encoding="utf-8",
    )
    queue = make_queue()
    seed(queue, [b"die", b"live"])
    env = cli_env(PYTHONPATH=str(tmp_path))
    worker = rediswq(
        "worker", "--redis-url", server.url, "--queue", queue.keys.name, "--handler",
        "dying:work", "--item-timeout", "30", "--max-attempts", "1", env=env,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stdout + worker.stderr
    assert "ChildProcessError: the handler's process died (exit 7)" in worker.stdout
    assert "Done 1 item; 1 failed attempt, 1 item dead-lettered" in worker.stdout


def test_sigterm_during_a_limited_item_puts_it_back_uncharged(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    queue = make_queue()
    seed(queue, [b"hang-1"])
    env = cli_env(RECORD_FILE=str(tmp_path / "done"))
    worker = spawn_worker(
        server.url, queue.keys.name, "--handler", "recording:block_in_c", "--item-timeout", "60",
        env=env,
    )  # fmt: skip
    _blocked_in_handler(worker)
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=15)
    assert worker.returncode == 128 + signal.SIGTERM, out
    (lease,) = queue.lease()
    assert (lease.item, lease.attempt) == (b"hang-1", 1)


def test_bad_item_timeouts_are_usage_errors(server: EmbeddedRedis) -> None:
    run = rediswq("worker", "--redis-url", server.url, "--item-timeout", "-1")
    assert run.returncode == 3  # a setting no retry can fix
    assert "--item-timeout" in run.stderr


def _handler_processes(pid: int) -> list[int]:
    """The processes under the worker command (whose loop runs in its child) that run the
    handler, not multiprocessing's resource tracker."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"spawn_main" in command and b"resource_tracker" not in command:
                found.append(int(child))
            else:
                found += _handler_processes(int(child))
    return found


def _blocked_in_handler(worker: subprocess.Popen[str], timeout: float = 30) -> int:
    """The process that runs `worker`'s handler, once recording:block_in_c runs in it: that
    handler's hanging thread has started. ("Working on" comes before the process is started.)"""
    said_until(worker, "Working on")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in _handler_processes(worker.pid):
            with contextlib.suppress(FileNotFoundError):  # it may have just ended
                if len(list(Path(f"/proc/{child}/task").iterdir())) > 1:
                    return child
        assert worker.poll() is None, worker.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no handler blocked within {timeout:g}s")


def test_the_handlers_process_dies_with_a_killed_worker(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    queue = make_queue()
    seed(queue, [b"hang-1"])
    worker = spawn_worker(
        server.url, queue.keys.name, "--handler", "recording:block_in_c", "--item-timeout", "60",
        env=cli_env(RECORD_FILE=str(tmp_path / "done")),
    )  # fmt: skip
    child = _blocked_in_handler(worker)
    worker.kill()
    worker.communicate(timeout=10)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{child}").exists(), "the hung handler outlived its worker"


def _running(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie has ended; its parent just did not reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_program_the_handler_started_is_killed_with_it_at_the_limit(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    # A handler that runs a tool (ImageMagick, ffmpeg) which hangs: killing only the handler's
    # process would leave the tool running, one more after each limit, until the pod's memory ends.
    record = tmp_path / "tool.pid"
    (tmp_path / "tooling.py").write_text(
        "import subprocess\n\ndef work(item):\n"
        "    quiet = {'stdout': subprocess.DEVNULL, 'stderr': subprocess.DEVNULL}\n"
        "    tool = subprocess.Popen(['sleep', '300'], **quiet)\n"
        f"    open({str(record)!r}, 'w').write(str(tool.pid))\n"
        "    tool.wait()\n",
        encoding="utf-8",
    )
    queue = make_queue()
    seed(queue, [b"hang"])
    worker = rediswq(
        "worker", "--redis-url", server.url, "--queue", queue.keys.name, "--handler",
        "tooling:work", "--item-timeout", "2", "--max-attempts", "1",
        env=cli_env(PYTHONPATH=str(tmp_path)),
    )  # fmt: skip
    tool = int(record.read_text())
    try:
        assert worker.returncode == 0, worker.stdout + worker.stderr
        assert "TimeoutError: timed out after 2 s" in worker.stdout
        deadline = time.monotonic() + 10
        while _running(tool) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _running(tool), "the handler's tool outlived the limit"
    finally:
        if _running(tool):
            os.kill(tool, signal.SIGKILL)


def test_a_handler_whose_import_hangs_in_a_new_process_fails_the_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After a kill the handler is imported again, and an import can wait on a service that is now
    # down: the worker must not wait with it, holding its item.
    flag = tmp_path / "hang-on-import"
    (tmp_path / "stuck_import.py").write_text(
        "import os, time\n\n"
        f"if os.path.exists({str(flag)!r}):\n    time.sleep(3600)\n\n\n"
        f"def work(item):\n    open({str(flag)!r}, 'w').close()\n    time.sleep(3600)\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))  # the handler's process gets the worker's path
    executor = TimeLimited(HandlerSpec("stuck_import:work"), 1, start_timeout=3)
    outcomes: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcomes.extend(map(executor.run, [b"a", b"b"])))
    worker.start()
    worker.join(60)
    try:
        assert not worker.is_alive(), "the worker waited for the handler's import"
        first, second = (outcome.failure for outcome in outcomes)
        assert first is not None and first.message == "timed out after 1 s"
        assert second is not None
        assert second.message == "the handler's process did not start within 3 s"
    finally:
        executor.close()
