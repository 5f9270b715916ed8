"""The cluster of the cluster e2e tests: a kind cluster made here, or the current context's; whether
one can run here, making it, and reading Jobs."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from images import build_image, find_builder
from kubernetes import client, config
from pytest_kind import KindCluster
from rendering import REPO, Manifest, find, kubectl, wrap

KIND_SH = REPO / "scripts" / "kind.sh"
KIND_CONFIG = REPO / "e2e" / "kind-config.yaml"
# Set in CI: no checks before kind runs, so that a broken runner fails with kind's own error.
FORCE = "E2E_KIND"
# Set by whoever accepts that the cluster tests prove nothing here: they skip instead of failing.
ALLOW_SKIP = "E2E_ALLOW_SKIP"
# Another node image than the kind config's, by digest: another Kubernetes minor.
NODE_IMAGE = "E2E_KIND_NODE_IMAGE"
# "current": the current kubeconfig context's cluster instead of a kind cluster made here.
TARGET = "E2E_CLUSTER"
# Images for a cluster that cannot have the kind-loaded one: a registry it pulls from or mirrors.
WORKER_IMAGE = "E2E_WORKER_IMAGE"
REDIS_IMAGE = "E2E_REDIS_IMAGE"
# The image of examples/thumbnails, for a cluster that cannot have a `kind load`ed one.
EXAMPLE_IMAGE = "E2E_EXAMPLE_IMAGE"
# The worker's image name in base/ and seed/, which every overlay sets.
WORKER = "job-wq-2"
# A first pull of the node image is several hundred MB; an unreachable registry fails in seconds.
PULL_TIMEOUT = 600
POLL_SECONDS = 2.0
SEED_JOB = "job-wq-2-seed"
WORKER_JOB = "job-wq-2"
# Includes the node's first pull of the Redis image.
SEED_TIMEOUT = 300
# 9 items of 10 s over 2 workers is about 45 s; the rest is scheduling and start-up.
WORKER_TIMEOUT = 300


def worker_image(objects: list[Manifest]) -> str:
    """The image of the worker Job among the rendered `objects`."""
    [container] = find(objects, "Job", WORKER_JOB)["spec"]["template"]["spec"]["containers"]
    return str(container["image"])


def node_image() -> str:
    """$E2E_KIND_NODE_IMAGE (CI's matrix of Kubernetes minors), else the image pinned in the kind
    config that `make kind-up` uses too."""
    cfg = yaml.safe_load(KIND_CONFIG.read_text(encoding="utf-8"))
    return os.environ.get(NODE_IMAGE) or str(cfg["nodes"][0]["image"])


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
    """Why no kind cluster can run here, or None when one can."""
    if os.environ.get(FORCE) == "1":
        return None
    if shutil.which("docker") is None:
        return "docker is not on PATH; kind runs its node in Docker"
    failed = _attempt(["docker", "info"], 30)
    if failed:
        return f"no Docker engine answers: {failed}"
    image = node_image()
    # The same presence check and pull that kind does before creating a node, done here first so
    # that a machine without registry access says so in one line, not from inside `kind create`.
    if _attempt(["docker", "inspect", "--type=image", image], 30) is None:
        return None
    failed = _attempt(["docker", "pull", image], PULL_TIMEOUT)
    if failed:
        return f"the kind node image is not here and cannot be pulled: {failed}"
    return None


def no_cluster(reason: str) -> NoReturn:
    """Stop the run with one line: a cluster test that cannot run proves nothing, so it fails;
    unless E2E_ALLOW_SKIP=1, which makes it a skip that says the same."""
    if os.environ.get(ALLOW_SKIP) == "1":
        pytest.skip(f"no cluster: {reason}")
    pytest.exit(f"no cluster for the cluster tests: {reason} ({ALLOW_SKIP}=1 skips them)", 1)


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
    """A cluster to test on, a Kubernetes API client for it, and how to delete it: only for a
    cluster the fixture created itself, never for one it found. A kind cluster can also load an
    image of the local Docker engine onto its node."""

    context: str
    kubeconfig: Path | None  # None: kubectl's own ($KUBECONFIG, ~/.kube/config)
    api: client.ApiClient
    delete: Callable[[], None] | None = None
    load: Callable[[str], None] | None = None

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api)

    @property
    def env(self) -> dict[str, str]:
        """The environment in which kubectl (and scripts/deploy.sh) talk to this cluster."""
        return {**os.environ, **({"KUBECONFIG": str(self.kubeconfig)} if self.kubeconfig else {})}

    def kubectl(self, *args: str) -> str:
        """kubectl's output (stderr included); CalledProcessError with it on failure."""
        return subprocess.run(
            [kubectl(), "--context", self.context, *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=True,
        ).stdout


def target() -> str:
    """Where the cluster e2e runs: a kind cluster it creates ("kind"), or the current context."""
    wanted = os.environ.get(TARGET, "kind")
    if wanted not in ("kind", "current"):
        raise ValueError(f"{TARGET} must be kind or current, not {wanted!r}")
    return wanted


def current() -> Cluster:
    """The current kubeconfig context's cluster, as it is: never created, never deleted."""
    done = subprocess.run(
        [kubectl(), "config", "current-context"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        pytest.fail(f"{TARGET}=current, but kubectl has no current context: {done.stderr.strip()}")
    context = done.stdout.strip()
    api = config.new_client_from_config(context=context)  # type: ignore[no-untyped-call]
    return Cluster(context, None, api)


def create(name: str, image: str) -> Cluster:
    """A kind cluster with the worker image on its node. One that already exists is reused and
    kept; one created here is deleted again if anything after its creation fails."""
    kind = kind_binary()
    # kind's --image (which pytest-kind-ng passes) wins over the config's node image.
    made = KindCluster(name, image=node_image(), kind_path=kind, kubectl_path=Path(kubectl()))
    existing = subprocess.run(
        [str(kind), "get", "clusters"], capture_output=True, text=True, check=True
    ).stdout.split()
    existed = name in existing
    if existed:
        # pytest-kind-ng only writes its kubeconfig when it creates the cluster itself.
        export = [str(kind), "export", "kubeconfig", "--name", name]
        subprocess.run([*export, "--kubeconfig", str(made.kubeconfig_path)], check=True)
    try:
        made.create(config_file=KIND_CONFIG)
        # kubernetes.config has no annotations, unlike kubernetes.client.
        api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(made.kubeconfig_path)
        )
        load = made.load_docker_image
        cluster = Cluster(f"kind-{name}", Path(made.kubeconfig_path), api, load=load)
        cluster.kubectl("wait", "--for=condition=Ready", "nodes", "--all", "--timeout=180s")
        build(image, REPO / "worker")
        load(image)
    except BaseException:
        if not existed:
            made.delete()
        raise
    cluster.delete = None if existed else made.delete
    return cluster


def build(image: str, context: Path, args: Mapping[str, str] | None = None) -> None:
    """`context` built as `image` in Docker, for `kind load`, with build arguments `args`."""
    build_image(find_builder(), image, args or {}, context)


def overlay(root: Path, workdir: Path) -> Path:
    """The dev overlay of the manifests under `root`, with the images $E2E_WORKER_IMAGE and
    $E2E_REDIS_IMAGE when set (a cluster that mirrors images): a directory to apply."""
    # Named dev too: scripts/deploy.sh guards the dev overlay by that name.
    return with_images(root / "overlays" / "dev", workdir, {WORKER: WORKER_IMAGE})


def with_images(directory: Path, workdir: Path, variables: Mapping[str, str]) -> Path:
    """The kustomization `directory`, or, when any of the variables `variables` (by image name)
    or $E2E_REDIS_IMAGE is set, a kustomization of the same name under `workdir` that makes those
    images their values: a directory to apply."""
    images = [
        override(name, os.environ[variable])
        for name, variable in {**variables, "redis": REDIS_IMAGE}.items()
        if os.environ.get(variable)
    ]
    if not images:
        return directory
    return wrap(directory, workdir / directory.name, images=images)


def override(name: str, reference: str) -> dict[str, str]:
    """A kustomize `images:` entry that makes image `name` the full `reference`; with a digest
    the digest alone pins it."""
    rest, _, digest = reference.partition("@")
    slash, colon = rest.rfind("/"), rest.rfind(":")
    new_name, tag = (rest[:colon], rest[colon + 1 :]) if colon > slash else (rest, "")
    entry = {"name": name, "newName": new_name}
    if digest:
        entry["digest"] = digest
    elif tag:
        entry["newTag"] = tag
    return entry


def apply(cluster: Cluster, directory: Path, attempts: int = 5) -> None:
    """kubectl apply -k, retried: a Pod applied together with its new namespace can be refused
    until the namespace's default ServiceAccount exists."""
    for attempt in range(1, attempts + 1):
        try:
            cluster.kubectl("apply", "-k", str(directory))
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
    """The pods of the Job now named `job`, not of an earlier Job of that name: Flux deletes a
    replaced Job in the background (fluxcd/pkg ssa), so its pods can outlive it for a while."""
    metadata = cluster.batch.read_namespaced_job(job, namespace).metadata
    assert metadata is not None and metadata.uid, f"Job {job} has no UID"
    selector = f"batch.kubernetes.io/controller-uid={metadata.uid}"
    return list(cluster.core.list_namespaced_pod(namespace, label_selector=selector).items)


def pod_name(pod: client.V1Pod) -> str:
    assert pod.metadata is not None and pod.metadata.name is not None
    return pod.metadata.name


def pod_log(cluster: Cluster, pod: str, namespace: str) -> str:
    return str(cluster.core.read_namespaced_pod_log(pod, namespace))


def restarts(pod: client.V1Pod) -> int:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return sum(status.restart_count for status in statuses)


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


def job_uids(cluster: Cluster, namespace: str) -> dict[str, str]:
    jobs = cluster.batch.list_namespaced_job(namespace).items
    return {str(job.metadata.name): str(job.metadata.uid) for job in jobs if job.metadata}


def completed_run(cluster: Cluster, namespace: str) -> client.V1Job:
    """Once the seed Job, then the worker Job, completed (else fail): the worker Job."""
    assert_complete(wait_for_job(cluster, SEED_JOB, namespace, SEED_TIMEOUT))
    job = wait_for_job(cluster, WORKER_JOB, namespace, WORKER_TIMEOUT)
    assert_complete(job)
    return job


def finished_run(cluster: Cluster, namespace: str) -> dict[str, str]:
    """Once both Jobs completed: each worker pod's log."""
    completed_run(cluster, namespace)
    pods = job_pods(cluster, WORKER_JOB, namespace)
    assert_clean_exits(pods)
    return {pod_name(pod): pod_log(cluster, pod_name(pod), namespace) for pod in pods}


def cluster_json(cluster: Cluster, worker: Manifest, workdir: Path, *args: str) -> Any:
    """What `rediswq ARGS --json` prints, run once as a Job with the worker's pod template."""
    name = f"{WORKER_JOB}-{args[0]}"
    namespace = worker["metadata"]["namespace"]
    template = copy.deepcopy(worker["spec"]["template"])
    template["spec"]["containers"][0]["args"] = [*args, "--json"]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": template},
    }
    manifest = workdir / f"{name}.json"
    manifest.write_text(json.dumps(job), encoding="utf-8")
    cluster.kubectl("create", "--filename", str(manifest))
    assert_complete(wait_for_job(cluster, name, namespace, SEED_TIMEOUT))
    # kubectl, not the API client, which turns a log that is JSON into a Python repr
    # (kubernetes-client/python #811).
    return json.loads(cluster.kubectl("logs", f"job/{name}", "--namespace", namespace))


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
