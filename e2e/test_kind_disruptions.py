"""Disruptions on a real cluster, timed against the same run undisturbed: both workers evicted
again and again mid-run (what a node drain or a cluster upgrade does) cost seconds each, not the
Job controller's doubling delay; a poison item that kills its workers costs seconds per attempt
and is dead-lettered, and the Job completes. Afterwards `rediswq history` lists the attempts of
the evicted pods, whose pods and logs are gone (docs/disruptions.md).

On the cluster of test_kind.py (where kind cannot run, the run stops with one line saying so, or
skips with E2E_ALLOW_SKIP=1; in CI it runs on every Kubernetes minor of the matrix). Each run is
40 items of 3 s on the dev overlay's 2 workers, with a 10 s lease: the poison item comes back when
its killed worker's lease runs out, and the test is about the time the Job controller keeps the
workers away, not about the lease.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cluster import (
    WORKER_JOB,
    Cluster,
    apply,
    cluster_json,
    completed_run,
    diagnosed,
    job_pods,
    overlay,
    pod_log,
    pod_name,
    reset,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rendering import find, manifests_copy, render_dir, wrap
from worklog import items_worked_on

pytestmark = [pytest.mark.kind, pytest.mark.timeout(2400)]

ITEMS = [f"item-{n:02d}" for n in range(40)]
SETTINGS = {"WORK_SECONDS": "3", "LEASE_SECONDS": "10"}
EVICTIONS = 4  # rounds, each evicting both workers
# The bounds: what four evictions of both workers, or one poison item, may add.
STORM_SLACK = 60.0
POISON_SLACK = 120.0
POISON = "poison"
# Killed as the kernel's OOM killer would kill it: SIGKILL, no goodbye, no release.
HANDLER = """import os, signal, time


def work(item):
    if item == "poison":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(3)
"""

_undisturbed: dict[str, float] = {}


def tree(tmp_path: Path, items: list[str], *, poison_handler: bool = False) -> Path:
    """The dev overlay of a copy of the manifests with `items` and SETTINGS (and the killing
    handler mounted and named): a directory to apply."""
    root = manifests_copy(tmp_path / "repo")
    (root / "seed" / "items.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    settings = root / "base" / "settings.env"
    lines = settings.read_text(encoding="utf-8").splitlines()
    for key, value in SETTINGS.items():
        lines = [f"{key}={value}" if line.startswith(f"{key}=") else line for line in lines]
    settings.write_text("\n".join(lines) + "\n", encoding="utf-8")
    directory = overlay(root, tmp_path / "images")
    if not poison_handler:
        return directory
    add = [
        ("/spec/template/spec/volumes/-", {"name": "handler", "configMap": {"name": "poison"}}),
        (
            "/spec/template/spec/containers/0/volumeMounts/-",
            {"name": "handler", "mountPath": "/handler", "readOnly": True},
        ),
        ("/spec/template/spec/containers/0/env/-", {"name": "PYTHONPATH", "value": "/handler"}),
        ("/spec/template/spec/containers/0/env/-", {"name": "HANDLER", "value": "poison:work"}),
    ]
    poisoned = wrap(
        directory,
        tmp_path / "poisoned",
        namespace=find(render_dir(directory), "Job", WORKER_JOB)["metadata"]["namespace"],
        configMapGenerator=[{"name": "poison", "files": ["poison.py"]}],
        patches=[
            {
                "target": {"kind": "Job", "name": WORKER_JOB},
                # JSON is YAML: kustomize reads a JSON patch as it is.
                "patch": json.dumps([{"op": "add", "path": p, "value": v} for p, v in add]),
            }
        ],
    )
    (poisoned / "poison.py").write_text(HANDLER, encoding="utf-8")
    return poisoned


def seconds(job: client.V1Job) -> float:
    """How long the Job ran: from its start to its completion, as the Job controller says."""
    assert job.status and job.status.start_time and job.status.completion_time, job.status
    return float((job.status.completion_time - job.status.start_time).total_seconds())


def undisturbed(cluster: Cluster, namespace: str, tmp_path: Path) -> float:
    """The seconds the same run takes with nothing in its way (measured once per session)."""
    if "seconds" not in _undisturbed:
        reset(cluster, namespace)
        apply(cluster, tree(tmp_path / "undisturbed", ITEMS))
        with diagnosed(cluster, namespace):
            _undisturbed["seconds"] = seconds(completed_run(cluster, namespace))
        print(f"undisturbed run: {_undisturbed['seconds']:.0f} s")
    return _undisturbed["seconds"]


def working(cluster: Cluster, namespace: str, skip: set[str], timeout: float) -> list[str]:
    """The two live worker pods, not in `skip`, once each has begun an item."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = []
        for pod in job_pods(cluster, WORKER_JOB, namespace):
            name = pod_name(pod)
            live = pod.status and pod.status.phase == "Running"
            if name in skip or not live or (pod.metadata and pod.metadata.deletion_timestamp):
                continue
            try:
                if items_worked_on(pod_log(cluster, name, namespace)):
                    found.append(name)
            except ApiException:
                continue  # the container is not up yet
        if len(found) == 2:
            return found
        time.sleep(0.5)
    raise AssertionError(f"two new workers did not both begin an item within {timeout:.0f} s")


def evict(cluster: Cluster, namespace: str, pod: str) -> None:
    """The Eviction API, as kubectl drain and the cluster autoscaler use it."""
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace))
    cluster.core.create_namespaced_pod_eviction(pod, namespace, body)


def cli(cluster: Cluster, directory: Path, workdir: Path, *args: str) -> Any:
    worker = find(render_dir(directory), "Job", WORKER_JOB)
    return cluster_json(cluster, worker, workdir, *args)


def test_four_evictions_of_both_workers_cost_seconds_and_lose_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    baseline = undisturbed(cluster, namespace, tmp_path)
    reset(cluster, namespace)
    directory = tree(tmp_path / "storm", ITEMS)
    apply(cluster, directory)
    with diagnosed(cluster, namespace):
        evicted: list[str] = []
        for _ in range(EVICTIONS):
            # Each time as soon as the replacements work: the Job controller's delay, were it
            # counting, would have doubled every round.
            for pod in working(cluster, namespace, set(evicted), timeout=90):
                evict(cluster, namespace, pod)
                evicted.append(pod)
        job = completed_run(cluster, namespace)
        took = seconds(job)
        print(f"storm run: {took:.0f} s against {baseline:.0f} s undisturbed")
        assert took <= baseline + STORM_SLACK, f"{took:.0f} s, undisturbed {baseline:.0f} s"
        history = cli(cluster, directory, tmp_path, "history", "--count", "1000")
        done = Counter(entry["item"] for entry in history if entry["outcome"] == "done")
        assert done == Counter(ITEMS), f"each item done exactly once: {dict(done)}"
        assert cli(cluster, directory, tmp_path, "failed") == []
        # The evicted pods and their logs are gone; their attempts are in the history.
        for pod in evicted:
            theirs = [e for e in history if e["worker"].startswith(f"{pod}/")]
            assert theirs, f"no attempt of the evicted {pod} in the history"
        released = [e for e in history if e["outcome"] == "released"]
        assert {e["worker"].split("/")[0] for e in released} <= set(evicted)
        assert len(released) >= EVICTIONS, "the items the evicted workers held went back"


def test_a_poison_item_costs_seconds_per_attempt_and_the_job_completes(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    baseline = undisturbed(cluster, namespace, tmp_path)
    reset(cluster, namespace)
    items = [*ITEMS[:20], POISON, *ITEMS[20:]]
    directory = tree(tmp_path / "poison", items, poison_handler=True)
    apply(cluster, directory)
    with diagnosed(cluster, namespace):
        job = completed_run(cluster, namespace)
        took = seconds(job)
        print(f"poison run: {took:.0f} s against {baseline:.0f} s undisturbed")
        assert took <= baseline + POISON_SLACK, f"{took:.0f} s, undisturbed {baseline:.0f} s"
        [letter] = cli(cluster, directory, tmp_path, "failed")
        assert letter["item"] == POISON and letter["attempts"] == 5, letter
        history = cli(cluster, directory, tmp_path, "history", "--count", "1000")
        done = Counter(entry["item"] for entry in history if entry["outcome"] == "done")
        assert done == Counter(ITEMS), f"each other item done exactly once: {dict(done)}"
        killed = [e for e in history if e["item"] == POISON]
        assert [e["attempt"] for e in killed] == [1, 2, 3, 4, 5], killed
        assert all(e["outcome"].startswith("expired") for e in killed), killed
        pods = {pod_name(p) for p in job_pods(cluster, WORKER_JOB, namespace)}
        assert {e["worker"].split("/")[0] for e in killed} <= pods, "named by their pods"
