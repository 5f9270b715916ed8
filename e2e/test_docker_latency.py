"""How soon a worker pod works, with the dev overlay's pods as containers: from `docker run` to its
first item on a sealed queue, from the seal to the first item of a worker that started before the
seed, and from Redis's start to a worker that started before Redis. Timestamps are Docker's own
(the container's start, each log line's arrival), medians of a few runs; the bounds are loose (the
machine is shared), the figures are printed for docs/benchmarks.md.

What only a cluster adds (scheduling, an image pull, the kubelet's and the Service's reaction to a
readiness probe) is not here.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from containers import Containers, docker
from dockersystem import System, finish, report, start_redis
from podspec import Spec

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

RUNS = 5
# How long Redis comes up after the worker: the worker is well into its retries by then.
DELAY = 3
FIRST_ITEM = "Working on "
CONNECTED = "Worker with sessionID"
WAITING = "Initial queue state"


def instant(text: str) -> datetime:
    """Docker's RFC 3339 time with nanoseconds, cut to what datetime holds."""
    day, _, rest = text.rstrip("Z").partition("T")
    clock, _, fraction = rest.partition(".")
    return datetime.fromisoformat(f"{day}T{clock}.{(fraction or '0')[:6]:0<6}+00:00")


def logged_at(made: Containers, name: str, text: str, timeout: float = 60) -> datetime:
    """When the first line of `name` that says `text` reached Docker."""
    deadline = time.monotonic() + timeout
    while True:
        for line in docker("logs", "--timestamps", name).splitlines():
            stamp, _, said = line.partition(" ")
            if text in said:
                return instant(stamp)
        assert time.monotonic() < deadline, f"{name} never said {text!r}: {made.logs(name)}"
        assert made.state(name) == "running", made.logs(name)
        time.sleep(0.05)


def discard(made: Containers, *names: str) -> None:
    """Remove containers measured already, so that they cost the machine nothing more."""
    docker("rm", "--force", *names)
    for name in names:
        made.names.remove(name)


def late_redis(redis: Spec, delay: float) -> Spec:
    """`redis` as it is, but starting `delay` seconds late."""
    entrypoint = json.loads(
        docker("image", "inspect", "--format", "{{json .Config.Entrypoint}}", redis.image)
    )
    command = [*(entrypoint or []), *(redis.args or ())]
    return replace(redis, entrypoint="sh", args=("-c", f'sleep {delay}; exec "$@"', "sh", *command))


def started_at(name: str) -> datetime:
    return instant(docker("inspect", "--format", "{{.State.StartedAt}}", name))


def seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def median(measure: Callable[[int], float]) -> float:
    return statistics.median(measure(n) for n in range(RUNS))


def queue() -> str:
    return f"latency-{uuid.uuid4().hex[:8]}"


def test_a_worker_works_within_seconds_of_its_start_the_seal_and_redis(
    request: pytest.FixtureRequest, system: System, running: Containers
) -> None:
    start_redis(running, system)
    worker, seed = system.worker, system.seed

    def seeded(name: str) -> str:
        """A queue sealed for the committed items' run, as the seed Job leaves it."""
        code, _ = finish(running, seed.with_env(QUEUE_NAME=name), f"seed-{name}")
        assert code == 0
        return name

    starts: list[float] = []

    def on_a_sealed_queue(n: int) -> float:
        name = seeded(queue())
        before = datetime.now(UTC)
        started = running.start(worker.with_env(QUEUE_NAME=name), f"sealed-{n}")
        first = logged_at(running, started, FIRST_ITEM)
        starts.append(seconds(first, started_at(started)))
        discard(running, started)
        return seconds(first, before)

    def before_the_seal(n: int) -> float:
        name = queue()
        started = running.start(worker.with_env(QUEUE_NAME=name), f"early-{n}")
        logged_at(running, started, WAITING)
        code, sealer = finish(running, seed.with_env(QUEUE_NAME=name), f"seed-{name}")
        assert code == 0
        took = seconds(
            logged_at(running, started, FIRST_ITEM), logged_at(running, sealer, "Queued")
        )
        discard(running, started)
        return took

    def before_redis(n: int) -> float:
        # As in a cluster, the name resolves at once (a Service exists from the apply on) and
        # connections are refused until Redis listens: Redis's container starts sleeping.
        name = queue()
        late = late_redis(system.redis, DELAY)
        server = running.start(late, f"late-redis-{n}", aliases=[name])
        started = running.start(
            worker.with_env(
                REDIS_URL=system.seed.env["REDIS_URL"].replace("//redis:", f"//{name}:")
            ),
            f"first-{n}",
        )
        ready = logged_at(running, server, "Ready to accept connections", timeout=DELAY + 30)
        took = seconds(logged_at(running, started, CONNECTED), ready)
        discard(running, started, server)
        return took

    sealed = median(on_a_sealed_queue)
    early = median(before_the_seal)
    late = median(before_redis)
    report(
        request,
        f"first item: {sealed:.2f} s after `docker run` on a sealed queue "
        f"({statistics.median(starts):.2f} s after the process started); "
        f"{early:.2f} s after the seal for a worker started before the seed; "
        f"connected {late:.2f} s after Redis started for a worker started before Redis "
        f"(medians of {RUNS})",
    )
    assert sealed < 10, sealed
    assert early < 2, early
    assert late < 5, late
