"""The optional parts as the rendered overlays show them: the in-cluster Redis of components/redis
(a StatefulSet that outlives its Pod, its Services and disruption budget), or the managed Redis of
components/managed-redis (no Redis objects, the URL and CA from outside Git, egress to it only);
the workers started by KEDA (components/keda).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from objects import APP, COMPONENT, SECRET, of_kind, pod, pod_specs, selects
from rendering import (
    HA,
    IN_CLUSTER,
    OVERLAYS,
    SCALED,
    Manifest,
    find,
    job_spec,
    manifests_copy,
    render,
    render_dir,
)

MANAGED = tuple(overlay for overlay in OVERLAYS if overlay not in IN_CLUSTER + HA)
REDIS_KINDS = {"StatefulSet", "Service", "PodDisruptionBudget", "Pod", "PersistentVolumeClaim"}
# The labels of the bare Redis Pod of trees before the StatefulSet, which may still be running.
BARE_POD = {APP: "job-wq-2", COMPONENT: "redis"}
CA_DIRECTORY = "/etc/redis-ca"

in_cluster = pytest.mark.parametrize("overlay", IN_CLUSTER)
managed = pytest.mark.parametrize("overlay", MANAGED)
replicated = pytest.mark.parametrize("overlay", HA)


def redis_args(objects: list[Manifest]) -> dict[str, str]:
    """redis-server's `--name value` arguments."""
    [container] = pod(objects, "redis").containers
    args = container["args"][1:]
    return dict(zip(args[::2], args[1::2], strict=True))


def test_some_overlay_uses_each_kind_of_redis() -> None:
    assert IN_CLUSTER and MANAGED and HA, (IN_CLUSTER, MANAGED, HA)


@in_cluster
def test_redis_acknowledges_only_writes_on_its_disk(overlay: str) -> None:
    args = redis_args(render(overlay))
    assert args["--appendonly"] == "yes"
    # everysec could lose the last second of acknowledged writes (a seal, say) on a node crash.
    assert args["--appendfsync"] == "always"
    assert args["--dir"] == "/data"


@in_cluster
def test_the_queue_is_on_a_claim_that_outlives_pod_and_statefulset(overlay: str) -> None:
    statefulset = find(render(overlay), "StatefulSet", "redis")["spec"]
    assert statefulset["replicas"] == 1, "a second Redis would be a second, empty queue"
    [claim] = statefulset["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    retention = statefulset["persistentVolumeClaimRetentionPolicy"]
    assert retention == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    [container] = statefulset["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/data"
    # The volume is made writable for Redis's group, whatever owns it on the node.
    context = statefulset["template"]["spec"]["securityContext"]
    assert context["fsGroup"] == context["runAsGroup"]


@in_cluster
def test_the_statefulsets_service_is_headless_and_selects_it(overlay: str) -> None:
    objects = render(overlay)
    statefulset = find(objects, "StatefulSet", "redis")
    governing = find(objects, "Service", statefulset["spec"]["serviceName"])
    assert governing["spec"]["clusterIP"] == "None"
    assert selects({"matchLabels": governing["spec"]["selector"]}, pod(objects, "redis").labels)


@in_cluster
def test_clients_never_reach_a_bare_redis_pod_left_from_an_older_tree(overlay: str) -> None:
    objects = render(overlay)
    for service in of_kind(objects, "Service"):
        selector = {"matchLabels": service["spec"]["selector"]}
        assert not selects(selector, BARE_POD), f"Service {service['metadata']['name']}"
    # The StatefulSet's own Pod is still selected (pod_specs adds the label its controller sets).
    assert selects({"matchLabels": find(objects, "Service", "redis")["spec"]["selector"]},
                   pod(objects, "redis").labels)  # fmt: skip


@in_cluster
def test_no_voluntary_eviction_of_a_ready_redis(overlay: str) -> None:
    objects = render(overlay)
    [budget] = of_kind(objects, "PodDisruptionBudget")
    spec = budget["spec"]
    selected = [p.component for p in pod_specs(objects) if selects(spec["selector"], p.labels)]
    assert selected == ["redis"]
    assert spec.get("maxUnavailable") == 0 or spec.get("minAvailable") == 1, spec
    assert spec["unhealthyPodEvictionPolicy"] == "AlwaysAllow", "a broken Redis would block drains"


@in_cluster
def test_liveness_waits_for_the_append_only_files_replay(overlay: str) -> None:
    [container] = pod(render(overlay), "redis").containers
    startup = container["startupProbe"]
    # A 200 MB file replays in well under a minute; five minutes before the liveness probe starts.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, startup


@managed
def test_a_managed_redis_overlay_has_no_redis_objects(overlay: str) -> None:
    objects = render(overlay)
    redis = [
        f"{obj['kind']}/{obj['metadata']['name']}"
        for obj in objects
        if obj["kind"] in REDIS_KINDS or obj["metadata"].get("labels", {}).get(COMPONENT) == "redis"
    ]
    assert not redis, redis
    assert not of_kind(objects, "Secret"), "the URL and the password stay out of Git"


@managed
def test_workers_and_seed_take_url_password_and_ca_from_outside_git(overlay: str) -> None:
    objects = render(overlay)
    for component in ("worker", "seed"):
        spec = pod(objects, component)
        [container] = spec.containers
        refs = {
            var["name"]: var["valueFrom"]["secretKeyRef"]
            for var in container["env"]
            if "secretKeyRef" in var.get("valueFrom", {})
        }
        assert (refs["REDIS_URL"]["name"], refs["REDIS_URL"]["key"]) == (SECRET[0], "url")
        assert (refs["REDIS_PASSWORD"]["name"], refs["REDIS_PASSWORD"]["key"]) == SECRET
        # The Secret's URL wins: an `env` entry overrides the settings ConfigMap's `envFrom`.
        assert [v["name"] for v in container["env"]].count("REDIS_URL") == 1
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        ca = mounts[CA_DIRECTORY]
        assert ca["readOnly"] is True
        [volume] = [v for v in spec.spec["volumes"] if v["name"] == ca["name"]]
        # Optional: with a public CA (the image's trust store) the ConfigMap need not exist.
        assert volume["configMap"] == {"name": "redis-ca", "optional": True}, volume


def egress_policies(objects: list[Manifest], labels: dict[str, str]) -> list[Manifest]:
    return [
        policy
        for policy in of_kind(objects, "NetworkPolicy")
        if "Egress" in policy["spec"]["policyTypes"]
        and selects(policy["spec"]["podSelector"], labels)
    ]


@managed
def test_workers_and_seed_reach_only_dns_and_the_managed_endpoint(overlay: str) -> None:
    objects = render(overlay)
    for component in ("worker", "seed"):
        [policy] = egress_policies(objects, pod(objects, component).labels)
        dns, redis = policy["spec"]["egress"]
        assert {(p["protocol"], p["port"]) for p in dns["ports"]} == {("UDP", 53), ("TCP", 53)}
        [dns_peer] = dns["to"]
        assert dns_peer["namespaceSelector"]["matchLabels"] == {
            "kubernetes.io/metadata.name": "kube-system"
        }
        [redis_peer] = redis["to"]
        assert set(redis_peer) == {"ipBlock"}, "the endpoint by address, not every destination"
        assert {(p["protocol"], p["port"]) for p in redis["ports"]} == {
            ("TCP", 6379),
            ("TCP", 6380),
        }
    # Nobody else is confined by it (a stranger with one of the labels, say).
    for stranger in ({COMPONENT: "worker"}, {APP: "job-wq-2", COMPONENT: "other"}):
        assert not egress_policies(objects, stranger), stranger


# --- KEDA (components/keda)

scaled = pytest.mark.parametrize("overlay", SCALED)
# An overlay like the KEDA ones in all but KEDA: the same image, the same in-cluster Redis.
WITHOUT_KEDA = "ghcr"


def test_some_overlay_uses_keda() -> None:
    assert SCALED


@scaled
def test_keda_workers_are_the_jobs_workers(overlay: str) -> None:
    """Copied, not written again: the pod template and failure handling of base/'s worker Job."""
    objects, plain = render(overlay), render(WITHOUT_KEDA)
    assert not [o for o in objects if o["kind"] == "Job" and o["metadata"]["name"] == "job-wq-2"]
    worker, original = job_spec(objects, "job-wq-2"), find(plain, "Job", "job-wq-2")["spec"]
    for field in ("template", "completionMode", "completions", "successPolicy",
                  "backoffLimitPerIndex", "maxFailedIndexes", "podFailurePolicy",
                  "podReplacementPolicy", "activeDeadlineSeconds"):  # fmt: skip
        assert worker[field] == original[field], field
    # The seed is untouched.
    assert find(objects, "Job", "job-wq-2-seed") == find(plain, "Job", "job-wq-2-seed")


@scaled
def test_keda_scales_on_the_pending_list_with_the_secrets_password(overlay: str) -> None:
    objects = render(overlay)
    spec = find(objects, "ScaledJob", "job-wq-2")["spec"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"
    metadata = trigger["metadata"]
    [container] = pod(objects, "worker").containers
    settings = find(objects, "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])["data"]
    # The pending list is the bare queue name.
    assert metadata["listName"] == settings["QUEUE_NAME"]
    service = find(objects, "Service", "redis")
    namespace, port = service["metadata"]["namespace"], service["spec"]["ports"][0]["port"]
    assert metadata["address"] == f"redis.{namespace}.svc:{port}", "the operator's own namespace"
    assert metadata["listLength"] == "1", "one worker per waiting item"
    auth = find(objects, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    [secret] = auth["spec"]["secretTargetRef"]
    assert (secret["parameter"], secret["name"], secret["key"]) == ("password", *SECRET)


def test_the_keda_overlay_copied_to_another_namespace_names_redis_there(tmp_path: Path) -> None:
    root = manifests_copy(tmp_path)
    kustomization = root / "overlays" / "keda" / "kustomization.yaml"
    text = kustomization.read_text(encoding="utf-8")
    kustomization.write_text(text.replace("namespace: job-wq-2", "namespace: batch"), "utf-8")
    [trigger] = find(render_dir(kustomization.parent), "ScaledJob", "job-wq-2")["spec"]["triggers"]
    assert trigger["metadata"]["address"] == "redis.batch.svc:6379"


@scaled
def test_keda_never_starts_more_workers_than_items_or_the_cap(overlay: str) -> None:
    spec = find(render(overlay), "ScaledJob", "job-wq-2")["spec"]
    # accurate: for a list without its in-flight items; new Jobs = waiting items - pending Jobs,
    # within maxReplicaCount. eager would fill up to the cap whatever the list's length.
    assert spec["scalingStrategy"]["strategy"] == "accurate"
    assert 1 <= spec["maxReplicaCount"] <= 20
    assert spec.get("minReplicaCount", 0) == 0, "no idle workers between runs"
    assert spec["jobTargetRef"]["parallelism"] == 1
    # A template change must not kill the running workers of a run.
    assert spec["rollout"]["strategy"] == "gradual"


def redis_conf(objects: list[Manifest]) -> dict[str, str]:
    """The replicated servers' redis.conf, as `directive value` pairs."""
    text = find(objects, "ConfigMap", _generated(objects, "redis-ha"))["data"]["redis.conf"]
    lines = [line.split(None, 1) for line in text.splitlines() if line and line[0] != "#"]
    return {line[0]: line[1] if len(line) > 1 else "" for line in lines}


def _generated(objects: list[Manifest], name: str) -> str:
    """The hash-suffixed name kustomize gave the ConfigMap generated as `name`."""
    (found,) = [
        obj["metadata"]["name"]
        for obj in of_kind(objects, "ConfigMap")
        if obj["metadata"]["name"].rsplit("-", 1)[0] == name
    ]
    return str(found)


@replicated
def test_a_primary_two_replicas_and_three_sentinels_each_spread_across_nodes(overlay: str) -> None:
    objects = render(overlay)
    for name, component in (("redis-ha", "redis"), ("redis-sentinel", "redis-sentinel")):
        spec = find(objects, "StatefulSet", name)["spec"]
        assert spec["replicas"] == 3, name
        (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname", name
        assert selects(
            term["podAffinityTerm"]["labelSelector"], {APP: "job-wq-2", COMPONENT: component}
        )
        (budget,) = [
            b for b in of_kind(objects, "PodDisruptionBudget")
            if selects(b["spec"]["selector"], spec["template"]["metadata"]["labels"])
        ]  # fmt: skip
        assert budget["spec"]["maxUnavailable"] == 1, name


@replicated
def test_every_server_keeps_its_aof_on_a_claim_and_a_cut_off_primary_refuses_writes(
    overlay: str,
) -> None:
    objects = render(overlay)
    spec = find(objects, "StatefulSet", "redis-ha")["spec"]
    [claim] = spec["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain", "whenScaled": "Retain"
    }  # fmt: skip
    conf = redis_conf(objects)
    assert (conf["appendonly"], conf["appendfsync"], conf["dir"]) == ("yes", "always", "/data")
    assert conf["maxmemory-policy"] == "noeviction"
    assert int(conf["min-replicas-to-write"]) >= 1
