"""How soon a first deploy's pods can work: they wait for Redis to be Ready, which its probes
decide. No cluster is needed; the container e2e (test_docker_latency.py) measures the rest."""

from __future__ import annotations

import pytest
from rendering import IN_CLUSTER, Manifest, redis_template, render

# An append-only file replayed after a restart answers LOADING for a while: the startup probe's
# budget must outlast a long replay.
REPLAY_SECONDS = 300


def redis_container(overlay: str) -> Manifest:
    [container] = redis_template(render(overlay))["spec"]["containers"]
    return container  # type: ignore[no-any-return]


@pytest.mark.parametrize("overlay", IN_CLUSTER)
def test_redis_is_tried_every_second_while_it_starts_and_ready_without_a_delay(
    overlay: str,
) -> None:
    container = redis_container(overlay)
    startup, readiness = container["startupProbe"], container["readinessProbe"]
    assert startup.get("initialDelaySeconds", 0) == 0
    assert startup["periodSeconds"] == 1, "a failed try costs the waiting pods a whole period"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= REPLAY_SECONDS
    assert readiness.get("initialDelaySeconds", 0) == 0, "the startup probe waited already"
