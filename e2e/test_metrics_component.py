"""components/metrics: every overlay with it renders a PodMonitor valid for the Prometheus Operator
that scrapes the workers' named port, and changes nothing else of the worker; without it the worker
declares no port and serves no metrics.

The PodMonitor's schema comes from the CRD schemas (e2e/crdschemas.py; skips without them).
"""

from __future__ import annotations

import copy
import functools
import json
import subprocess
import tempfile
from pathlib import Path

import pytest
from crdschemas import check_jsonschema, is_custom, schema_for
from objects import of_kind, pod, pod_specs, selects
from rendering import OVERLAYS, Manifest, manifests_copy, render, render_tree
from test_manifests import environment, validation_problems

COMPONENT = "../../components/metrics"
overlays = pytest.mark.parametrize("overlay", OVERLAYS)


@functools.cache
def _copy() -> Path:
    """The manifests, each overlay with the component added (kept for the whole session)."""
    root = manifests_copy(Path(tempfile.mkdtemp(prefix="metrics-component-")))
    for kustomization in root.glob("overlays/*/kustomization.yaml"):
        text = kustomization.read_text(encoding="utf-8")
        assert "\ncomponents:\n" in text, f"{kustomization.parent.name} lists no components"
        kustomization.write_text(
            text.replace("\ncomponents:\n", f"\ncomponents:\n  - {COMPONENT}\n"), encoding="utf-8"
        )
    return root


@functools.cache
def _rendered(overlay: str) -> tuple[Manifest, ...]:
    return tuple(render_tree(_copy(), overlay))


def with_metrics(overlay: str) -> list[Manifest]:
    return copy.deepcopy(list(_rendered(overlay)))


def worker_container(objects: list[Manifest]) -> Manifest:
    (container,) = pod(objects, "worker").spec["containers"]
    return container  # type: ignore[no-any-return]


def metrics_port(objects: list[Manifest]) -> int:
    """The port the worker serves metrics on, from its environment (METRICS_PORT)."""
    return int(environment(objects, worker_container(objects))["METRICS_PORT"].rpartition(":")[2])


def ingress_allows(policies: list[Manifest], labels: dict[str, str], port: int, name: str) -> bool:
    """Whether the NetworkPolicies let anything reach `port` (named `name`) of a pod with
    `labels`: no policy isolates the pod for ingress, or one of its rules opens the port."""
    isolating = [
        policy for policy in policies
        if selects(policy["spec"]["podSelector"], labels)
        and "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
    ]  # fmt: skip
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if not ports or any(p.get("port") in (port, name, None) for p in ports):
                return True
    return False


@overlays
def test_the_podmonitor_is_valid_against_the_prometheus_operator_schema(
    overlay: str, tmp_path: Path
) -> None:
    (monitor,) = of_kind(with_metrics(overlay), "PodMonitor")
    instance = tmp_path / "podmonitor.json"
    instance.write_text(json.dumps(monitor), encoding="utf-8")
    done = subprocess.run(
        [check_jsonschema(), "--schemafile", schema_for(monitor), str(instance)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{overlay}: {done.stdout}{done.stderr}"


@overlays
def test_the_podmonitor_scrapes_the_workers_named_port_and_nothing_else(overlay: str) -> None:
    objects = with_metrics(overlay)
    (monitor,) = of_kind(objects, "PodMonitor")
    selected = {
        p.component for p in pod_specs(objects) if selects(monitor["spec"]["selector"], p.labels)
    }
    assert selected == {"worker"}, f"{overlay}: the PodMonitor selects {selected}"
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"]: p for p in worker_container(objects).get("ports", [])}
    assert endpoint["port"] in ports, f"{overlay}: no container port named {endpoint['port']}"
    declared = ports[endpoint["port"]]
    assert declared["containerPort"] == metrics_port(objects) != 0
    assert "hostPort" not in declared, "a hostPort breaks the restricted profile's spirit"
    assert endpoint["path"] == "/metrics"


@overlays
def test_the_component_changes_nothing_else_of_the_worker(overlay: str) -> None:
    objects, plain = with_metrics(overlay), render(overlay)
    container = worker_container(objects)
    container["env"] = [v for v in container["env"] if v["name"] != "METRICS_PORT"]
    del container["ports"]
    # So the restricted profile, limits and mounts hold as test_manifests.py checks them.
    assert pod(objects, "worker").spec == pod(plain, "worker").spec
    assert not list(validation_problems([o for o in objects if not is_custom(o)]))


@overlays
def test_without_the_component_the_worker_declares_no_port_and_serves_nothing(
    overlay: str,
) -> None:
    objects = render(overlay)
    assert "ports" not in worker_container(objects)
    assert environment(objects, worker_container(objects)).get("METRICS_PORT") == "0"
    assert not of_kind(objects, "PodMonitor")


@overlays
def test_no_network_policy_keeps_prometheus_from_the_workers(overlay: str) -> None:
    objects = with_metrics(overlay)
    labels = pod(objects, "worker").labels
    policies = of_kind(objects, "NetworkPolicy")
    assert ingress_allows(policies, labels, metrics_port(objects), "metrics"), overlay


def test_a_default_deny_policy_would_be_caught() -> None:
    objects = with_metrics("dev")
    labels = pod(objects, "worker").labels
    deny: Manifest = {"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert not ingress_allows([deny], labels, 9100, "metrics")
    scrape = copy.deepcopy(deny)
    scrape["spec"]["ingress"] = [{"ports": [{"port": "metrics", "protocol": "TCP"}]}]
    assert ingress_allows([deny, scrape], labels, 9100, "metrics")
