"""How a command ends, through the real CLI: interrupted, or with a handler that exits."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli_env, loop_pid, rediswq, said_until, spawn_worker
from faults import FaultProxy
from recording import recorded
from rediswq import WorkQueue, seed
from rediswq.connection import connect
from rediswq.errors import EXIT_FAILURE
from rediswq.logs import messages
from rediswq.server import EmbeddedRedis


def _start(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rediswq", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
        # As from a terminal: a shell's background job ignores SIGINT, and so would this child
        # (Python then installs no KeyboardInterrupt at all).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )


def _interrupted(process: subprocess.Popen[str]) -> str:
    """Send Ctrl-C's SIGINT; check the exit is 130 with one line and no traceback."""
    process.send_signal(signal.SIGINT)
    process.wait(timeout=30)  # before communicate() closes its stdin: an EOF would end a read
    out, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGINT, (out, err)
    assert "Traceback" not in err, err
    assert err.strip().splitlines() == ["rediswq: interrupted"], err
    return out


def _waits_on_a_pipe(pid: int, timeout: float = 20) -> None:
    wchan = Path(f"/proc/{pid}/wchan")
    deadline = time.monotonic() + timeout
    while "pipe_read" not in wchan.read_text():
        assert time.monotonic() < deadline, "the command never read its stdin"
        time.sleep(0.05)


def test_ctrl_c_while_waiting_for_redis_prints_one_line() -> None:
    # A server that accepts and never answers: the worker waits on its first PING.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        worker = _start(
            "worker", "--redis-url", f"redis://127.0.0.1:{port}/0", "--redis-wait-timeout", "60"
        )
        silent.settimeout(30)
        connection, _ = silent.accept()
        with connection:
            _interrupted(worker)


def test_ctrl_c_while_the_seed_reads_stdin_prints_one_line() -> None:
    seeder = _start("seed", "-", "--redis-url", "redis://127.0.0.1:1/0", stdin=subprocess.PIPE)
    _waits_on_a_pipe(seeder.pid)
    _interrupted(seeder)


def _drain(url: str, queue: str, record: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return rediswq(
        "worker", "--redis-url", url, "--queue", queue, "--handler", "recording:misbehave",
        "--work-seconds", "0", *args, env=cli_env(RECORD_FILE=str(record)),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("item", "reason"), [("sys-exit", "SystemExit: 0"), ("interrupt", "KeyboardInterrupt")]
)
def test_a_handler_that_exits_or_interrupts_fails_its_attempt_and_the_rest_are_done(
    item: str, reason: str, fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    seed(queue, [b"a", item.encode(), b"b", b"c"])
    record = tmp_path / "done"
    result = _drain(
        fresh_server.url, queue_name, record, "--max-attempts", "2", "--retry-backoff", "off"
    )
    assert result.returncode == 0, result
    assert result.stderr == ""  # the attempt's traceback is logged with it, on stdout
    assert sorted(recorded(str(record))) == ["a", "b", "c"]
    assert queue.client.lrange(queue.keys.failed, 0, -1) == [item.encode()]
    assert f"Failed on {item} (attempt 1; will be retried): {reason}" in result.stdout
    assert result.stdout.rstrip().endswith("Queue empty, exiting")


def test_the_worker_s_help_exits_0_though_no_queue_was_drained() -> None:
    # The worker's process prints the help; the command's first process must not take that exit
    # for a handler's os._exit(0).
    result = rediswq("worker", "--help")
    assert (result.returncode, result.stderr) == (0, ""), result
    assert "--lease-seconds" in result.stdout


def test_a_handler_that_calls_os_exit_0_does_not_end_the_worker_with_0(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    seed(queue, [b"a", b"os-exit", b"b"])
    result = _drain(fresh_server.url, queue_name, tmp_path / "done", "--lease-seconds", "60")
    assert result.returncode == EXIT_FAILURE, result
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("rediswq: error: ") and "os._exit" in line, line
    assert "Working on os-exit" in result.stdout
    assert queue.counts() == (1, 1)  # b still pending, os-exit in flight until its lease ends


def test_what_a_handler_leaves_for_the_exit_runs_before_the_worker_exits(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    # The worker runs in a child process (supervisor.py): it must still end as a Python program
    # does, and not hang on a thread pool the handler left open.
    seed(WorkQueue(connect(fresh_server.url), queue_name), [b"a", b"b"])
    record = tmp_path / "done"
    result = rediswq(
        "worker", "--redis-url", fresh_server.url, "--queue", queue_name, "--work-seconds", "0",
        "--handler", "recording:leave_work_for_the_exit", env=cli_env(RECORD_FILE=str(record)),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, ""), result
    lines = recorded(str(record))
    assert sorted(lines[:-1]) == ["a", "a pool", "a thread", "b", "b pool", "b thread"]
    assert lines[-1] == "at exit"  # after the threads, as in Python's own exit


def test_a_sigkilled_worker_leaves_no_process_behind(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    seed(WorkQueue(connect(fresh_server.url), queue_name), [b"slow"])
    env = cli_env(RECORD_FILE=str(tmp_path / "done"), SLOW_SECONDS="30")
    worker = spawn_worker(
        fresh_server.url, queue_name, "--handler", "recording:record_slowly", env=env
    )
    said_until(worker, "Working on")
    child = loop_pid(worker)
    worker.kill()
    worker.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists():
        assert time.monotonic() < deadline, f"the worker process {child} outlived the command"
        time.sleep(0.05)


# `rediswq worker` with a SIGTERM that reaches its first process just after that process reaped
# the worker process: the last of a storm of SIGTERMs as a pod goes.
_LATE_SIGTERM = """
import os, signal, sys
reap = os.waitpid
def waitpid(pid, options):
    reaped = reap(pid, options)
    os.kill(os.getpid(), signal.SIGTERM)
    return reaped
os.waitpid = waitpid
from rediswq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigterm_after_the_worker_process_ended_leaves_its_exit_code(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    seed(WorkQueue(connect(fresh_server.url), queue_name), [b"a"])
    result = subprocess.run(
        [sys.executable, "-c", _LATE_SIGTERM, "worker", "--redis-url", fresh_server.url,
         "--queue", queue_name, "--handler", "recording:record", "--work-seconds", "0"],
        capture_output=True, text=True, timeout=60, check=False,
        env=cli_env(RECORD_FILE=str(tmp_path / "done")),
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, ""), result
    assert recorded(str(tmp_path / "done")) == ["a"]


@pytest.mark.parametrize("timeout", ["0", "30"], ids=["in-process", "item-timeout"])
def test_a_process_the_handler_forks_never_returns_into_the_worker(
    timeout: str, fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    items = [f"{kind}-{n}" for kind in ("exit", "exec") for n in range(5)]
    seed(queue, [item.encode() for item in items])
    record = tmp_path / "done"
    result = rediswq(
        "worker", "--redis-url", fresh_server.url, "--queue", queue_name, "--work-seconds", "0",
        "--handler", "recording:fork_a_helper", "--max-attempts", "2", "--lease-seconds", "5",
        "--item-timeout", timeout, env=cli_env(RECORD_FILE=str(record)),
    )  # fmt: skip
    assert result.returncode == 0, result
    # Each item once; the helper ended as Python would have ended it (1 for the exec's error).
    expected = [f"{item} {1 if item.startswith('exec') else 0}" for item in items]
    assert sorted(recorded(str(record))) == sorted(expected)
    assert "Done 10 items; 0 failed attempts" in result.stdout, result.stdout
    assert queue.client.llen(queue.keys.failed) == 0
    assert result.stderr.count("FileNotFoundError") == 5, result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
@pytest.mark.parametrize("state", ["waiting", "working", "alarmed", "outage"])
def test_a_signal_stops_a_worker_within_10_s_while_redis_hangs_or_is_gone(
    state: str, signum: int, fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    record = tmp_path / "done"
    env = cli_env(RECORD_FILE=str(record), SLOW_SECONDS="60", ALARM_SECONDS="50")
    working = state in ("working", "alarmed")
    if working:  # else never sealed: the worker waits for the seed
        seed(queue, [b"slow"])
    # alarmed: the handler arms its own alarm and cancels it in a finally, which the stop's
    # Shutdown runs; that once cancelled the stop's deadline too.
    handler = "recording:record_under_alarm" if state == "alarmed" else "recording:record_slowly"
    worker = spawn_worker(
        fresh_server.url, queue_name, "--handler", handler, "--seal-timeout", "600", env=env
    )
    try:
        said_until(worker, "Working on" if working else "Waiting for queue")
        while state == "alarmed" and recorded(str(record)) != ["slow armed"]:
            assert worker.poll() is None, worker.communicate()
            time.sleep(0.02)
        if state == "outage":  # gone: each try is refused at once, and retried for 300 s
            fresh_server.kill()
        else:  # hangs: SIGSTOPped, it takes connections and never answers
            fresh_server.pause()
        time.sleep(1)
        worker.send_signal(signum)
        sent = time.monotonic()
        output = worker.communicate(timeout=30)[0]
        took = time.monotonic() - sent
    finally:
        worker.kill()
        fresh_server.resume()
    assert worker.returncode == 128 + signum, output
    assert took < 10, (took, output)
    assert f"Stopped by {signal.Signals(signum).name}, exiting" in messages(output), output


def _stops_at_once(worker: subprocess.Popen[str]) -> str:
    """Send SIGTERM to a waiting `worker` (spawn_worker); check it stopped as a stop should,
    within 2 s and without saying Redis did not answer; its output."""
    worker.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    output = worker.communicate(timeout=30)[0]
    took = time.monotonic() - sent
    assert worker.returncode == 128 + signal.SIGTERM, output
    assert messages(output)[-1] == "Stopped by SIGTERM, exiting", output
    assert "did not answer" not in output, output
    assert took < 2, (took, output)
    return output


def test_a_signal_ends_a_long_wait_for_work_at_once(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    # Among 100 subscribed workers, one waiting for the seed pauses 2.5-7.5 s between polls
    # (events.py). A stop must not wait for the pause to end: it waited until the stop's 3 s
    # deadline, then said Redis had not answered.
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    others = [queue.client.pubsub() for _ in range(99)]
    try:
        for pubsub in others:
            pubsub.subscribe(f"{queue.keys.pending}:events")
        worker = spawn_worker(fresh_server.url, queue_name, "--seal-timeout", "600")
        said_until(worker, "Waiting for queue")
        time.sleep(1)  # subscribed, counted the others, and into its pause
        _stops_at_once(worker)
    finally:
        for pubsub in others:
            pubsub.close()


def test_a_signal_ends_a_wait_whose_subscription_hangs(
    fault_proxy: FaultProxy, queue_name: str, tmp_path: Path
) -> None:
    # A worker subscribes at its first wait, on a connection of its own (events.py). If that
    # connection hangs in its handshake, a stop must still end the wait at once; the queue's own
    # connection answers, so no line may say Redis did not.
    queue = WorkQueue(connect(fault_proxy.url), queue_name)
    seed(queue, [b"held", b"last"])
    assert queue.lease()  # another worker's: the worker then waits for it
    gate = tmp_path / "gate"
    worker = spawn_worker(
        fault_proxy.url, queue_name, "--handler", "recording:gated",
        env=cli_env(GATE_FILE=str(gate)),
    )  # fmt: skip
    try:
        said_until(worker, "Working on last")  # it has not waited yet, so not subscribed
        fault_proxy.stall_new_connections(15)
        made = fault_proxy.accepted
        gate.touch()
        deadline = time.monotonic() + 30
        while fault_proxy.accepted == made:  # the subscription's connection, made in the wait
            assert time.monotonic() < deadline, "the worker never subscribed"
            time.sleep(0.01)
        time.sleep(0.2)  # its handshake sent, unanswered
        output = _stops_at_once(worker)
    finally:
        worker.kill()
    assert fault_proxy.accepted == made + 1, output
    assert queue.counts() == (0, 1)  # "last" handed in, "held" still leased


def test_a_handlers_own_alarm_still_ends_its_attempt(
    fresh_server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    queue = WorkQueue(connect(fresh_server.url), queue_name)
    seed(queue, [b"slow"])
    result = rediswq(
        "worker", "--redis-url", fresh_server.url, "--queue", queue_name, "--work-seconds", "0",
        "--handler", "recording:record_under_alarm", "--max-attempts", "1",
        env=cli_env(RECORD_FILE=str(tmp_path / "done"), SLOW_SECONDS="60", ALARM_SECONDS="1"),
    )  # fmt: skip
    assert result.returncode == 0, result
    assert "TimeoutError: slow took over 1s" in result.stdout, result.stdout
    assert queue.client.llen(queue.keys.failed) == 1
    assert recorded(str(tmp_path / "done")) == ["slow armed"]
