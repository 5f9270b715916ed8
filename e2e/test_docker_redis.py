"""Redis's Pod goes and comes back on its claim, as the StatefulSet brings back redis-0: the dev
overlay's Redis runs as a container on a Docker volume (its volume claim), is SIGKILLed mid-run,
and a new container starts on the same volume under the same Service name. Nothing is lost: the
workers ride out the outage and the run drains with every item done exactly once, since Redis
acknowledged no write it had not fsynced (`appendfsync always`) and the outage is shorter than a
lease. With a fresh volume instead (the bare Pod's emptyDir) the workers find the queue gone.

Skips, saying why, where no engine or builder can be had; E2E_DOCKER=1 makes that a failure.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from containers import KILLED, Containers, docker
from dockersystem import (
    SEED_TIMEOUT,
    WORKER_TIMEOUT,
    System,
    finish,
    queue_status,
    redis_on,
    start_redis,
)
from rendering import seed_items
from worklog import assert_drained, wait_until_begun

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

# Long enough for every worker to find Redis gone, far shorter than a lease (60 s).
DOWN_SECONDS = 4.0
UNREACHABLE = "is unreachable"


def test_redis_restarted_on_its_volume_loses_nothing(
    system: System, running: Containers, tmp_path: Path
) -> None:
    volume = running.volume("data-redis-0")
    redis = redis_on(system, "data", volume, tmp_path)
    first = start_redis(running, system, redis, "redis-0")
    workers = [running.start(system.worker, f"worker-{n}") for n in range(system.parallelism)]
    code, _ = finish(running, system.seed, "seed")
    assert code == 0, f"seed exited {code}"
    items = seed_items()

    # Two workers: the third item begun means at least one was done.
    begun = wait_until_begun(
        lambda: [running.stdout(name) for name in workers], 3, SEED_TIMEOUT, 0.1
    )
    assert begun < len(items), "the run was over before Redis could be killed"
    docker("kill", "--signal", "KILL", first)
    assert running.wait(first, 30) == KILLED
    time.sleep(DOWN_SECONDS)
    # The Pod recreated: a new container, the same volume, the same Service name.
    start_redis(running, system, redis, "redis-0-again")

    codes = {name: running.wait(name, WORKER_TIMEOUT) for name in workers}
    assert set(codes.values()) == {0}, f"worker exit codes: {codes}"
    logs = {name: running.stdout(name) for name in workers}
    outages = [name for name in workers if UNREACHABLE in running.logs(name)]
    assert outages, f"no worker saw Redis go ({begun} items begun at the kill)"
    assert_drained(logs, items)
    status = queue_status(running, system)
    assert status["drained"] and status["done"] == len(items), status
    assert status["reclaimed"] == 0, f"a lease ran out during the outage: {status}"
