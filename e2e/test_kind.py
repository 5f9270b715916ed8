"""The proof on a real cluster: the dev overlay drains the queue, even when a worker dies, and Git
drives the runs through scripts/deploy.sh (run A; the same tree again, Job UIDs unchanged; run B).

On a kind cluster made here (where kind cannot run, for want of Docker or of the pinned node image,
the run stops with one line saying so, or skips with E2E_ALLOW_SKIP=1; E2E_KIND=1, as in CI, leaves
the failing to kind itself; `--keep-cluster` keeps it), or
with E2E_CLUSTER=current on the current kubeconfig context's cluster, which is never created or
deleted, with the images from E2E_WORKER_IMAGE and E2E_REDIS_IMAGE when set. Either way the tests
own the namespace job-wq-2: they delete and recreate it. The cluster fixture is conftest.py's, so
that test_example.py's cluster test runs on the same one. Also: redis-0 deleted mid-run, the queue
kept on its claim.
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cluster import (
    SEED_JOB,
    SEED_TIMEOUT,
    WORKER_JOB,
    WORKER_TIMEOUT,
    Cluster,
    apply,
    assert_clean_exits,
    assert_complete,
    completed_run,
    diagnosed,
    finished_run,
    job_pods,
    job_uids,
    overlay,
    pod_log,
    pod_name,
    reset,
    wait_for_job,
)
from kubernetes.client.exceptions import ApiException
from rendering import REPO, kubectl, manifests_copy, seed_items
from worklog import assert_all_done, assert_drained, assert_named_by_pod, items_worked_on

# The first test also pays for pulling the node image, creating the cluster and building the image.
pytestmark = [pytest.mark.kind, pytest.mark.timeout(2400)]

DEPLOY = REPO / "scripts" / "deploy.sh"
# Run B: "apple" again, which a new run works on again.
NEW_ITEMS = ["kiwi", "lime", "apple", "mango", "papaya"]
# The StatefulSet's only Pod and its claim (components/redis).
REDIS_POD = "redis-0"
REDIS_CLAIM = "data-redis-0"


@dataclass(frozen=True)
class Deployed:
    cluster: Cluster
    namespace: str


@pytest.fixture
def deployed(cluster: Cluster, namespace: str, tmp_path: Path) -> Deployed:
    """A fresh namespace with the dev overlay applied: Redis, the seed Job, the worker Job."""
    reset(cluster, namespace)
    apply(cluster, overlay(REPO, tmp_path))
    return Deployed(cluster, namespace)


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
        job = completed_run(made, namespace)
        assert job.status is not None and job.spec is not None
        assert not job.status.failed, f"{job.status.failed} worker pods failed"
        pods = job_pods(made, WORKER_JOB, namespace)
        assert len(pods) == job.spec.parallelism, f"expected one pod per parallel worker: {pods}"
        assert_clean_exits(pods)
        logs = {pod_name(pod): pod_log(made, pod_name(pod), namespace) for pod in pods}
        assert_drained(logs, seed_items())
        assert_named_by_pod(logs)


def test_a_deleted_worker_loses_no_item(deployed: Deployed) -> None:
    made, namespace = deployed.cluster, deployed.namespace
    with diagnosed(made, namespace):
        victim, before = first_item_in_progress(deployed, SEED_TIMEOUT)
        [held] = items_worked_on(before)
        # SIGTERM after the default grace period: the worker releases its item and exits non-zero,
        # and the Job controller starts a replacement while no worker has succeeded yet.
        made.core.delete_namespaced_pod(victim, namespace)
        completed_run(made, namespace)
        survivors = [p for p in job_pods(made, WORKER_JOB, namespace) if pod_name(p) != victim]
        assert_clean_exits(survivors)
        logs = {pod_name(pod): pod_log(made, pod_name(pod), namespace) for pod in survivors}
        items = seed_items()
        assert_all_done({**logs, victim: before}, items)
        again = [name for name, log in logs.items() if held in items_worked_on(log)]
        assert again, f"{held!r}, held by the deleted {victim}, was never worked on again"
        # The deleted worker completed nothing, so the others must have done every item, once.
        assert_drained(logs, items)


def test_a_deleted_redis_pod_loses_no_item(deployed: Deployed) -> None:
    """The StatefulSet brings redis-0 back on its claim: the workers wait out the outage and the
    run drains, each item exactly once (nothing acknowledged was lost, and the outage is shorter
    than a lease). Under the bare Pod of earlier trees this emptied the queue."""
    made, namespace = deployed.cluster, deployed.namespace
    with diagnosed(made, namespace):
        first_item_in_progress(deployed, SEED_TIMEOUT)
        claim = made.core.read_namespaced_persistent_volume_claim(REDIS_CLAIM, namespace)
        old = made.core.read_namespaced_pod(REDIS_POD, namespace)
        made.core.delete_namespaced_pod(REDIS_POD, namespace)
        assert_complete(wait_for_job(made, WORKER_JOB, namespace, WORKER_TIMEOUT))
        new = made.core.read_namespaced_pod(REDIS_POD, namespace)
        assert new.metadata and old.metadata and new.metadata.uid != old.metadata.uid
        again = made.core.read_namespaced_persistent_volume_claim(REDIS_CLAIM, namespace)
        assert again.metadata and claim.metadata and again.metadata.uid == claim.metadata.uid
        pods = job_pods(made, WORKER_JOB, namespace)
        assert_clean_exits(pods)
        logs = {pod_name(pod): pod_log(made, pod_name(pod), namespace) for pod in pods}
        assert_drained(logs, seed_items())


def deploy_sh(cluster: Cluster, directory: Path) -> str:
    """scripts/deploy.sh as a user runs it, naming the cluster's context: its output."""
    env = {**cluster.env, "CONTEXT": cluster.context}
    env["PATH"] = f"{Path(kubectl()).parent}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        [str(DEPLOY), str(directory)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    print(done.stdout, done.stderr)
    assert done.returncode == 0, f"deploy.sh exited {done.returncode}:\n{done.stderr}"
    return done.stdout


def test_git_drives_the_runs_through_deploy_sh(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    reset(cluster, namespace)
    with diagnosed(cluster, namespace):
        # 1. First deploy: run A, the committed items, each worked on once.
        deploy_sh(cluster, overlay(REPO, tmp_path / "a"))
        assert_drained(finished_run(cluster, namespace), seed_items())
        uids = job_uids(cluster, namespace)
        pods = {pod_name(p) for p in job_pods(cluster, WORKER_JOB, namespace)}

        # 2. The same tree again: nothing replaced, nothing re-run.
        said = deploy_sh(cluster, overlay(REPO, tmp_path / "again"))
        assert "replacing" not in said, said
        assert job_uids(cluster, namespace) == uids, "a no-op deploy replaced a Job"
        assert {pod_name(p) for p in job_pods(cluster, WORKER_JOB, namespace)} == pods

        # 3. A commit with new items: both Jobs replaced, run B worked on, each item once.
        root = manifests_copy(tmp_path / "repo")
        (root / "seed" / "items.txt").write_text("\n".join(NEW_ITEMS) + "\n", encoding="utf-8")
        said = deploy_sh(cluster, overlay(root, tmp_path / "b"))
        for job in (SEED_JOB, WORKER_JOB):
            assert f"replacing job.batch/{job}: " in said, said
        replaced = job_uids(cluster, namespace)
        assert set(replaced) == set(uids) and not set(replaced.values()) & set(uids.values())
        assert_drained(finished_run(cluster, namespace), NEW_ITEMS)
