"""Where a first deploy's seconds go on a real cluster, which the container e2e cannot show:
scheduling, the pod sandbox and its network, the image on the node, the probes that make Redis
Ready behind its Service, the Job controller. The dev overlay is applied to a fresh namespace;
each worker pod's steps come from the cluster's records and the pod's timestamped log
(e2e/podtimes.py). The figures are printed for docs/benchmarks.md; the bounds are loose.

Runs where test_kind.py runs (a kind cluster made here, or E2E_CLUSTER=current), and stops or
skips as it does where none can.
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cluster import (
    WORKER_JOB,
    Cluster,
    apply,
    completed_run,
    diagnosed,
    job_pods,
    overlay,
    pod_name,
    reset,
)
from dockersystem import report
from podtimes import pod_times
from rendering import REPO

pytestmark = [pytest.mark.kind, pytest.mark.timeout(2400)]

# A worker pod that has not begun its first item this long after its creation is a regression
# worth failing for, on any cluster that runs these tests.
FIRST_ITEM_SECONDS = 60


def seconds_since(start: datetime | None, moment: datetime | None) -> float:
    assert start is not None and moment is not None
    return (moment - start).total_seconds()


def test_where_a_first_deploy_spends_its_seconds(
    request: pytest.FixtureRequest, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    reset(cluster, namespace)
    with diagnosed(cluster, namespace):
        applied = datetime.now(UTC)
        apply(cluster, overlay(REPO, tmp_path))
        job = completed_run(cluster, namespace)
        assert job.status is not None
        [redis] = cluster.core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/component=redis"
        ).items
        assert redis.metadata is not None and redis.status is not None
        ready = {c.type: c.last_transition_time for c in redis.status.conditions or []}["Ready"]
        redis_ready = seconds_since(redis.metadata.creation_timestamp, ready)
        times = {}
        for pod in job_pods(cluster, WORKER_JOB, namespace):
            log = cluster.core.read_namespaced_pod_log(pod_name(pod), namespace, timestamps=True)
            times[pod_name(pod)] = pod_times(pod, str(log))
        complete = seconds_since(applied, job.status.completion_time)

    for name, steps in sorted(times.items()):
        report(request, f"{name}: {steps.line()} after its creation", tag="e2e-kind")
        # The cluster's times are whole seconds, cut: allow one second of disorder.
        assert steps.scheduled <= steps.started + 1 <= steps.connected + 2, steps
        assert steps.connected <= steps.first_item, steps
        assert steps.first_item < FIRST_ITEM_SECONDS, f"{name}: {steps.line()}"
    first = statistics.median(steps.first_item for steps in times.values())
    report(
        request,
        f"redis Ready {redis_ready:.0f} s after its creation; worker pods' first item a median "
        f"{first:.1f} s after their creation; apply to the worker Job Complete {complete:.0f} s",
        tag="e2e-kind",
    )
