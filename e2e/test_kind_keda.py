"""KEDA on a real cluster: KEDA installed into the kind cluster, the dev overlay with
components/keda applied; the ScaledJob starts workers on the pending list, never more than there
are items nor than maxReplicaCount, and they drain the list, each item exactly once.

Needs what test_kind.py needs (and stops or skips the same way) and the network, for
KEDA's release manifest. The manifest is pinned by version and checked against the SHA-256 digest
GitHub records for that release asset. KEDA is cluster-wide, so it is installed only into a kind
cluster; with E2E_CLUSTER=current the test runs only where KEDA is already installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from cluster import (
    SEED_JOB,
    SEED_TIMEOUT,
    TARGET,
    WORKER_JOB,
    WORKER_TIMEOUT,
    Cluster,
    apply,
    assert_complete,
    diagnosed,
    finished,
    job_pods,
    overlay,
    pod_log,
    pod_name,
    reset,
    target,
    wait_for_job,
)
from kubernetes import client
from rendering import REPO, Manifest, find, render_dir, seed_items, wrap
from worklog import assert_drained

pytestmark = [pytest.mark.kind, pytest.mark.timeout(2400)]

KEDA_VERSION = "2.18.1"
RELEASE = f"https://github.com/kedacore/keda/releases/download/v{KEDA_VERSION}"
ASSET = f"keda-{KEDA_VERSION}.yaml"
RELEASE_API = f"https://api.github.com/repos/kedacore/keda/releases/tags/v{KEDA_VERSION}"
KEDA = REPO / "components" / "keda"
# KEDA labels the Jobs it creates with the ScaledJob's name.
SCALED_JOBS = f"scaledjob.keda.sh/name={WORKER_JOB}"
# Two polling intervals with nothing running and nothing pending: KEDA is done.
SETTLED_SECONDS = 25.0


def fetched(url: str, accept: str = "*/*") -> bytes:
    headers = {"Accept": accept}
    # GitHub's API allows 60 anonymous requests an hour per address, shared on CI runners.
    token = os.environ.get("GITHUB_TOKEN")
    if token and url.startswith("https://api.github.com/"):
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (https)
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 (https)
        return bytes(response.read())


def keda_manifest(directory: Path) -> Path:
    """KEDA's release manifest, checked against the digest GitHub recorded for the asset."""
    body = fetched(f"{RELEASE}/{ASSET}")
    release = json.loads(fetched(RELEASE_API, "application/vnd.github+json"))
    [digest] = [asset.get("digest") for asset in release["assets"] if asset["name"] == ASSET]
    assert digest, f"GitHub records no digest for {ASSET}; pin its SHA-256 here instead"
    actual = f"sha256:{hashlib.sha256(body).hexdigest()}"
    assert actual == digest, f"{ASSET}: {actual}, but GitHub records {digest}"
    path = directory / ASSET
    path.write_bytes(body)
    return path


def install_keda(cluster: Cluster, directory: Path) -> None:
    # Server-side: the CRDs are too large for the last-applied annotation of a client-side apply.
    cluster.kubectl("apply", "--server-side", "-f", str(keda_manifest(directory)))
    cluster.kubectl(
        "wait", "--for=condition=Available", "deployment", "--all", "-n", "keda", "--timeout=300s"
    )


def with_keda(workdir: Path) -> Path:
    """The dev overlay (with the e2e's image variables) plus components/keda: a directory."""
    return wrap(overlay(REPO, workdir / "images"), workdir / "keda", components=[KEDA])


def scaled_job(objects: list[Manifest]) -> Manifest:
    return find(objects, "ScaledJob", WORKER_JOB)["spec"]  # type: ignore[no-any-return]


def job_name(job: client.V1Job) -> str:
    assert job.metadata is not None and job.metadata.name is not None
    return str(job.metadata.name)


def settled_jobs(cluster: Cluster, namespace: str, timeout: float) -> list[str]:
    """The names of the Jobs KEDA created, once it has made some and all have finished and stayed
    so for SETTLED_SECONDS; fails on a failed one."""
    deadline = time.monotonic() + timeout
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        jobs = cluster.batch.list_namespaced_job(namespace, label_selector=SCALED_JOBS).items
        states = {job_name(job): finished(job) for job in jobs}
        failed = {name: state for name, state in states.items() if (state or "").startswith("F")}
        assert not failed, f"KEDA's Jobs failed: {failed}"
        if states and all(states.values()):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= SETTLED_SECONDS:
                return sorted(states)
        else:
            quiet_since = None
        time.sleep(2.0)
    raise AssertionError(f"KEDA's Jobs did not all finish within {timeout:.0f} s")


def keda_installed(cluster: Cluster) -> bool:
    try:
        cluster.kubectl("get", "crd", "scaledjobs.keda.sh")
    except subprocess.CalledProcessError:
        return False
    return True


def test_keda_starts_workers_on_the_pending_list_and_they_drain_it(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    if target() == "current" and not keda_installed(cluster):
        pytest.skip(
            f"{TARGET}=current and KEDA is not installed there; it is installed only into kind"
        )
    directory = with_keda(tmp_path)
    reset(cluster, namespace)
    with diagnosed(cluster, namespace):
        if target() != "current":
            install_keda(cluster, tmp_path)
        apply(cluster, directory)
        assert_complete(wait_for_job(cluster, SEED_JOB, namespace, SEED_TIMEOUT))
        names = settled_jobs(cluster, namespace, WORKER_TIMEOUT)

        jobs = cluster.batch.list_namespaced_job(namespace).items
        assert WORKER_JOB not in {job_name(job) for job in jobs}, "the Job was not dropped"
        items = seed_items()
        limit = scaled_job(render_dir(directory))["maxReplicaCount"]
        # accurate: never more workers than items, nor than the cap.
        assert len(names) <= min(len(items), limit), f"{len(names)} workers for {len(items)} items"
        logs = {}
        for job in names:
            pods = job_pods(cluster, job, namespace)
            logs.update({pod_name(p): pod_log(cluster, pod_name(p), namespace) for p in pods})
        assert_drained(logs, items)
