"""overlays/ha on a local Docker engine: the three Redis servers and three Sentinels of
components/redis-ha run as their StatefulSets' pods would (their own start scripts, each server's
claim a Docker volume, each pod's DNS name a network alias), the seed and the workers as the Jobs'.
The primary is SIGKILLed the instant the seed exits 0, its pod comes back as a replica, and the
new primary is SIGKILLed mid-run: every item is done at least once, the repeats are counted and
reported, the seed and every worker exit 0, and `rediswq status` reads the run through the
Sentinels.

Skips, saying why, where no engine or builder can be had; E2E_DOCKER=1 makes that a failure.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from containers import KILLED, Containers, docker
from dockersystem import (
    READY_TIMEOUT,
    SEED_TIMEOUT,
    WORKER_TIMEOUT,
    System,
    finish,
    job_specs,
    report,
)
from podspec import Spec, stateful_pod_spec
from rendering import find, seed_items, with_dev_secret
from worklog import repeats, wait_until_begun

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

SERVERS, SENTINELS, MASTER = "redis-ha", "redis-sentinel", "mymaster"
FAILOVER_TIMEOUT = 90.0


class HighlyAvailable:
    """The pods of components/redis-ha as containers of `made`."""

    def __init__(self, system: System, made: Containers, scratch: Path) -> None:
        self.made = made
        self.objects = with_dev_secret("ha", scratch / "rendered")
        servers = find(self.objects, "StatefulSet", SERVERS)
        sentinels = find(self.objects, "StatefulSet", SENTINELS)
        image = system.redis.image  # the pinned Redis image, or its local stand-in
        self.servers = [
            stateful_pod_spec(
                servers, self.objects, scratch, {"data": made.volume(f"data-{SERVERS}-{n}")}, n
            ).with_image(image)
            for n in range(3)
        ]
        self.sentinels = [
            stateful_pod_spec(sentinels, self.objects, scratch, ordinal=n).with_image(image)
            for n in range(3)
        ]
        self.running: dict[str, str] = {}  # a pod's DNS name: its container now

    def start(self, spec: Spec, pod: str, service: str, suffix: str = "") -> str:
        host = f"{pod}.{service}"
        self.running[host] = self.made.start(spec, pod + suffix, aliases=[host])
        return self.running[host]

    def up(self) -> None:
        """All at once, as podManagementPolicy Parallel starts them; until the Sentinels know the
        two replicas and one another."""
        started = [
            (self.start(spec, f"{service}-{n}", service), spec)
            for service, specs in ((SERVERS, self.servers), (SENTINELS, self.sentinels))
            for n, spec in enumerate(specs)
        ]
        for container, spec in started:
            self.made.wait_ready(container, spec, READY_TIMEOUT)
        # No wait for the replicas to sync: until they have, the seed waits, as a seed Job does
        # (min-replicas-to-write refuses its writes, which it retries).
        self.wait_until_sentinels_see(replicas=2)

    def sentinel(self, *args: str) -> list[str]:
        """A Sentinel command's reply, one line per value, from the first Sentinel that answers."""
        for n in range(3):
            container = self.running[f"{SENTINELS}-{n}.{SENTINELS}"]
            done = self.made.run_in(container, ["redis-cli", "-p", "26379", "--raw", *args])
            if done.returncode == 0 and done.stdout.strip():
                return done.stdout.split()
        return []

    def primary(self) -> str:
        """The DNS name of the primary, as the Sentinels name it."""
        return self.sentinel("sentinel", "get-master-addr-by-name", MASTER)[0]

    def wait_until_sentinels_see(self, replicas: int) -> None:
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while time.monotonic() < deadline:
            ready = 0
            for n in range(3):
                container = self.running[f"{SENTINELS}-{n}.{SENTINELS}"]
                command = ["redis-cli", "-p", "26379", "--raw", "sentinel", "master", MASTER]
                fields = self.made.run_in(container, command).stdout.split()
                state = dict(zip(fields[::2], fields[1::2], strict=False))
                if (
                    int(state.get("num-slaves", 0)) >= replicas
                    and int(state.get("num-other-sentinels", 0)) >= 2
                ):
                    ready += 1
            if ready == 3:
                return
            time.sleep(1)
        raise AssertionError(f"the Sentinels did not see {replicas} replicas and each other")

    def role(self, host: str) -> dict[str, str]:
        done = self.made.run_in(self.running[host], ["redis-cli", "info", "replication"])
        pairs = (line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)
        return {key: value.strip() for key, value in pairs}

    def kill_primary(self) -> str:
        """SIGKILL the primary's container; its DNS name."""
        host = self.primary()
        docker("kill", "--signal", "KILL", self.running[host])
        assert self.made.wait(self.running[host], 30) == KILLED
        return host

    def wait_for_failover(self, old: str) -> str:
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while time.monotonic() < deadline:
            new = self.primary()
            if new != old and self.role(new).get("role") == "master":
                return new
            time.sleep(1)
        raise AssertionError(f"no failover from {old} within {FAILOVER_TIMEOUT:.0f} s")

    def bring_back(self, host: str) -> None:
        """The killed pod recreated on its claim, as the StatefulSet does; once it replicates."""
        pod = host.split(".", 1)[0]
        spec = self.servers[int(pod.rsplit("-", 1)[1])]
        container = self.start(spec, pod, SERVERS, suffix="-again")
        self.made.wait_ready(container, spec, READY_TIMEOUT)
        deadline = time.monotonic() + FAILOVER_TIMEOUT
        while time.monotonic() < deadline:
            role = self.role(host)
            if role.get("role") == "slave" and role.get("master_link_status") == "up":
                return
            time.sleep(1)
        raise AssertionError(f"{host} did not come back as a replica")


def test_the_ha_overlay_loses_no_item_when_its_primary_is_killed_after_the_seed_and_mid_run(
    request: pytest.FixtureRequest, system: System, running: Containers, tmp_path: Path
) -> None:
    ha = HighlyAvailable(system, running, tmp_path)
    ha.up()
    seed, worker = job_specs(ha.objects, tmp_path)
    assert seed.env.get("REDIS_SENTINELS"), "the ha overlay's clients must ask the Sentinels"
    code, _ = finish(running, seed, "seed")
    assert code == 0, f"seed exited {code}"

    first = ha.kill_primary()  # the instant the seed is Complete
    second = ha.wait_for_failover(first)
    ha.bring_back(first)

    workers = [running.start(worker, f"worker-{n}") for n in range(2)]
    items = seed_items()
    wait_until_begun(lambda: [running.stdout(name) for name in workers], 3, SEED_TIMEOUT, 0.2)
    assert ha.kill_primary() == second

    codes = {name: running.wait(name, WORKER_TIMEOUT) for name in workers}
    assert set(codes.values()) == {0}, f"worker exit codes: {codes}"
    again = repeats({name: running.stdout(name) for name in workers}, items)
    report(request, f"ha failover: {again} repeats in {len(items)} items", tag="e2e-docker-ha")
    code, name = finish(running, worker.with_args("status", "--json"), "status")
    assert code == 0, f"rediswq status exited {code}"
    status = json.loads(running.stdout(name))
    assert status["drained"] and status["done"] == len(items), status
