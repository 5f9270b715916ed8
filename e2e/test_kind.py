"""The proof on a real cluster: the dev overlay on kind drains the queue, even when a worker dies.

Skips, saying why, where kind cannot run (no Docker, or no way to get the pinned node image);
E2E_KIND=1 makes those failures instead, as CI wants. `--keep-cluster` keeps the cluster afterwards.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cluster import (
    Cluster,
    apply,
    create,
    diagnosed,
    finished,
    job_pods,
    pod_log,
    pod_name,
    reset,
    restarts,
    unavailable_reason,
    wait_for_job,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rendering import find, render, seed_items
from worklog import assert_all_done, assert_drained, items_worked_on

# The first test also pays for pulling the node image, creating the cluster and building the image.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(1800)]

OVERLAY = "dev"
SEED_JOB = "job-wq-2-seed"
WORKER_JOB = "job-wq-2"
CLUSTER = os.environ.get("E2E_KIND_CLUSTER", "job-wq-2-e2e")
# Includes the node's first pull of the Redis image.
SEED_TIMEOUT = 300
# 9 items of 10 s over 2 workers is about 45 s; the rest is scheduling and start-up.
WORKER_TIMEOUT = 300


@dataclass(frozen=True)
class Deployed:
    cluster: Cluster
    namespace: str


@pytest.fixture(scope="module")
def kind(request: pytest.FixtureRequest) -> Iterator[tuple[Cluster, str]]:
    """The cluster with the dev overlay's image on its node, and the overlay's namespace."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    objects = render(OVERLAY)
    find(objects, "Job", SEED_JOB)
    worker = find(objects, "Job", WORKER_JOB)
    image = worker["spec"]["template"]["spec"]["containers"][0]["image"]
    made = create(CLUSTER, image)
    yield made, worker["metadata"]["namespace"]
    if not request.config.getoption("keep_cluster"):
        made.delete()


@pytest.fixture
def deployed(kind: tuple[Cluster, str]) -> Deployed:
    """A fresh namespace with the dev overlay applied: Redis, the seed Job, the worker Job."""
    made, namespace = kind
    reset(made, namespace)
    apply(made, OVERLAY)
    return Deployed(made, namespace)


def assert_complete(job: client.V1Job) -> None:
    state = finished(job) or "unfinished"
    name = job.metadata.name if job.metadata else None
    assert state.startswith("Complete"), f"Job {name} did not succeed: {state}"


def assert_clean_exits(pods: list[client.V1Pod]) -> None:
    phases = {pod_name(pod): pod.status.phase if pod.status else None for pod in pods}
    assert set(phases.values()) == {"Succeeded"}, f"worker pods not all Succeeded: {phases}"
    # A restarted container's earlier log is gone, so its items could not be accounted for.
    restarted = {pod_name(pod): restarts(pod) for pod in pods if restarts(pod)}
    assert not restarted, f"worker containers restarted: {restarted}"


def first_item_in_progress(deployed: Deployed, timeout: float) -> tuple[str, str]:
    """A running worker that has just begun its first item: its name and its log so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pod in job_pods(deployed.cluster, WORKER_JOB, deployed.namespace):
            if pod.status is None or pod.status.phase != "Running":
                continue
            name = pod_name(pod)
            try:
                log = pod_log(deployed.cluster, name, deployed.namespace)
            except ApiException:
                continue  # the container is not up yet
            worked = items_worked_on(log)
            # On its first item the worker has completed nothing, so everything it ever touched
            # is the one item it holds; a later item would make the checks below ambiguous.
            assert len(worked) <= 1, f"{name} was past its first item before it could be deleted"
            if worked:
                return name, log
        time.sleep(0.5)
    raise AssertionError(f"no worker began an item within {timeout:.0f} s")


def test_the_workers_drain_the_queue(deployed: Deployed) -> None:
    made, namespace = deployed.cluster, deployed.namespace
    with diagnosed(made, namespace):
        assert_complete(wait_for_job(made, SEED_JOB, namespace, SEED_TIMEOUT))
        job = wait_for_job(made, WORKER_JOB, namespace, WORKER_TIMEOUT)
        assert_complete(job)
        assert job.status is not None and job.spec is not None
        assert not job.status.failed, f"{job.status.failed} worker pods failed"
        pods = job_pods(made, WORKER_JOB, namespace)
        assert len(pods) == job.spec.parallelism, f"expected one pod per parallel worker: {pods}"
        assert_clean_exits(pods)
        logs = {pod_name(pod): pod_log(made, pod_name(pod), namespace) for pod in pods}
        assert_drained(logs, seed_items())


def test_a_deleted_worker_loses_no_item(deployed: Deployed) -> None:
    made, namespace = deployed.cluster, deployed.namespace
    with diagnosed(made, namespace):
        victim, before = first_item_in_progress(deployed, SEED_TIMEOUT)
        [held] = items_worked_on(before)
        # SIGTERM after the default grace period: the worker releases its item and exits non-zero,
        # and the Job controller starts a replacement while no worker has succeeded yet.
        made.core.delete_namespaced_pod(victim, namespace)
        assert_complete(wait_for_job(made, SEED_JOB, namespace, SEED_TIMEOUT))
        assert_complete(wait_for_job(made, WORKER_JOB, namespace, WORKER_TIMEOUT))
        survivors = [p for p in job_pods(made, WORKER_JOB, namespace) if pod_name(p) != victim]
        assert_clean_exits(survivors)
        logs = {pod_name(pod): pod_log(made, pod_name(pod), namespace) for pod in survivors}
        items = seed_items()
        assert_all_done({**logs, victim: before}, items)
        again = [name for name, log in logs.items() if held in items_worked_on(log)]
        assert again, f"{held!r}, held by the deleted {victim}, was never worked on again"
        # The deleted worker completed nothing, so the others must have done every item, once.
        assert_drained(logs, items)
