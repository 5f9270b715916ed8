"""The `rediswq` command as users run it: seed, status, worker, local."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import secrets
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import cli_env, rediswq
from rediswq.cli import build_parser
from rediswq.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_USAGE
from rediswq.logs import message, messages
from rediswq.server import EmbeddedRedis, free_port
from terminal import Terminal

REPO = Path(__file__).resolve().parents[2]


def test_seed_queues_seals_and_is_idempotent(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str, tmp_path: Path
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("apple\n\nbanana\r\ncherry\n", encoding="utf-8")
    first = rediswq("seed", str(items), "--redis-url", server.url, "--queue", queue_name)
    assert first.returncode == 0, first.stderr
    run = hashlib.sha256(b"apple\nbanana\ncherry").hexdigest()[:12]  # the items' run id
    assert first.stdout.strip() == f"Queued 3 items in {queue_name!r} for run {run} and sealed it"
    assert client.lrange(queue_name, 0, -1) == [b"apple", b"banana", b"cherry"]
    again = rediswq("seed", str(items), "--redis-url", server.url, "--queue", queue_name)
    assert again.returncode == 0
    assert f"already sealed for run {run}; nothing changed" in again.stdout
    assert client.llen(queue_name) == 3
    reset = rediswq("seed", "--reset", "--redis-url", server.url, "--queue", queue_name,
                    stdin=b"fresh\n")  # fmt: skip
    assert reset.returncode == 0, reset.stderr
    assert client.lrange(queue_name, 0, -1) == [b"fresh"]


def test_status_as_text_and_json(server: EmbeddedRedis, queue_name: str) -> None:
    url = ("--redis-url", server.url, "--queue", queue_name)
    rediswq("seed", *url, stdin=b"a\nb\nc\n")
    worker = rediswq("worker", *url, "--work-seconds", "0")
    assert worker.returncode == 0, worker.stderr
    text = rediswq("status", *url)
    assert text.returncode == 0
    assert "done       3" in text.stdout and "sealed, drained" in text.stdout
    shown = json.loads(rediswq("status", "--json", *url).stdout)
    assert shown["done"] == 3 and shown["pending"] == 0 and shown["drained"] is True
    watched = rediswq("status", "--watch", *url)
    assert "3/3 done" in watched.stdout


def test_environment_configures_the_worker(server: EmbeddedRedis, queue_name: str) -> None:
    env = cli_env(REDIS_URL=server.url, QUEUE_NAME=queue_name, WORK_SECONDS="0")
    rediswq("seed", env=env, stdin=b"from-env\n")
    worker = rediswq("worker", env=env)
    assert worker.returncode == 0, worker.stderr
    assert "Working on from-env" in messages(worker.stdout)


def test_local_runs_the_whole_system_on_the_tutorials_items() -> None:
    result = rediswq("local", "--items", str(REPO / "seed" / "items.txt"), "--work-seconds", "0.05")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    fruits = (REPO / "seed" / "items.txt").read_text().split()
    said = [message(line.partition("] ")[2]) for line in lines if line.startswith("[worker-")]
    for fruit in fruits:
        assert said.count(f"Working on {fruit}") == 1
    assert "Summary: 9/9 done, 0 failed" in result.stdout
    assert said.count("Queue empty, exiting") == 2
    done = [int(line.split(":")[1].split()[0]) for line in lines if line.startswith("  worker-")]
    assert sum(done) == 9


def test_local_keep_leaves_the_drained_queue_to_look_at_and_says_how_to_stop_it() -> None:
    result = rediswq("local", "--items", str(REPO / "seed" / "items.txt"), "--work-seconds",
                     "0.05", "--keep")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    said = result.stdout.split("Redis is still running, with the queue (--keep)")[-1]
    stop = re.search(r"^Stop it with: (kill (\d+))$", said, re.MULTILINE)
    assert stop, result.stdout
    try:
        pasted = [line.strip() for line in said.splitlines() if line.startswith("  ")]
        assert [line.split()[-1] for line in pasted[1:]] == ["status", "failed", "results"]
        looked = subprocess.run(
            ["bash", "-euc", "\n".join(pasted)],
            env=cli_env(), capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert looked.returncode == 0, looked.stderr
        assert "(sealed, drained)" in looked.stdout and re.search(r"^done +9$", looked.stdout, re.M)
        assert "No dead letters in 'job2'" in looked.stdout
    finally:
        subprocess.run(["bash", "-c", stop.group(1)], check=True)
    url = re.search(r"REDIS_URL=(\S+)", said)
    assert url
    assert rediswq("status", "--redis-url", url.group(1)).returncode == EXIT_FAILURE  # stopped


def test_locals_progress_counts_done_as_its_summary_does_and_says_the_last_once(
    tmp_path: Path,
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("a\nbad-1\nb\n")
    result = rediswq(
        "local", "--items", str(items), "--workers", "1", "--handler", "recording:reject_bad",
        "--work-seconds", "0",
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr  # one item dead-lettered
    progress = [line for line in result.stdout.splitlines() if line.startswith("progress ")]
    last = "progress 2/3 done (in flight 0, pending 0, delayed 0, failed 1)"
    assert progress[-1] == last and progress.count(last) == 1, progress
    assert "Summary: 2/3 done, 1 failed" in result.stdout


def test_help_lists_the_commands() -> None:
    result = rediswq("--help")
    assert result.returncode == 0
    for command in ("worker", "seed", "status", "local"):
        assert command in result.stdout


def test_every_command_says_what_it_does_atop_its_help() -> None:
    def commands(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        for action in parser._actions:  # argparse keeps its sub-parsers only here
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield sub
                    yield from commands(sub)

    undescribed = [sub.prog for sub in commands(build_parser()) if not sub.description]
    assert not undescribed, f"no description line in --help: {undescribed}"


def test_version_names_the_distribution() -> None:
    project = tomllib.loads((REPO / "worker" / "pyproject.toml").read_text())["project"]
    result = rediswq("--version")
    assert (result.returncode, result.stdout) == (0, f"rediswq {project['version']} (job-wq-2)\n")


def test_bare_rediswq_shows_the_help_as_a_usage_error() -> None:
    result = rediswq()
    assert result.returncode == EXIT_USAGE  # a Job whose args went missing must not succeed
    assert result.stderr.startswith("usage: rediswq") and "worker" in result.stderr
    assert "error:" not in result.stderr


def test_seed_without_a_file_on_a_terminal_says_so(server: EmbeddedRedis, queue_name: str) -> None:
    typing = Terminal("seed", "--redis-url", server.url, "--queue", queue_name, env=cli_env())
    code, output = typing.finish(timeout=30)
    assert code == EXIT_USAGE, output
    assert b"no items file, and stdin is a terminal" in output


def test_seed_dash_on_a_terminal_reads_what_is_typed(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str
) -> None:
    typing = Terminal("seed", "-", "--redis-url", server.url, "--queue", queue_name, env=cli_env())
    typing.wait_for(b"end with Ctrl-D")
    typing.type(b"typed\n\x04")
    code, output = typing.finish(timeout=30)
    assert code == 0, output
    assert client.lrange(queue_name, 0, -1) == [b"typed"]


def test_a_byte_order_mark_is_not_part_of_the_first_item(
    server: EmbeddedRedis, client: redis.Redis, queue_name: str, tmp_path: Path
) -> None:
    items = tmp_path / "items.txt"
    items.write_text("apple\r\nbanana\r\n", encoding="utf-8-sig")  # as Notepad saves it
    result = rediswq("seed", str(items), "--redis-url", server.url, "--queue", queue_name)
    assert result.returncode == 0, result.stderr
    assert client.lrange(queue_name, 0, -1) == [b"apple", b"banana"]
    run = hashlib.sha256(b"apple\nbanana").hexdigest()[:12]  # the same run as without the mark
    assert f"for run {run}" in result.stdout


def test_interactive_commands_give_up_on_a_silent_redis_within_seconds() -> None:
    # Accepts and never answers, as a wrong host behind a firewall that drops.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        started = time.monotonic()
        result = rediswq("status", "--redis-url", url, timeout=60)
        elapsed = time.monotonic() - started
    assert result.returncode == EXIT_FAILURE
    (line,) = result.stderr.splitlines()
    assert line.startswith("rediswq: error: cannot reach Redis at 127.0.0.1:")
    assert line.endswith("(gave up after 5s: --redis-wait-timeout, REDIS_WAIT_TIMEOUT)")
    assert 4.0 <= elapsed < 20.0, f"gave up after {elapsed:.1f}s"


def test_a_worker_keeps_waiting_for_redis_at_start() -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "rediswq", "worker", "--redis-url",
         f"redis://127.0.0.1:{free_port()}/0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env(),
    )  # fmt: skip
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            worker.wait(timeout=10)  # twice the interactive commands' wait
    finally:
        worker.kill()
        worker.communicate()


@pytest.mark.parametrize("where", ["url", "env"])
def test_rejected_credentials_name_where_the_password_came_from(where: str) -> None:
    wrong = secrets.token_hex(8)
    with EmbeddedRedis(password=secrets.token_hex(8)) as guarded:
        bare = f"redis://127.0.0.1:{guarded.port}/0"
        if where == "url":
            result = rediswq(
                "status", "--redis-url", f"redis://:{wrong}@127.0.0.1:{guarded.port}/0"
            )
        else:
            result = rediswq("status", "--redis-url", bare, env=cli_env(REDIS_PASSWORD=wrong))
    assert result.returncode == EXIT_CONFIG, result.stderr
    (line,) = result.stderr.splitlines()
    assert wrong not in line
    if where == "url":
        assert line.endswith("check the user and password in the Redis URL"), line
        assert "REDIS_PASSWORD" not in line
    else:
        assert line.endswith("check REDIS_PASSWORD"), line


def test_only_status_watch_loads_rich() -> None:
    # rich's import took 30-50 ms: every worker process would pay it at start.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, rediswq.cli; print('rich' in sys.modules)"],
        capture_output=True, text=True, check=True, env=cli_env(),
    )  # fmt: skip
    assert loaded.stdout == "False\n"
