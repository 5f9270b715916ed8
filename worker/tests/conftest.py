"""Every test talks to a real Redis-compatible server process that the tests start themselves."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest
import redis
from clustered import Cluster
from faults import FaultProxy
from itemserver import ItemServer
from rediswq.cli.options import SETTINGS
from rediswq.connection import connect
from rediswq.logs import message
from rediswq.queue import WorkQueue
from rediswq.server import EmbeddedRedis, bundled_binary
from replication import Replicated

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def server() -> Iterator[EmbeddedRedis]:
    """One server per test process; tests isolate themselves by queue name."""
    with EmbeddedRedis() as embedded:
        yield embedded


def _binaries() -> dict[str, str]:
    """Every server the suite knows: Debian's redis-server (7.0 in CI) and the bundled Valkey.

    REDISWQ_SERVERS=redis,valkey (CI sets it) makes a missing one an error, not a silent skip.
    """
    found = {}
    if redis_server := shutil.which("redis-server"):
        found["redis"] = redis_server
    if valkey_server := bundled_binary():
        found["valkey"] = valkey_server
    required = set(filter(None, os.environ.get("REDISWQ_SERVERS", "").split(",")))
    if missing := required - set(found):
        raise RuntimeError(f"REDISWQ_SERVERS asks for {sorted(missing)}, not installed here")
    return found


_BINARIES = _binaries()


@pytest.fixture(params=sorted(_BINARIES))
def fresh_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    """A server of each kind installed, for this test alone: it may stop, fill or lock it."""
    with EmbeddedRedis(binary=_BINARIES[request.param]) as embedded:
        yield embedded


@pytest.fixture(params=sorted(_BINARIES))
def durable_server(request: pytest.FixtureRequest) -> Iterator[EmbeddedRedis]:
    """Like `fresh_server`, with every write in the AOF: it may be killed and started again."""
    with EmbeddedRedis(binary=_BINARIES[request.param], appendonly=True) as embedded:
        yield embedded


@pytest.fixture(params=sorted(_BINARIES))
def replicated(request: pytest.FixtureRequest) -> Iterator[Replicated]:
    """A primary, a replica and three Sentinels (replication.py), of each kind of server."""
    with Replicated(_BINARIES[request.param]) as servers:
        yield servers


@pytest.fixture(params=sorted(_BINARIES))
def redis_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A Redis Cluster of three primaries (clustered.py), of each kind of server."""
    with Cluster(_BINARIES[request.param]) as cluster:
        yield cluster


@pytest.fixture
def fault_proxy(fresh_server: EmbeddedRedis) -> Iterator[FaultProxy]:
    """A FaultProxy (faults.py) in front of `fresh_server`: connect to `fault_proxy.url`."""
    with FaultProxy(fresh_server.port) as proxy:
        yield proxy


@pytest.fixture
def item_server() -> Iterator[ItemServer]:
    """An HTTP server on loopback for the seed to stream item lists from."""
    served = ItemServer()
    yield served
    served.close()


@pytest.fixture
def client(server: EmbeddedRedis) -> Iterator[redis.Redis]:
    db = connect(server.url)
    yield db
    db.close()


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


QueueFactory = Callable[..., WorkQueue]


def stats_of(queue: WorkQueue) -> dict[str, int]:
    """The queue's counters, as stored."""
    raw = cast(dict[bytes, bytes], queue.client.hgetall(queue.keys.stats))
    return {key.decode(): int(value) for key, value in raw.items()}


def calls(client: redis.Redis, command: str) -> int:
    """How many times the server ran `command` (INFO commandstats; `pubsub|numsub` for a
    subcommand) since its start or the last CONFIG RESETSTAT."""
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def pending_of(queue: WorkQueue) -> list[bytes]:
    return cast(list[bytes], queue.client.lrange(queue.keys.pending, 0, -1))


@pytest.fixture
def make_queue(client: redis.Redis, queue_name: str) -> QueueFactory:
    """A WorkQueue on the shared server; each call is a new session on the same queue."""

    def make(**options: object) -> WorkQueue:
        return WorkQueue(client, queue_name, **options)  # type: ignore[arg-type]

    return make


def cli_env(**extra: str) -> dict[str, str]:
    """The environment for a `rediswq` subprocess: test handlers importable, no stray settings."""
    env = {k: v for k, v in os.environ.items() if k not in _SETTINGS}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


# Every variable a command reads: the environment the tests run in must not set them.
_SETTINGS = {setting.env for setting in SETTINGS}


def rediswq(
    *args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would, and capture what it says."""
    return subprocess.run(
        [sys.executable, "-m", "rediswq", *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=env or cli_env(),
        timeout=timeout,
        check=False,
    )


def assert_drained_status(env: dict[str, str], done: int) -> None:
    """`rediswq status --json` works with `env` and reads the run drained, `done` items done."""
    status = rediswq("status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert (shown["done"], shown["pending"], shown["drained"]) == (done, 0, True), shown


def spawn_worker(
    url: str, queue: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """A `rediswq worker` process; read its output with .communicate()."""
    return subprocess.Popen(
        [sys.executable, "-m", "rediswq", "worker", "--redis-url", url, "--queue", queue,
         "--work-seconds", "0", "--redis-wait-timeout", "10", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env or cli_env(),
    )  # fmt: skip


def outputs_of(workers: list[subprocess.Popen[str]], timeout: float) -> list[str]:
    """What each of `workers` printed, once all have exited. Their pipes are read at once, each on
    a thread of its own: read one after another, a worker that prints more than a pipe holds
    (64 KiB, some 1,300 "Working on" lines) blocks on its next line, holding its item, while the
    test waits for another that waits for that item."""
    with concurrent.futures.ThreadPoolExecutor(len(workers)) as pool:
        return list(pool.map(lambda worker: worker.communicate(timeout=timeout)[0], workers))


def said_until(worker: subprocess.Popen[str], wanted: str) -> list[str]:
    """What `worker` (from spawn_worker) printed, each line's message (else the line), up to the
    first message that starts with `wanted`: the sign that it got that far. Fails if it exits
    first; read the rest with .communicate()."""
    assert worker.stdout is not None
    said: list[str] = []
    for line in worker.stdout:
        said.append(message(line.rstrip("\n")) or line.rstrip("\n"))
        if said[-1].startswith(wanted):
            return said
    raise AssertionError(f"exit {worker.wait()} before saying {wanted!r}: {said}")


def loop_pid(command: subprocess.Popen[str], timeout: float = 30) -> int:
    """The process that runs a `rediswq worker` command's loop and handler: its child. Stop that
    one to stall the worker (SIGSTOP cannot be forwarded by the command's process)."""
    children = Path(f"/proc/{command.pid}/task/{command.pid}/children")
    deadline = time.monotonic() + timeout
    while not (found := children.read_text().split()):
        assert command.poll() is None and time.monotonic() < deadline, "no worker process"
        time.sleep(0.02)
    (child,) = found
    return int(child)
