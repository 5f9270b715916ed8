"""The breakdown of a worker pod's first seconds (e2e/podtimes.py), from a pod and a log as the
API server and the kubelet give them, without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kubernetes import client
from podtimes import PodTimes, logged_at, pod_times


def at(second: int) -> datetime:
    return datetime(2026, 11, 29, 10, 0, second, tzinfo=UTC)


def pod(scheduled: int, started: int) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name="job-wq-2-abcde", creation_timestamp=at(0)),
        status=client.V1PodStatus(
            conditions=[
                client.V1PodCondition(
                    type="PodScheduled", status="True", last_transition_time=at(scheduled)
                ),
                client.V1PodCondition(type="Ready", status="False", last_transition_time=at(9)),
            ],
            container_statuses=[
                client.V1ContainerStatus(
                    name="worker",
                    image="job-wq-2:dev",
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=client.V1ContainerState(
                        terminated=client.V1ContainerStateTerminated(
                            exit_code=0, started_at=at(started), finished_at=at(9)
                        )
                    ),
                )
            ],
        ),
    )


LOG = (
    "2026-11-29T10:00:03.250000001Z Worker with sessionID: 1f\n"
    "2026-11-29T10:00:03.260000000Z Initial queue state: empty=False\n"
    "2026-11-29T10:00:04.5Z Working on apple\n"
    "2026-11-29T10:00:06Z Working on banana\n"
)


def test_each_step_counts_from_the_pods_creation() -> None:
    assert pod_times(pod(scheduled=1, started=3), LOG) == PodTimes(
        scheduled=1.0, started=3.0, connected=3.25, first_item=4.5
    )


def test_the_first_matching_line_counts_and_nanoseconds_are_cut() -> None:
    assert logged_at(LOG, "Working on ") == datetime(2026, 11, 29, 10, 0, 4, 500000, tzinfo=UTC)
    assert logged_at(LOG, "Worker with") == datetime(2026, 11, 29, 10, 0, 3, 250000, tzinfo=UTC)


def test_a_worker_that_never_worked_is_an_error_not_a_zero() -> None:
    with pytest.raises(LookupError, match="Working on"):
        pod_times(pod(scheduled=1, started=3), LOG.splitlines()[0])
