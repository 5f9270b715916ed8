"""components/metrics: every overlay with it renders PodMonitors valid for the Prometheus Operator
that scrape the workers' and the exporter's named ports, an exporter on the Jobs' queue that meets
the restricted profile and may reach Redis, the alert rules and the Grafana dashboard, and changes
nothing else of the worker; without it the worker declares no port and serves no metrics.

The Operator's schemas come from the CRD schemas (e2e/crdschemas.py; skips without them). The rules
are tested in test_alerts.py, the dashboard's queries in worker/tests/test_prometheus.py.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from alertrules import METRICS
from crdschemas import crd_problem, is_custom
from objects import COMPONENT as COMPONENT_LABEL
from objects import SECRET, of_kind, pod, pod_specs, selects
from rediswq.server import EmbeddedRedis
from rendering import OVERLAYS, Manifest, find, manifests_copy, render, render_tree, runs_redis
from test_manifests import assert_restricted, environment, validation_problems

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


def worker_container(objects: list[Manifest], component: str = "worker") -> Manifest:
    (container,) = pod(objects, component).spec["containers"]
    return container  # type: ignore[no-any-return]


def metrics_port(objects: list[Manifest], component: str = "worker") -> int:
    """The port a pod serves metrics on, from its environment (METRICS_PORT)."""
    container = worker_container(objects, component)
    return int(environment(objects, container)["METRICS_PORT"].rpartition(":")[2])


def secret_refs(container: Manifest) -> dict[str, tuple[str, str]]:
    return {
        var["name"]: (ref["name"], ref["key"])
        for var in container["env"]
        if (ref := var.get("valueFrom", {}).get("secretKeyRef"))
    }


def mounts(container: Manifest) -> set[str]:
    return {mount["mountPath"] for mount in container.get("volumeMounts", [])}


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
def test_the_operators_resources_are_valid_against_its_schemas(
    overlay: str, tmp_path: Path
) -> None:
    operator = "monitoring.coreos.com/"
    custom = [obj for obj in with_metrics(overlay) if obj["apiVersion"].startswith(operator)]
    assert sorted(obj["kind"] for obj in custom) == ["PodMonitor", "PodMonitor", "PrometheusRule"]
    unchecked = []
    for obj in custom:
        try:
            problem = crd_problem(obj, tmp_path)
        except pytest.skip.Exception as missing:  # its schema; the others are still checked
            unchecked.append(str(missing.msg))
            continue
        assert not problem, f"{overlay} {obj['kind']}/{obj['metadata']['name']}: {problem}"
    if unchecked:
        pytest.skip("; ".join(sorted(set(unchecked))))


@overlays
def test_each_podmonitor_scrapes_its_components_named_port_and_nothing_else(overlay: str) -> None:
    objects = with_metrics(overlay)
    scraped = set()
    for monitor in of_kind(objects, "PodMonitor"):
        component = monitor["metadata"]["labels"][COMPONENT_LABEL]
        selected = {
            p.component
            for p in pod_specs(objects)
            if selects(monitor["spec"]["selector"], p.labels)
        }
        assert selected == {component}, (
            f"{overlay}: {monitor['metadata']['name']} selects {selected}"
        )
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        ports = {p["name"]: p for p in worker_container(objects, component).get("ports", [])}
        assert endpoint["port"] in ports, f"{overlay}: no {component} port named {endpoint['port']}"
        declared = ports[endpoint["port"]]
        assert declared["containerPort"] == metrics_port(objects, component) != 0
        assert "hostPort" not in declared, "a hostPort breaks the restricted profile's spirit"
        assert endpoint["path"] == "/metrics"
        scraped.add(component)
    assert scraped == {"worker", "exporter"}


@overlays
def test_the_exporter_serves_the_jobs_queue_with_their_password(overlay: str) -> None:
    objects = with_metrics(overlay)
    exporter, worker = worker_container(objects, "exporter"), worker_container(objects)
    assert exporter["args"] == ["exporter"]
    assert exporter["image"] == worker["image"]
    shared = ("REDIS_URL", "QUEUE_NAME")
    exporter_env, worker_env = environment(objects, exporter), environment(objects, worker)
    assert {k: exporter_env[k] for k in shared} == {k: worker_env[k] for k in shared}
    # The password, and with components/managed-redis the URL, from the same Secret's keys.
    assert secret_refs(exporter) == secret_refs(worker)
    assert secret_refs(exporter)["REDIS_PASSWORD"] == SECRET
    assert mounts(exporter) == mounts(worker) - {"/items", "/tmp"}  # noqa: S108 (the worker's)
    # So the restricted profile, limits and mounts hold as test_manifests.py checks them.
    assert_restricted(objects, overlay)
    assert find(objects, "Deployment", "job-wq-2-exporter")["spec"]["replicas"] == 1


@overlays
def test_the_exporter_may_reach_redis_and_be_scraped(overlay: str) -> None:
    objects = with_metrics(overlay)
    policies = of_kind(objects, "NetworkPolicy")
    exporter = pod(objects, "exporter").labels
    assert ingress_allows(policies, exporter, metrics_port(objects, "exporter"), "metrics")
    if not runs_redis(overlay):
        return
    redis = pod(objects, "redis").labels
    admitting = [
        rule
        for policy in policies
        if selects(policy["spec"]["podSelector"], redis)
        for rule in policy["spec"].get("ingress", [])
        if any(selects(peer.get("podSelector", {}), exporter) for peer in rule.get("from", []))
    ]
    assert any(port["port"] == 6379 for rule in admitting for port in rule["ports"]), overlay


@overlays
def test_the_dashboard_is_in_a_configmap_for_grafanas_sidecar(overlay: str) -> None:
    (config,) = [
        obj for obj in of_kind(with_metrics(overlay), "ConfigMap")
        if obj["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
    ]  # fmt: skip
    (text,) = config["data"].values()
    assert json.loads(text) == json.loads((METRICS / "dashboard.json").read_text(encoding="utf-8"))
    assert config["metadata"]["name"] == "job-wq-2-dashboard", "no hash: one dashboard per uid"


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
    assert not of_kind(objects, "PrometheusRule")
    assert "exporter" not in {p.component for p in pod_specs(objects)}


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


# Grafana publishes no JSON schema of a dashboard that can be read offline (its own is CUE, in a
# repository under the AGPL), so this checks what the docs' "JSON model" page asks of one and what
# the sidecar needs: the fields, panels that do not overlap, each query on the chosen data source,
# and only defined variables.
PANEL_TYPES = {"stat", "gauge", "timeseries", "bargauge", "table", "text"}


def test_the_dashboard_json_has_the_shape_grafana_loads() -> None:
    dashboard = json.loads((METRICS / "dashboard.json").read_text(encoding="utf-8"))
    assert {"uid", "title", "schemaVersion", "panels", "templating", "time"} <= set(dashboard)
    assert isinstance(dashboard["schemaVersion"], int)
    assert "id" not in dashboard or dashboard["id"] is None, "an id ties it to one Grafana"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "queue"}
    cells: set[tuple[int, int]] = set()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the 24 columns"
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, f"{panel['title']}: undefined {used - variables}"


def test_the_exporter_runs_with_the_arguments_and_settings_the_deployment_gives_it() -> None:
    """Its args and every setting of the rendered ConfigMap, with the dev Secret's password,
    start a real `rediswq exporter` that serves the queue of a real Redis; only the address of
    Redis and of the metrics are this machine's."""
    objects = with_metrics("dev")
    container = worker_container(objects, "exporter")
    secret = find(objects, "Secret", SECRET[0])
    password = base64.b64decode(secret["data"][SECRET[1]]).decode()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with EmbeddedRedis(password=password) as server:
        env = {
            "PATH": os.environ["PATH"],
            **environment(objects, container),
            "REDIS_URL": f"redis://127.0.0.1:{server.port}/0",
            "REDIS_PASSWORD": password,
            "METRICS_PORT": f"127.0.0.1:{port}",
        }
        exporter = subprocess.Popen(
            [sys.executable, "-m", "rediswq", *container["args"]],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as reply:
                        served = reply.read().decode()
                    break
                except OSError:
                    assert exporter.poll() is None, exporter.communicate()
                    assert time.monotonic() < deadline, "the exporter never served"
                    time.sleep(0.1)
        finally:
            exporter.terminate()
            exporter.communicate(timeout=30)
    queue = environment(objects, container)["QUEUE_NAME"]
    assert f'rediswq_queue_up{{queue="{queue}"}} 1.0' in served
