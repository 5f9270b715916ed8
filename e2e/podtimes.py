"""Where a worker pod's first seconds go, from what the cluster records: the pod's creation, its
scheduling, its container's start (image, sandbox, network), and from the worker's own
timestamped log its connection to Redis and its first item. Pure, so it is tested without a
cluster (e2e/test_podtimes.py); the cluster's times are whole seconds, the log's are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from kubernetes import client

CONNECTED = "Worker with sessionID"
FIRST_ITEM = "Working on "


@dataclass(frozen=True)
class PodTimes:
    """Seconds from the pod's creation to each step."""

    scheduled: float
    started: float  # the container's process started
    connected: float  # the worker reached Redis (Python started, Redis waited for)
    first_item: float

    def line(self) -> str:
        return (
            f"scheduled {self.scheduled:.0f} s, container started {self.started:.0f} s, "
            f"connected {self.connected:.1f} s, first item {self.first_item:.1f} s"
        )


def logged_at(log: str, text: str) -> datetime:
    """When the first line of a `timestamps=True` log that says `text` was written."""
    for line in log.splitlines():
        stamp, _, said = line.partition(" ")
        if text in said:
            day, _, clock = stamp.rstrip("Z").partition("T")
            whole, _, fraction = clock.partition(".")
            return datetime.fromisoformat(f"{day}T{whole}.{(fraction or '0')[:6]:0<6}+00:00")
    raise LookupError(f"no line says {text!r}")


def pod_times(pod: client.V1Pod, log: str) -> PodTimes:
    """The steps of a finished worker pod whose timestamped log is `log`."""
    assert pod.metadata is not None and pod.status is not None
    created = pod.metadata.creation_timestamp
    assert created is not None
    conditions = {c.type: c.last_transition_time for c in pod.status.conditions or []}
    [status] = pod.status.container_statuses or []
    assert status.state is not None, "no container state"
    state = status.state.terminated or status.state.running
    assert state is not None and state.started_at is not None, "the container never started"

    def since(moment: datetime | None) -> float:
        assert moment is not None
        return (moment - created).total_seconds()

    return PodTimes(
        scheduled=since(conditions["PodScheduled"]),
        started=since(state.started_at),
        connected=since(logged_at(log, CONNECTED)),
        first_item=since(logged_at(log, FIRST_ITEM)),
    )
