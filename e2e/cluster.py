"""The kind cluster of the kind e2e tests: whether one can run here, making it, and reading Jobs."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from pytest_kind import KindCluster
from rendering import REPO, kubectl

KIND_SH = REPO / "scripts" / "kind.sh"
KIND_CONFIG = REPO / "e2e" / "kind-config.yaml"
# Set in CI, where a missing Docker or node image is a broken runner, not a reason to skip.
FORCE = "E2E_KIND"
# A first pull of the node image is several hundred MB; an unreachable registry fails in seconds.
PULL_TIMEOUT = 600
POLL_SECONDS = 2.0


def node_image() -> str:
    """The pinned node image, read from the kind config that `make kind-up` uses too."""
    cfg = yaml.safe_load(KIND_CONFIG.read_text(encoding="utf-8"))
    return str(cfg["nodes"][0]["image"])


def _attempt(args: Sequence[str], timeout: float) -> str | None:
    """None when the command succeeds, else the reason it did not."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"`{' '.join(args)}` did not finish within {timeout:.0f} s"
    if done.returncode == 0:
        return None
    detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return f"`{' '.join(args)}` failed: {detail}"


def unavailable_reason() -> str | None:
    """Why no kind cluster can run here (the tests then skip), or None when one can."""
    if os.environ.get(FORCE) == "1":
        return None
    hint = f" (set {FORCE}=1 to fail instead of skipping)"
    if shutil.which("docker") is None:
        return "docker is not on PATH; kind runs its node in Docker" + hint
    failed = _attempt(["docker", "info"], 30)
    if failed:
        return f"no Docker engine answers: {failed}{hint}"
    image = node_image()
    # The same presence check and pull that kind does before creating a node, done here first so
    # that a machine without registry access skips instead of failing inside `kind create`.
    if _attempt(["docker", "inspect", "--type=image", image], 30) is None:
        return None
    failed = _attempt(["docker", "pull", image], PULL_TIMEOUT)
    if failed:
        return f"the kind node image is not here and cannot be pulled: {failed}{hint}"
    return None


def kind_binary() -> Path:
    """The pinned kind, via scripts/kind.sh: PATH's if that version, else a checked download."""
    found = subprocess.run(
        [str(KIND_SH), "bin"], capture_output=True, text=True, check=False, timeout=300
    )
    if found.returncode != 0:
        raise RuntimeError(f"scripts/kind.sh bin failed:\n{found.stderr}")
    return Path(found.stdout.strip())


@dataclass
class Cluster:
    """A kind cluster made with pytest-kind-ng, plus a Kubernetes API client for it."""

    kind: Any  # pytest_kind.KindCluster, which has no type information
    api: client.ApiClient

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    def kubectl(self, *args: str) -> str:
        return str(self.kind.kubectl(*args, stderr=subprocess.STDOUT))

    def delete(self) -> None:
        self.kind.delete()


def create(name: str, image: str) -> Cluster:
    """Create (or reuse) the cluster, build the worker image and load it onto the node."""
    kind = kind_binary()
    made = KindCluster(name, kind_path=kind, kubectl_path=Path(kubectl()))
    existing = subprocess.run(
        [str(kind), "get", "clusters"], capture_output=True, text=True, check=True
    ).stdout.split()
    if name in existing:
        # pytest-kind-ng only writes its kubeconfig when it creates the cluster itself.
        subprocess.run(
            [
                str(kind),
                "export",
                "kubeconfig",
                "--name",
                name,
                "--kubeconfig",
                str(made.kubeconfig_path),
            ],
            check=True,
        )
    made.create(config_file=KIND_CONFIG)
    # kubernetes.config has no annotations, unlike kubernetes.client.
    api = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(made.kubeconfig_path)
    )
    cluster = Cluster(made, api)
    cluster.kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s")
    subprocess.run(["docker", "build", "-t", image, str(REPO / "worker")], check=True)
    made.load_docker_image(image)
    return cluster


def apply(cluster: Cluster, overlay: str, attempts: int = 5) -> None:
    """kubectl apply -k, retried: a Pod applied together with its new namespace can be refused
    until the namespace's default ServiceAccount exists."""
    for attempt in range(1, attempts + 1):
        try:
            cluster.kubectl("apply", "-k", str(REPO / "overlays" / overlay))
            return
        except subprocess.CalledProcessError as error:
            if attempt == attempts:
                raise AssertionError(f"kubectl apply -k failed:\n{error.output}") from error
            print(f"kubectl apply -k failed (attempt {attempt}), retrying:\n{error.output}")
            time.sleep(3)


def reset(cluster: Cluster, namespace: str) -> None:
    """Delete the namespace and everything in it, and wait until it is gone."""
    cluster.kubectl(
        "delete", "namespace", namespace, "--ignore-not-found", "--wait=true", "--timeout=300s"
    )


def finished(job: client.V1Job) -> str | None:
    """'Complete' or 'Failed' once the Job is in a terminal condition, else None."""
    conditions = job.status.conditions if job.status else None
    for condition in conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return f"{condition.type}: {condition.reason or ''} {condition.message or ''}".strip()
    return None


def wait_for_job(cluster: Cluster, name: str, namespace: str, timeout: float) -> client.V1Job:
    """Poll the Job's conditions until Complete or Failed (`kubectl wait` would hang on Failed)."""
    deadline = time.monotonic() + timeout
    while True:
        job = cluster.batch.read_namespaced_job_status(name, namespace)
        if finished(job):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"Job {name} neither completed nor failed within {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def job_pods(cluster: Cluster, job: str, namespace: str) -> list[client.V1Pod]:
    selector = f"batch.kubernetes.io/job-name={job}"
    return list(cluster.core.list_namespaced_pod(namespace, label_selector=selector).items)


def pod_name(pod: client.V1Pod) -> str:
    assert pod.metadata is not None and pod.metadata.name is not None
    return pod.metadata.name


def pod_log(cluster: Cluster, pod: str, namespace: str) -> str:
    return str(cluster.core.read_namespaced_pod_log(pod, namespace))


def restarts(pod: client.V1Pod) -> int:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return sum(status.restart_count for status in statuses)


DIAGNOSTICS = (
    ("pods", ("get", "pods", "-o", "wide")),
    ("jobs", ("describe", "jobs")),
    ("pods in detail", ("describe", "pods")),
    ("events", ("get", "events", "--sort-by=.lastTimestamp")),
    (
        "logs",
        (
            "logs",
            "--selector=app.kubernetes.io/name=job-wq-2",
            "--all-containers",
            "--prefix",
            "--tail=-1",
            "--max-log-requests=20",
            "--ignore-errors",
        ),
    ),
)


def diagnostics(cluster: Cluster, namespace: str) -> str:
    """What there is to know about the namespace when a test failed: objects, events, logs."""
    parts = []
    for title, args in DIAGNOSTICS:
        try:
            text = cluster.kubectl(*args, "--namespace", namespace)
        except subprocess.CalledProcessError as error:
            text = f"(kubectl failed: {error.output})"
        parts.append(f"===== {title} =====\n{text}")
    return "\n".join(parts)


@contextmanager
def diagnosed(cluster: Cluster, namespace: str) -> Iterator[None]:
    """Print the namespace's state when the body fails or times out, then fail as it did."""
    try:
        yield
    except (Exception, pytest.fail.Exception):
        print(diagnostics(cluster, namespace))
        raise
