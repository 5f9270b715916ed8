"""The kubelet translation of e2e/podspec.py, without Docker: what a pod spec becomes as a run."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from podspec import expand, pod_spec, quantity, stateful_pod_spec
from rendering import Manifest, find, render, with_dev_secret

SETTINGS = {"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"HOST": "redis"}}
SECRET = {
    "kind": "Secret",
    "metadata": {"name": "auth"},
    "data": {"password": base64.b64encode(b"s3cret").decode()},
}
ITEMS = {"kind": "ConfigMap", "metadata": {"name": "items"}, "data": {"items.txt": "a\nb\n"}}
OBJECTS = [SETTINGS, SECRET, ITEMS]
PASSWORD_REF = {"name": "auth", "key": "password"}
HOST_REF = {"name": "settings", "key": "HOST"}
AS_P_W = {"key": "password", "path": "p/w"}


def container(**fields: object) -> Manifest:
    return {"name": "main", "image": "example/app:1", **fields}


# A field of the pod no container has.
IP_FIELD = {"fieldRef": {"fieldPath": "status.podIP"}}


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("128Mi", 128 * 2**20), ("2", 2.0), ("1.5Gi", 1.5 * 2**30), ("64k", 64e3)],
)
def test_quantities_are_read_as_kubernetes_writes_them(text: str, value: float) -> None:
    assert quantity(text) == value


@pytest.mark.parametrize("text", ["", "12Qi", "-1", "1e3"])
def test_an_unknown_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="unsupported quantity"):
        quantity(text)


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("--pass=$(PASSWORD)", "--pass=s3cret"),
        ("$(UNKNOWN) stays", "$(UNKNOWN) stays"),
        ("$$(PASSWORD) is escaped", "$(PASSWORD) is escaped"),
        ("a $ alone", "a $ alone"),
        ("$(PASSWORD)$(PASSWORD)", "s3crets3cret"),
    ],
)
def test_references_expand_as_the_kubelet_expands_them(text: str, expanded: str) -> None:
    assert expand(text, {"PASSWORD": "s3cret"}) == expanded


def test_the_environment_comes_from_configmaps_secrets_then_own_values(tmp_path: Path) -> None:
    pod = {
        "containers": [
            container(
                envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "APP_"}],
                env=[
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": PASSWORD_REF}},
                    {"name": "URL", "value": "redis://:$(PASSWORD)@$(APP_HOST)"},
                    {"name": "HOST2", "valueFrom": {"configMapKeyRef": HOST_REF}},
                ],
            )
        ]
    }  # fmt: skip
    spec = pod_spec(pod, OBJECTS, tmp_path)
    assert spec.env == {
        "APP_HOST": "redis",
        "PASSWORD": "s3cret",
        "URL": "redis://:s3cret@redis",
        "HOST2": "redis",
    }


def test_command_replaces_the_entrypoint_and_drops_the_images_arguments(tmp_path: Path) -> None:
    spec = pod_spec({"containers": [container(command=["sh", "-c", "x"])]}, [], tmp_path)
    assert (spec.entrypoint, spec.args) == ("sh", ("-c", "x"))
    only_args = pod_spec({"containers": [container(args=["seed"])]}, [], tmp_path)
    assert (only_args.entrypoint, only_args.args) == (None, ("seed",))
    neither = pod_spec({"containers": [container()]}, [], tmp_path)
    assert (neither.entrypoint, neither.args) == (None, None)


def test_the_security_context_of_pod_and_container_becomes_run_options(tmp_path: Path) -> None:
    pod = {
        "securityContext": {"runAsUser": 10, "runAsGroup": 20, "fsGroup": 30, "runAsNonRoot": True},
        "containers": [
            container(
                securityContext={
                    "runAsUser": 11,
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                    "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                }
            )
        ],
    }
    spec = pod_spec(pod, [], tmp_path)
    assert spec.user == "11:20"
    assert spec.run_as_non_root
    options = " ".join(spec.options)
    for expected in (
        "--group-add 30",
        "--read-only",
        "--security-opt no-new-privileges",
        "--cap-drop ALL",
        "--cap-add NET_BIND_SERVICE",
    ):
        assert expected in options, options
    assert "seccomp" not in options, "RuntimeDefault is Docker's own default profile"


def test_volumes_become_tmpfs_and_read_only_files(tmp_path: Path) -> None:
    pod = {
        "volumes": [
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "items", "configMap": {"name": "items"}},
            {"name": "auth", "secret": {"secretName": "auth", "items": [AS_P_W]}},
        ],
        "containers": [
            container(
                volumeMounts=[
                    {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 (an emptyDir)
                    {"name": "items", "mountPath": "/items"},
                    {"name": "auth", "mountPath": "/auth", "readOnly": False},
                ],
                resources={"limits": {"memory": "128Mi", "cpu": "500m"}},
            )
        ],
    }  # fmt: skip
    spec = pod_spec(pod, OBJECTS, tmp_path)
    options = list(spec.options)
    assert f"/tmp:rw,exec,nosuid,nodev,mode=0777,size={64 * 2**20}" in options  # noqa: S108
    binds = [options[i + 1] for i, option in enumerate(options) if option == "--volume"]
    items = next(b for b in binds if b.endswith(":/items:ro"))
    assert (Path(items.split(":")[0]) / "items.txt").read_text() == "a\nb\n"
    auth = next(b for b in binds if b.endswith(":/auth:ro"))
    assert (Path(auth.split(":")[0]) / "p" / "w").read_text() == "s3cret"
    assert options[options.index("--memory") + 1] == str(128 * 2**20)
    assert options[options.index("--cpus") + 1] == "0.5"


@pytest.mark.parametrize(
    ("pod", "message"),
    [
        ({"initContainers": [container()], "containers": [container()]}, "init containers"),
        ({"hostNetwork": True, "containers": [container()]}, "host namespaces"),
        ({"containers": [container(readinessProbe={"tcpSocket": {"port": 1}})]}, "readiness"),
        (
            {"containers": [container(securityContext={"seccompProfile": {"type": "Localhost"}})]},
            "seccompProfile",
        ),
        (
            {
                "volumes": [{"name": "v", "hostPath": {"path": "/"}}],
                "containers": [container(volumeMounts=[{"name": "v", "mountPath": "/v"}])],
            },
            "unsupported volume",
        ),
        (
            {"containers": [container(volumeMounts=[{"name": "gone", "mountPath": "/g"}])]},
            "names no volume and no claim",
        ),
        (
            {"containers": [container(env=[{"name": "IP", "valueFrom": IP_FIELD}])]},
            "unsupported env source",
        ),
    ],
)
def test_what_cannot_be_carried_over_fails_loudly(
    pod: Manifest, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        pod_spec(pod, OBJECTS, tmp_path)


def test_the_pods_name_is_left_unset_as_there_is_no_pod(tmp_path: Path) -> None:
    """The worker names itself by POD_NAME only in a cluster; a container has no pod name."""
    name = {"fieldRef": {"fieldPath": "metadata.name"}}
    pod = {"containers": [container(env=[{"name": "POD_NAME", "valueFrom": name}])]}
    assert "POD_NAME" not in pod_spec(pod, OBJECTS, tmp_path).env


def test_the_dev_overlays_worker_runs_as_its_job_says(tmp_path: Path) -> None:
    objects = render("dev")
    template = find(objects, "Job", "job-wq-2")["spec"]["template"]["spec"]
    spec = pod_spec(template, objects, tmp_path)
    context = template["securityContext"]
    assert spec.user == f"{context['runAsUser']}:{context['runAsGroup']}"
    assert spec.env["REDIS_PASSWORD"] == "dev-only-throwaway-password"  # noqa: S105 (dev overlay's)
    assert spec.env["QUEUE_NAME"] == "job2"
    assert {"--read-only", "--cap-drop"} <= set(spec.options)


def test_the_dev_overlays_redis_keeps_its_claim_on_a_docker_volume(tmp_path: Path) -> None:
    objects = render("dev")
    statefulset = find(objects, "StatefulSet", "redis")
    kept = stateful_pod_spec(statefulset, objects, tmp_path, {"data": "redis-data"})
    assert "redis-data:/data" in kept.options, kept.options
    # fsGroup: the volume's group, which the container joins as the kubelet makes it.
    fs_group = statefulset["spec"]["template"]["spec"]["securityContext"]["fsGroup"]
    assert ["--group-add", str(fs_group)] == list(kept.options[:2]), kept.options
    anonymous = stateful_pod_spec(statefulset, objects, tmp_path)
    assert "/data" in anonymous.options and not [o for o in anonymous.options if ":/data" in o]
    args = list(kept.args or ())
    assert args[args.index("--appendfsync") + 1] == "always", args


def test_a_volume_for_a_claim_the_statefulset_lacks_is_refused(tmp_path: Path) -> None:
    objects = render("dev")
    with pytest.raises(ValueError, match="no volume claim template named"):
        stateful_pod_spec(find(objects, "StatefulSet", "redis"), objects, tmp_path, {"dat": "v"})


def test_each_pod_of_a_statefulset_knows_its_own_name(tmp_path: Path) -> None:
    objects = with_dev_secret("ha", tmp_path)
    statefulset = find(objects, "StatefulSet", "redis-sentinel")
    for ordinal in (0, 2):
        spec = stateful_pod_spec(statefulset, objects, tmp_path, ordinal=ordinal)
        assert spec.env["POD_NAME"] == f"redis-sentinel-{ordinal}"
