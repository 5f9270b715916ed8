"""overlays/ha on a real cluster: components/redis-ha (three Redis servers, three Sentinels) with
the dev overlay's image and throw-away Secret. The primary's Pod is killed (deleted with no grace
period) the moment the seed Job is Complete, and the new primary's once the workers are under
way: both Jobs still complete, every item is done at least once, and the repeats are counted and
printed.

Needs what test_kind.py needs, and skips the same way (E2E_KIND=1 fails instead).
"""

from __future__ import annotations

import time
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
    diagnosed,
    job_pods,
    pod_log,
    pod_name,
    reset,
    wait_for_job,
    with_images,
)
from rendering import REPO, seed_items, wrap
from worklog import repeats, wait_until_begun

pytestmark = [pytest.mark.kind, pytest.mark.timeout(2400)]

SENTINEL_POD, MASTER = "redis-sentinel-0", "mymaster"
FAILOVER_TIMEOUT = 120.0


def ha_for_kind(workdir: Path) -> Path:
    """overlays/ha with what the dev overlay adds for kind: its image (loaded on the node, never
    pulled) and its throw-away Secret; a directory to apply."""
    dev = (REPO / "overlays" / "dev" / "kustomization.yaml").read_text()
    assert "dev-only-throwaway-password" in dev
    wrapped = wrap(
        REPO / "overlays" / "ha",
        workdir / "ha-kind",
        images=[{"name": "ghcr.io/owner/job-wq-2", "newName": "job-wq-2", "newTag": "dev"}],
        secretGenerator=[
            {
                "name": "redis-auth",
                "literals": ["password=dev-only-throwaway-password"],
                "options": {"disableNameSuffixHash": True},
            }
        ],
        patches=[
            {
                "target": {"kind": "Job", "labelSelector": "app.kubernetes.io/name=job-wq-2"},
                "patch": "- op: add\n  path: /spec/template/spec/containers/0/imagePullPolicy\n"
                "  value: IfNotPresent\n",
            }
        ],
    )
    return with_images(wrapped, workdir / "images", {"job-wq-2": "E2E_WORKER_IMAGE"})


def primary_pod(cluster: Cluster, namespace: str) -> str:
    reply = cluster.kubectl(
        "exec", "--namespace", namespace, SENTINEL_POD, "--", "redis-cli", "-p", "26379",
        "--raw", "sentinel", "get-master-addr-by-name", MASTER,
    )  # fmt: skip
    return reply.split()[0].split(".", 1)[0]  # redis-ha-N.redis-ha


def kill(cluster: Cluster, namespace: str, pod: str) -> None:
    cluster.kubectl(
        "delete",
        "pod",
        pod,
        "--namespace",
        namespace,
        "--grace-period=0",
        "--force",
        "--wait=false",
    )


def wait_for_failover(cluster: Cluster, namespace: str, old: str) -> str:
    deadline = time.monotonic() + FAILOVER_TIMEOUT
    while time.monotonic() < deadline:
        try:
            new = primary_pod(cluster, namespace)
        except Exception:
            new = old
        if new != old:
            return new
        time.sleep(2)
    raise AssertionError(f"no failover from {old} within {FAILOVER_TIMEOUT:.0f} s")


def test_the_ha_overlay_completes_its_run_when_its_primary_is_killed_twice(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    directory = ha_for_kind(tmp_path)
    reset(cluster, namespace)
    with diagnosed(cluster, namespace):
        apply(cluster, directory)
        cluster.kubectl(
            "rollout", "status", "statefulset/redis-sentinel", "--namespace", namespace,
            "--timeout=300s",
        )  # fmt: skip
        assert_complete(wait_for_job(cluster, SEED_JOB, namespace, SEED_TIMEOUT))
        first = primary_pod(cluster, namespace)
        kill(cluster, namespace, first)  # the moment the seed is Complete
        second = wait_for_failover(cluster, namespace, first)

        items = seed_items()

        def running_logs() -> list[str]:
            return [
                pod_log(cluster, pod_name(pod), namespace)
                for pod in job_pods(cluster, WORKER_JOB, namespace)
                if pod.status and pod.status.phase in ("Running", "Succeeded")
            ]

        wait_until_begun(running_logs, 3, WORKER_TIMEOUT, 2)
        kill(cluster, namespace, second)

        assert_complete(wait_for_job(cluster, WORKER_JOB, namespace, WORKER_TIMEOUT))
        pods = job_pods(cluster, WORKER_JOB, namespace)
        assert_clean_exits(pods)
        logs = {pod_name(pod): pod_log(cluster, pod_name(pod), namespace) for pod in pods}
        print(f"ha failover on kind: {repeats(logs, items)} repeats in {len(items)}")
