"""Flux drives the runs: Flux in a kind cluster reconciles clusters/dev/flux as committed, from this
repository served as an OCI artifact by a registry container beside the cluster, so no Git host is
needed. A reconcile runs the list; a reconcile with nothing changed re-runs nothing (same Job UIDs,
same pods); a new revision with new items runs exactly those.

Needs Docker, the kind node image and the `flux` CLI (it installs the controllers of its own
version); without one of them the run stops with one line saying which (E2E_ALLOW_SKIP=1: a skip),
and E2E_FLUX=1 (CI) leaves the failing to the tools themselves. The cluster,
and the registry container, are deleted afterwards only if this test created them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from artifacts import push
from cluster import (
    WORKER_JOB,
    Cluster,
    create,
    diagnosed,
    finished_run,
    job_pods,
    job_uids,
    no_cluster,
    pod_name,
    reset,
    unavailable_reason,
    worker_image,
)
from rendering import REPO, manifests_copy, render, seed_items
from worklog import assert_drained

pytestmark = [pytest.mark.flux, pytest.mark.timeout(2400)]

FORCE = "E2E_FLUX"
CLUSTER = os.environ.get("E2E_FLUX_CLUSTER", "job-wq-2-flux")
FLUX = REPO / "clusters" / "dev" / "flux"
# clusters/dev/flux/source.yaml reads oci://kind-registry:5000/job-wq-2-manifests:main from the
# node's network; the host pushes to the same registry through its published port.
REGISTRY = "kind-registry"
REGISTRY_PORT = 5001
ARTIFACT = f"oci://localhost:{REGISTRY_PORT}/job-wq-2-manifests:main"
# The Distribution registry, by the digest of its index as public repositories pin it.
REGISTRY_IMAGE = (
    "registry:3.0.0@sha256:6c5666b861f3505b116bb9aa9b25175e71210414bd010d92035ff64018f9457e"
)
NEW_ITEMS = ["kiwi", "lime", "apple", "mango", "papaya"]
RECONCILE_TIMEOUT = 600


def run(*args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        list(args), env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"`{' '.join(args)}` exited {done.returncode}:\n{done.stderr}")
    return done.stdout + done.stderr


def why_not() -> str | None:
    """Why the Flux e2e cannot run here, or None."""
    if os.environ.get(FORCE) == "1":
        return None
    if shutil.which("flux") is None:
        return "the flux CLI is not on PATH"
    return unavailable_reason()


def start_registry() -> bool:
    """The registry container, started unless it runs already: whether it was started here."""
    if run("docker", "ps", "-q", "--filter", f"name=^{REGISTRY}$").strip():
        return False
    run("docker", "run", "--detach", "--restart=always", "--name", REGISTRY,
        "--publish", f"127.0.0.1:{REGISTRY_PORT}:5000", REGISTRY_IMAGE)  # fmt: skip
    return True


def flux(cluster: Cluster, *args: str) -> str:
    return run("flux", "--context", cluster.context, "--namespace", "flux-system", *args,
               env=cluster.env)  # fmt: skip


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A kind cluster with Flux installed, the worker image on its node and the registry on its
    network."""
    reason = why_not()
    if reason:
        no_cluster(reason)
    keep = request.config.getoption("keep_cluster")
    started = start_registry()
    try:
        made = create(CLUSTER, worker_image(render("dev")))
        try:
            # The node's pods resolve the registry by its container name on kind's network.
            connected = run("docker", "network", "connect", "kind", REGISTRY, check=False)
            assert "already exists" in connected or not connected.strip(), connected
            flux(made, "install", "--components=source-controller,kustomize-controller")
            yield made
        finally:
            if made.delete is not None and not keep:
                made.delete()
    finally:
        if started and not keep:
            run("docker", "rm", "--force", REGISTRY, check=False)


def reconcile(cluster: Cluster) -> None:
    """What Flux does on its interval, now: fetch the source, apply Redis, then the Jobs."""
    flux(cluster, "reconcile", "source", "oci", "job-wq-2")
    for name in ("job-wq-2-redis", "job-wq-2-jobs"):
        flux(cluster, "reconcile", "kustomization", name, f"--timeout={RECONCILE_TIMEOUT}s")


def applied(cluster: Cluster, revision: str) -> None:
    """Until the Jobs' Kustomization reports `revision` applied."""
    deadline = time.monotonic() + RECONCILE_TIMEOUT
    path = "jsonpath={.status.lastAppliedRevision}"
    while True:
        found = cluster.kubectl("get", "kustomization", "job-wq-2-jobs", "--namespace",
                                "flux-system", "--output", path)  # fmt: skip
        if revision in found:  # kubectl's output may carry a warning
            return
        assert time.monotonic() < deadline, f"{revision} not applied, still {found}"
        time.sleep(2)


def test_flux_drives_the_runs(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    cluster.kubectl("delete", "-k", str(FLUX), "--ignore-not-found", "--wait=true")
    reset(cluster, namespace)
    with diagnosed(cluster, namespace):
        # 1. The committed tree: Flux runs the list.
        first = push(REPO, tmp_path / "a", ARTIFACT)
        cluster.kubectl("apply", "-k", str(FLUX))
        reconcile(cluster)
        applied(cluster, first)
        assert_drained(finished_run(cluster, namespace), seed_items())
        uids = job_uids(cluster, namespace)
        pods = {pod_name(p) for p in job_pods(cluster, WORKER_JOB, namespace)}

        # 2. Nothing changed: a reconcile re-runs nothing.
        reconcile(cluster)
        assert job_uids(cluster, namespace) == uids, "a no-op reconcile replaced a Job"
        assert {pod_name(p) for p in job_pods(cluster, WORKER_JOB, namespace)} == pods

        # 3. A commit with new items: Flux replaces both Jobs and runs exactly the new list.
        root = manifests_copy(tmp_path / "repo")
        (root / "seed" / "items.txt").write_text("\n".join(NEW_ITEMS) + "\n", encoding="utf-8")
        second = push(root, tmp_path / "b", ARTIFACT)
        reconcile(cluster)
        applied(cluster, second)
        replaced = job_uids(cluster, namespace)
        assert not set(replaced.values()) & set(uids.values()), "a Job was not replaced"
        assert_drained(finished_run(cluster, namespace), NEW_ITEMS)
