"""`rediswq status --watch`: a live bar on a terminal, plain lines into a pipe, with the rate and
the time left, ending on any drained queue with the reason; and how interrupted or cut-off
commands end."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
from typing import IO

import pytest
import redis
from conftest import cli_env, rediswq, spawn_worker
from rediswq.server import EmbeddedRedis
from terminal import Terminal

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _seed(url: str, queue: str, count: int) -> None:
    items = "".join(f"item-{n}\n" for n in range(count)).encode()
    seeded = rediswq("seed", "--redis-url", url, "--queue", queue, stdin=items)
    assert seeded.returncode == 0, seeded.stderr


def _watch(url: str, queue: str) -> list[str]:
    return ["status", "--watch", "--interval", "0.2", "--redis-url", url, "--queue", queue]


def _watching(url: str, queue: str) -> subprocess.Popen[str]:
    """`status --watch` into a pipe, running."""
    return subprocess.Popen(
        [sys.executable, "-m", "rediswq", *_watch(url, queue)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(),
    )  # fmt: skip


def test_on_a_terminal_a_live_bar_shows_rate_and_time_left_until_drained(
    server: EmbeddedRedis, queue_name: str
) -> None:
    _seed(server.url, queue_name, 30)
    watching = Terminal(*_watch(server.url, queue_name), env=cli_env(), columns=80)
    watching.wait_for(b"0/30")  # watching before the work starts, however slow its start
    worker = spawn_worker(server.url, queue_name, "--work-seconds", "0.1")
    code, output = watching.finish()
    worker.communicate(timeout=60)
    assert code == 0, output[-2000:]
    text = output.decode()
    assert ESCAPE.search(text), "no redraw on a terminal"
    assert re.search(r"\d+\.\d items/s, ETA \d+:\d\d", text), text[-2000:]
    assert "30/30" in text
    last = ESCAPE.sub("", text).strip().splitlines()[-1]
    assert last == f"{queue_name}: sealed and drained: 30 done, 0 failed"


def test_into_a_pipe_it_prints_a_plain_line_per_change(
    server: EmbeddedRedis, queue_name: str
) -> None:
    _seed(server.url, queue_name, 30)
    watching = _watching(server.url, queue_name)
    assert watching.stdout is not None
    first = watching.stdout.readline()  # watching before the work starts
    worker = spawn_worker(server.url, queue_name, "--work-seconds", "0.1")
    rest, err = watching.communicate(timeout=60)
    worker.communicate(timeout=60)
    assert watching.returncode == 0, err
    output = first + rest
    assert "\r" not in output and "\x1b" not in output
    lines = output.splitlines()
    assert lines[-1] == f"{queue_name}: sealed and drained: 30 done, 0 failed"
    progress = lines[:-1]
    assert len(progress) >= 2 and len(set(progress)) == len(progress)
    assert all(line.startswith(f"{queue_name}: ") for line in progress)
    assert any(re.search(r"\d+\.\d items/s, ETA \d+:\d\d$", line) for line in progress)
    assert progress[-1].startswith(f"{queue_name}: 30/30 done (in flight 0, pending 0")


@pytest.mark.parametrize("terminal", [False, True], ids=["pipe", "terminal"])
def test_a_watch_counts_dead_lettered_items_as_failed_not_done(
    terminal: bool, fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    seeded = rediswq("seed", "--redis-url", fresh_server.url, "--queue", queue_name,
                     stdin=b"a\nbad-1\nb\n")  # fmt: skip
    assert seeded.returncode == 0, seeded.stderr
    worker = rediswq("worker", "--redis-url", fresh_server.url, "--queue", queue_name,
                     "--work-seconds", "0", "--handler", "recording:reject_bad")  # fmt: skip
    assert "Done 2 items; 1 failed attempt, 1 item dead-lettered" in worker.stdout, worker
    if terminal:
        watching = Terminal(*_watch(fresh_server.url, queue_name), env=cli_env(), columns=120)
        code, output = watching.finish(timeout=30)
        lines = ESCAPE.sub("", output.decode()).replace("\r", "\n").strip().splitlines()
        assert code == 0, lines
        assert any(" 2/3 " in line and "1 failed" in line for line in lines), lines
        assert not any("3/3" in line for line in lines), lines
    else:
        watched = rediswq(*_watch(fresh_server.url, queue_name), timeout=30)
        assert watched.returncode == 0, watched.stderr
        lines = watched.stdout.splitlines()
        assert lines[0].startswith(
            f"{queue_name}: 2/3 done (in flight 0, pending 0, delayed 0, failed 1); "
        ), lines
    assert lines[-1] == f"{queue_name}: sealed and drained: 2 done, 1 failed", lines


def test_a_drained_queue_that_was_never_sealed_ends_the_watch(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str
) -> None:
    client.rpush(queue_name, "apple", "banana")  # the tutorial's manual flow
    worker = rediswq("worker", "--no-seal", "--work-seconds", "0", "--redis-url", server.url,
                     "--queue", queue_name)  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    watched = rediswq(*_watch(server.url, queue_name), timeout=30)
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines()[-1] == (
        f"{queue_name}: drained, but not sealed: nothing pending or in flight (more could still "
        "be pushed): 2 done, 0 failed"
    )


def test_a_queue_that_does_not_exist_is_named_then_followed_once_seeded(
    server: EmbeddedRedis, queue_name: str
) -> None:
    watching = _watching(server.url, queue_name)
    assert watching.stdout is not None
    first = watching.stdout.readline()
    assert first.startswith(f"No queue {queue_name!r} in Redis"), first
    assert "check --queue (QUEUE_NAME)" in first
    _seed(server.url, queue_name, 3)
    worker = spawn_worker(server.url, queue_name)
    out, err = watching.communicate(timeout=60)
    worker.communicate(timeout=60)
    assert watching.returncode == 0, err
    assert out.splitlines()[-1] == f"{queue_name}: sealed and drained: 3 done, 0 failed"


def test_ctrl_c_on_a_watch_ends_it_with_130_and_one_line(
    server: EmbeddedRedis, queue_name: str
) -> None:
    _seed(server.url, queue_name, 3)  # and no worker: it would watch forever
    watching = Terminal(*_watch(server.url, queue_name), env=cli_env())
    watching.wait_for(b"0/3")
    watching.type(b"\x03")
    code, output = watching.finish(timeout=30)
    assert code == 128 + signal.SIGINT, output[-2000:]
    assert b"Traceback" not in output
    assert output.rstrip().endswith(b"rediswq: interrupted"), output[-500:]


def test_ctrl_c_on_local_ends_it_and_its_workers_with_130(tmp_path: os.PathLike[str]) -> None:
    items = os.path.join(tmp_path, "items.txt")
    with open(items, "w") as file:
        file.write("slow-1\nslow-2\n")
    running = Terminal("local", "--items", items, "--work-seconds", "60", env=cli_env())
    running.wait_for(b"Working on slow-")
    running.type(b"\x03")
    code, output = running.finish(timeout=60)
    assert code == 128 + signal.SIGINT, output[-2000:]
    assert b"Traceback" not in output and b"KeyboardInterrupt" not in output, output.decode()
    # The worker that had an item puts it back: the server outlives it.
    assert re.search(rb"Released 1 item\(s\) back to the queue: slow-\d", output), output
    assert b"Stopped by SIGTERM, exiting" in output


@pytest.mark.parametrize(
    "command", [["status"], ["status", "--json"], ["status", "--watch"], ["failed"]]
)
def test_a_closed_pipe_ends_the_command_silently_as_sigpipe_would(
    command: list[str], server: EmbeddedRedis, queue_name: str
) -> None:
    _seed(server.url, queue_name, 3)
    reader, writer = os.pipe()
    os.close(reader)  # as `| head -1` does once it has its line
    try:
        ended = subprocess.run(
            [sys.executable, "-m", "rediswq", *command, "--redis-url", server.url,
             "--queue", queue_name],
            stdout=writer, stderr=subprocess.PIPE, text=True, env=cli_env(), timeout=30,
            check=False,
        )  # fmt: skip
    finally:
        os.close(writer)
    assert (ended.returncode, ended.stderr) == (128 + signal.SIGPIPE, "")


def _line_within(stream: IO[str], seconds: float) -> str:
    ready, _, _ = select.select([stream], [], [], seconds)
    assert ready, f"nothing said within {seconds:g}s"
    return stream.readline()


def test_a_watch_says_at_once_that_redis_stopped_answering_and_when_it_is_back(
    fresh_server: EmbeddedRedis, queue_name: str
) -> None:
    _seed(fresh_server.url, queue_name, 3)  # and no worker: it watches until stopped
    watching = _watching(fresh_server.url, queue_name)
    assert watching.stdout is not None and watching.stderr is not None
    try:
        assert "0/3 done" in _line_within(watching.stdout, 30)
        fresh_server.pause()  # it takes connections and never answers
        # One socket timeout (10 s) after the look that hangs; not the 300 s of the outage.
        said = _line_within(watching.stderr, 20)
        assert said.startswith(f"rediswq: Redis at 127.0.0.1:{fresh_server.port} is "
                               "unreachable ("), said  # fmt: skip
        assert said.rstrip().endswith("retrying for up to 300s"), said
        fresh_server.resume()
        assert _line_within(watching.stderr, 20).startswith("rediswq: Reconnected to Redis")
    finally:
        fresh_server.resume()
        watching.kill()
        watching.communicate()
