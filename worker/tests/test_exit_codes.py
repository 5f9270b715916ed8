"""How a command ends when interrupted, through the real CLI: one line and 128 + the signal."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import cli_env


def _start(*args: str, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "rediswq", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )


def _interrupted(process: subprocess.Popen[str]) -> str:
    """Send Ctrl-C's SIGINT; check the exit is 130 with one line and no traceback."""
    process.send_signal(signal.SIGINT)
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
