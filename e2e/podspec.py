"""A pod spec from the rendered manifests as one `docker run`: what the kubelet would enforce.

User and groups, read-only root filesystem, emptyDirs as tmpfs, configMap and secret volumes as
read-only files, a StatefulSet's volume claims as Docker volumes, capabilities, no-new-privileges,
seccomp, memory and CPU limits, and the environment resolved from ConfigMaps and Secrets. What
cannot be carried fails loudly. Pure but for the volume files written under a scratch directory, so
it is tested without Docker (e2e/test_podspec.py).
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from rendering import Manifest, find


@dataclass(frozen=True)
class Spec:
    """One pod's single container, resolved against the rendered objects."""

    name: str
    image: str
    entrypoint: str | None
    args: tuple[str, ...] | None
    env: Mapping[str, str]
    user: str | None
    run_as_non_root: bool
    options: tuple[str, ...]
    readiness: tuple[str, ...] | None

    def with_env(self, **overrides: str) -> Spec:
        return replace(self, env={**self.env, **overrides})

    def with_image(self, image: str) -> Spec:
        return replace(self, image=image)

    def with_args(self, *args: str) -> Spec:
        return replace(self, args=args)


_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)([a-zA-Z]*)")
_SUFFIXES = {
    "": 1.0,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
}


def quantity(text: str | int | float) -> float:
    """A Kubernetes resource quantity ("500m", "128Mi") as a number."""
    found = _QUANTITY.fullmatch(str(text))
    if not found or found.group(2) not in _SUFFIXES:
        raise ValueError(f"unsupported quantity {text!r}")
    return float(found.group(1)) * _SUFFIXES[found.group(2)]


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's $(VAR) expansion: known variables replaced, unknown kept, $$ escapes."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return "$"
        return env.get(name, match.group(0))

    return _REFERENCE.sub(one, text)


def _data(objects: list[Manifest], kind: str, name: str) -> dict[str, str]:
    obj = find(objects, kind, name)
    if kind == "Secret":
        decoded = {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        return {**decoded, **obj.get("stringData", {})}
    return dict(obj.get("data", {}))


def _env(container: Manifest, objects: list[Manifest], pod_name: str | None) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            data = _data(objects, "ConfigMap", source["configMapRef"]["name"])
        elif "secretRef" in source:
            data = _data(objects, "Secret", source["secretRef"]["name"])
        else:
            raise ValueError(f"unsupported envFrom {source}")
        env.update({prefix + key: value for key, value in data.items()})
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = expand(var["value"], env)
            continue
        ref = var.get("valueFrom", {})
        if "secretKeyRef" in ref:
            env[var["name"]] = _data(objects, "Secret", ref["secretKeyRef"]["name"])[
                ref["secretKeyRef"]["key"]
            ]
        elif "configMapKeyRef" in ref:
            env[var["name"]] = _data(objects, "ConfigMap", ref["configMapKeyRef"]["name"])[
                ref["configMapKeyRef"]["key"]
            ]
        elif ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            if pod_name:  # the downward API: the Pod's own name
                env[var["name"]] = pod_name
            # A Job's pod has no name here: left unset, as the worker outside a cluster ignores it.
            continue
        else:
            raise ValueError(f"unsupported env source {var}")
    return env


def _security(pod: Manifest, container: Manifest) -> tuple[str | None, bool, list[str]]:
    pod_ctx = pod.get("securityContext", {})
    ctx = {**pod_ctx, **container.get("securityContext", {})}
    options = []
    uid, gid = ctx.get("runAsUser"), ctx.get("runAsGroup")
    user = None if uid is None else str(uid) if gid is None else f"{uid}:{gid}"
    groups = [*pod_ctx.get("supplementalGroups", [])]
    if "fsGroup" in pod_ctx:
        groups.append(pod_ctx["fsGroup"])
    options += [arg for group in groups for arg in ("--group-add", str(group))]
    if ctx.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    if ctx.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    if ctx.get("privileged"):
        options.append("--privileged")
    capabilities = ctx.get("capabilities", {})
    options += [arg for cap in capabilities.get("drop", []) for arg in ("--cap-drop", cap)]
    options += [arg for cap in capabilities.get("add", []) for arg in ("--cap-add", cap)]
    seccomp = ctx.get("seccompProfile", {}).get("type", "RuntimeDefault")
    if seccomp == "Unconfined":
        options += ["--security-opt", "seccomp=unconfined"]
    elif seccomp != "RuntimeDefault":  # RuntimeDefault is Docker's default profile
        raise ValueError(f"unsupported seccompProfile {seccomp}")
    return user, bool(ctx.get("runAsNonRoot")), options


def _volumes(
    pod: Manifest,
    container: Manifest,
    objects: list[Manifest],
    scratch: Path,
    claims: Mapping[str, str],
) -> list[str]:
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    options = []
    for mount in container.get("volumeMounts", []):
        if "subPath" in mount:
            raise ValueError(f"unsupported subPath mount {mount}")
        path = mount["mountPath"]
        if mount["name"] in claims:
            # A claim outlives the container as a Docker volume does; an unnamed one is anonymous.
            options += [
                "--volume",
                f"{claims[mount['name']]}:{path}" if claims[mount["name"]] else path,
            ]
            continue
        if mount["name"] not in volumes:
            raise ValueError(f"the mount {mount['name']!r} names no volume and no claim")
        volume = volumes[mount["name"]]
        if "emptyDir" in volume:
            # An emptyDir is a fresh directory anyone in the pod may write, exec allowed.
            tmpfs = f"{path}:rw,exec,nosuid,nodev,mode=0777"
            limit = volume["emptyDir"].get("sizeLimit")
            options += ["--tmpfs", tmpfs + (f",size={int(quantity(limit))}" if limit else "")]
            continue
        if "configMap" in volume:
            source = volume["configMap"]
            data = _data(objects, "ConfigMap", source["name"])
        elif "secret" in volume:
            source = volume["secret"]
            data = _data(objects, "Secret", source["secretName"])
        else:
            raise ValueError(f"unsupported volume {volume}")
        files = {item["key"]: item["path"] for item in source.get("items", [])} or {
            key: key for key in data
        }
        directory = scratch / f"volume-{uuid.uuid4().hex[:8]}-{mount['name']}"
        directory.mkdir(parents=True)
        directory.chmod(0o755)
        for key, relative in files.items():
            target = directory / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[key], encoding="utf-8")
            target.chmod(source.get("defaultMode", 0o644))
        # The kubelet mounts configMap and secret volumes read-only whatever the mount says.
        options += ["--volume", f"{directory}:{path}:ro"]
    return options


def _limits(container: Manifest) -> list[str]:
    limits = container.get("resources", {}).get("limits", {})
    options = []
    if "memory" in limits:
        options += ["--memory", str(int(quantity(limits["memory"])))]
    if "cpu" in limits:
        options += ["--cpus", f"{quantity(limits['cpu']):g}"]
    return options


def stateful_pod_spec(
    statefulset: Manifest,
    objects: list[Manifest],
    scratch: Path,
    volumes: Mapping[str, str] | None = None,
    ordinal: int = 0,
) -> Spec:
    """Pod number `ordinal` of `statefulset` as a docker run: each of its volume claims the Docker
    volume `volumes` names for it (kept across containers, as a claim is across Pods), else an
    anonymous one. A claim's size and access modes are not carried over."""
    names = volumes or {}
    templates = statefulset["spec"].get("volumeClaimTemplates", [])
    claims = {
        claim["metadata"]["name"]: names.get(claim["metadata"]["name"], "") for claim in templates
    }
    unknown = set(names) - set(claims)
    if unknown:
        raise ValueError(f"no volume claim template named {sorted(unknown)}")
    name = f"{statefulset['metadata']['name']}-{ordinal}"
    return pod_spec(statefulset["spec"]["template"]["spec"], objects, scratch, claims, name)


def pod_spec(
    pod: Manifest,
    objects: list[Manifest],
    scratch: Path,
    claims: Mapping[str, str] | None = None,
    name: str | None = None,
) -> Spec:
    """The container of `pod` (a PodSpec) as a docker run; config files go under `scratch`;
    `claims` maps a mount's name to the Docker volume that stands for its claim ("" anonymous);
    `name` is the Pod's, for the downward API."""
    [container] = pod["containers"]  # one container per pod here; more would need a pod
    if pod.get("initContainers") or pod.get("hostNetwork") or pod.get("hostPID"):
        raise ValueError("init containers and host namespaces are not carried over")
    env = _env(container, objects, name)
    user, non_root, security = _security(pod, container)
    command = [expand(arg, env) for arg in container.get("command", [])]
    args = [expand(arg, env) for arg in container.get("args", [])]
    probe = container.get("readinessProbe", {})
    if probe and "exec" not in probe:
        raise ValueError(f"only exec readiness probes are carried over, not {probe}")
    mounts = _volumes(pod, container, objects, scratch, claims or {})
    options = [*security, *mounts, *_limits(container)]
    if "workingDir" in container:
        options += ["--workdir", container["workingDir"]]
    return Spec(
        name=container["name"],
        image=container["image"],
        # As in Kubernetes: `command` replaces the entrypoint and drops the image's CMD.
        entrypoint=command[0] if command else None,
        args=(*command[1:], *args) if command or "args" in container else None,
        env=env,
        user=user,
        run_as_non_root=non_root,
        options=tuple(options),
        readiness=tuple(probe["exec"]["command"]) if probe else None,
    )
