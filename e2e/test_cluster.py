"""The cluster e2e's own logic that needs no cluster: images for a cluster that mirrors them,
which clusters it may delete, and which pods are a Job's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import cast

import cluster
import pytest
from cluster import REDIS_IMAGE, WORKER_IMAGE, overlay, override
from kubernetes import client
from rendering import REPO, Manifest, render_dir

DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("reference", "entry"),
    [
        ("m.example:5000/t/wq:1.2", {"newName": "m.example:5000/t/wq", "newTag": "1.2"}),
        ("mirror.example:5000/job-wq-2", {"newName": "mirror.example:5000/job-wq-2"}),
        (f"r.example/redis@{DIGEST}", {"newName": "r.example/redis", "digest": DIGEST}),
        (f"r.example/redis:7.4@{DIGEST}", {"newName": "r.example/redis", "digest": DIGEST}),
    ],
)  # fmt: skip
def test_an_image_reference_becomes_a_kustomize_images_entry(
    reference: str, entry: dict[str, str]
) -> None:
    assert override("x", reference) == {"name": "x", **entry}


def images(objects: list[Manifest]) -> dict[str, str]:
    """Each pod's image, by the component it runs."""
    found = {}
    for obj in objects:
        pod = obj["spec"]["template"] if obj["kind"] in ("Job", "StatefulSet") else obj
        if obj["kind"] in ("Job", "StatefulSet", "Pod"):
            [container] = pod["spec"]["containers"]
            found[pod["metadata"]["labels"]["app.kubernetes.io/component"]] = container["image"]
    return found


def test_without_image_variables_the_dev_overlay_is_used_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(WORKER_IMAGE, raising=False)
    monkeypatch.delenv(REDIS_IMAGE, raising=False)
    assert overlay(REPO, tmp_path) == REPO / "overlays" / "dev"


def test_image_variables_replace_the_images_of_the_dev_overlay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(WORKER_IMAGE, "mirror.example:5000/job-wq-2:0.3")
    monkeypatch.setenv(REDIS_IMAGE, f"mirror.example:5000/redis@{DIGEST}")
    directory = overlay(REPO, tmp_path)
    assert directory.name == "dev", "deploy.sh knows the dev overlay by its name"
    assert images(render_dir(directory)) == {
        "worker": "mirror.example:5000/job-wq-2:0.3",
        "seed": "mirror.example:5000/job-wq-2:0.3",
        "redis": f"mirror.example:5000/redis@{DIGEST}",
    }


# A kubeconfig whose API server is nowhere: everything after the cluster's creation fails.
NOWHERE = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: kind-x, context: {cluster: c, user: u}}]
current-context: kind-x
"""


def stand_in_kind(directory: Path, existing: list[str]) -> tuple[Path, Path]:
    """A `kind` that knows the clusters `existing`, writes NOWHERE as any kubeconfig it is asked
    for, and records its calls: its path and that of its record."""
    kubeconfig, calls = directory / "nowhere.yaml", directory / "kind.calls"
    kubeconfig.write_text(NOWHERE, encoding="utf-8")
    script = directory / "kind"
    script.write_text(
        f"""#!/bin/sh
echo "$*" >> "{calls}"
case "$1 $2" in
  "get clusters") printf '%s\\n' {" ".join(existing)} ;;
  "create cluster") for arg; do
      case "$arg" in --kubeconfig=*) cp "{kubeconfig}" "${{arg#--kubeconfig=}}" ;; esac
    done ;;
  "export kubeconfig") cp "{kubeconfig}" "$7" ;;
esac
""",
        encoding="utf-8",
    )
    script.chmod(0o755)
    return script, calls


@pytest.mark.parametrize("existed", [False, True])
def test_a_cluster_is_deleted_only_when_made_here_even_if_its_setup_fails(
    existed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, calls = stand_in_kind(tmp_path, ["x"] if existed else [])
    monkeypatch.setattr(cluster, "kind_binary", lambda: kind)
    monkeypatch.chdir(tmp_path)  # pytest-kind-ng keeps its files under the working directory
    with pytest.raises(subprocess.CalledProcessError):
        cluster.create("x", "job-wq-2:dev")  # fails waiting for the nodes: no API server
    made = "create cluster --name=x" in calls.read_text()
    deleted = "delete cluster --name=x" in calls.read_text()
    assert made == (not existed)
    assert deleted == (not existed), calls.read_text()
    if made:  # on the pinned node image (or E2E_KIND_NODE_IMAGE's), whatever the config says
        assert f"--image={cluster.node_image()}" in calls.read_text()


class PodsOfJobs:
    """What `job_pods` asks of a cluster, answered like an API server from a list of pods: the
    Job's current UID, and the pods whose labels match an equality selector."""

    def __init__(self, uid: str, pods: list[client.V1Pod]) -> None:
        self.uid, self.pods = uid, pods
        self.core = self.batch = self

    def read_namespaced_job(self, name: str, namespace: str) -> client.V1Job:
        return client.V1Job(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace, uid=self.uid)
        )

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> client.V1PodList:
        key, value = label_selector.split("=")
        return client.V1PodList(
            items=[
                p for p in self.pods if p.metadata and (p.metadata.labels or {}).get(key) == value
            ]
        )


def worker_pod(name: str, uid: str) -> client.V1Pod:
    """A pod as the Job controller labels it (Kubernetes 1.27 and later)."""
    labels = {"batch.kubernetes.io/job-name": "job-wq-2", "batch.kubernetes.io/controller-uid": uid}
    return client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels=labels))


def test_the_pods_of_a_replaced_job_that_linger_are_not_the_new_jobs() -> None:
    # Flux deletes a replaced Job in the background: its pods go a moment after it.
    pods = [worker_pod("job-wq-2-old", "uid-a"), worker_pod("job-wq-2-new", "uid-b")]
    found = cluster.job_pods(cast(cluster.Cluster, PodsOfJobs("uid-b", pods)), "job-wq-2", "ns")
    assert [cluster.pod_name(pod) for pod in found] == ["job-wq-2-new"]


def kind_tests_without_docker(**env: str) -> subprocess.CompletedProcess[str]:
    """`make e2e`'s pytest on a machine whose PATH has no docker: this venv's tools only."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("E2E_", "PYTEST_"))}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "kind", "-p", "no:cacheprovider", "-q", "e2e"],
        cwd=REPO, env={**clean, "CI": "", "PATH": str(Path(sys.executable).parent), **env},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_where_no_cluster_can_be_made_the_cluster_tests_fail_in_one_line() -> None:
    done = kind_tests_without_docker()
    assert done.returncode == 1, done.stdout
    said = "no cluster for the cluster tests: docker is not on PATH; kind runs its node in Docker"
    [line] = [line for line in done.stdout.splitlines() if said in line]
    assert line.endswith(f"({cluster.ALLOW_SKIP}=1 skips them) !"), line
    assert "passed" not in done.stdout and "skipped" not in done.stdout, done.stdout


def test_e2e_allow_skip_makes_them_skips_that_say_why() -> None:
    done = kind_tests_without_docker(**{cluster.ALLOW_SKIP: "1"})
    assert done.returncode == 0, done.stdout
    assert "SKIPPED [1] e2e/test_kind.py" in done.stdout, done.stdout
    assert "no cluster: docker is not on PATH" in done.stdout
