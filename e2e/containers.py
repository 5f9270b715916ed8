"""The container e2e's machinery: a Docker engine, the worker image, and pods run as containers.

A pod spec from the rendered manifests becomes one `docker run`, carrying what the kubelet would
enforce: user and groups, read-only root filesystem, emptyDirs as tmpfs, configMap volumes as
read-only files, capabilities, no-new-privileges, seccomp, memory and CPU limits, and the
environment resolved from ConfigMaps and Secrets. What cannot be carried fails loudly.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from rendering import REPO, Manifest, find

DOCKERFILE = REPO / "worker" / "Dockerfile"
BUILD_BASES = REPO / "e2e" / "images" / "build-bases.sh"
# Set in CI, where a missing engine or builder is a broken machine, not a reason to skip.
FORCE = "E2E_DOCKER"
# Picks the image builder (docker or podman) instead of the first that works.
BUILDER = "E2E_DOCKER_BUILDER"
LABEL = "io.github.job-wq-2.e2e-run"
# build-bases.sh: "cannot build a base image here" (not root, no debootstrap).
CANNOT_BUILD = 77

COMMAND_TIMEOUT = 120.0
PULL_TIMEOUT = 600.0
# Cold: debootstrap of a base, or pip downloading the dependencies.
BUILD_TIMEOUT = 900.0


class Unavailable(Exception):
    """This machine cannot run the container e2e; the message says why."""


def run(
    args: Sequence[str],
    *,
    timeout: float = COMMAND_TIMEOUT,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(args)}` exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )
    return done


def docker(*args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True) -> str:
    return run(["docker", *args], timeout=timeout, check=check).stdout.strip()


def succeeds(args: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> bool:
    try:
        return run(args, timeout=timeout, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def require_engine() -> None:
    if shutil.which("docker") is None:
        raise Unavailable("the docker CLI is not on PATH")
    try:
        info = run(["docker", "info"], timeout=30, check=False)
    except subprocess.TimeoutExpired:
        raise Unavailable("`docker info` did not answer within 30 s") from None
    if info.returncode != 0:
        detail = (info.stderr.strip().splitlines() or ["no output"])[-1]
        raise Unavailable(
            f"no Docker engine answers (`docker info`: {detail}); "
            "scripts/start-docker.sh starts an installed one"
        )


# --- building the worker image -------------------------------------------------------------


@dataclass(frozen=True)
class Builder:
    """How this machine builds worker/Dockerfile, which needs BuildKit (or podman) for its
    secret mounts."""

    description: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    via_podman: bool = False

    @property
    def engine(self) -> str:
        return "podman" if self.via_podman else "docker"


def _docker_clis() -> Iterator[str]:
    """Every docker CLI on PATH, in PATH order: the first may lack buildx where a later,
    older one can still drive the engine's built-in BuildKit."""
    seen = set()
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory or ".") / "docker"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            real = candidate.resolve()
            if real not in seen:
                seen.add(real)
                yield str(candidate)


def find_builder() -> Builder:
    """The first that works of: docker with buildx, a docker CLI old enough to drive the
    engine's BuildKit itself, podman. BUILDER=docker or =podman narrows the choice."""
    wanted = os.environ.get(BUILDER, "")
    if wanted not in ("", "docker", "podman"):
        raise ValueError(f"{BUILDER} must be docker or podman, not {wanted!r}")
    for cli in _docker_clis() if wanted != "podman" else ():
        if succeeds([cli, "buildx", "version"], timeout=30):
            return Builder(f"{cli} build (BuildKit via buildx)", (cli, "build"))
        version = run([cli, "version", "--format", "{{.Client.Version}}"], check=False).stdout
        major = re.match(r"\s*(\d+)\.", version)
        # Clients before 23 talk to the engine's BuildKit themselves; later ones need buildx.
        if major and int(major.group(1)) < 23:
            return Builder(
                f"{cli} build (the engine's BuildKit, DOCKER_BUILDKIT=1)",
                (cli, "build"),
                {"DOCKER_BUILDKIT": "1"},
            )
    if wanted != "docker" and shutil.which("podman"):
        # Host networking: podman's own build network is what fails on some machines.
        return Builder(
            "podman build, then podman save | docker load",
            ("podman", "build", "--network", "host", "--format", "docker"),
            via_podman=True,
        )
    raise Unavailable(
        "worker/Dockerfile needs BuildKit and there is no docker buildx, no docker CLI older "
        f"than 23 and no podman ({BUILDER}={wanted or 'unset'})"
    )


def dockerfile_arg(name: str) -> str:
    """A build argument's default in worker/Dockerfile: the base users get."""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        found = re.fullmatch(rf"ARG {name}=(\S+)", line.strip())
        if found:
            return found.group(1)
    raise LookupError(f"no `ARG {name}=` in {DOCKERFILE}")


def image_present(engine: str, image: str) -> bool:
    """Here already, or pulled now."""
    if succeeds([engine, "image", "inspect", image], timeout=30):
        return True
    return succeeds([engine, "pull", image], timeout=PULL_TIMEOUT)


def local_bases(names: Sequence[str], *, podman: bool = False) -> dict[str, str]:
    """Stand-in base images from e2e/images/build-bases.sh, for machines that cannot pull."""
    if not names:
        return {}
    args = [str(BUILD_BASES), *(["--podman"] if podman else []), *names]
    done = run(args, timeout=BUILD_TIMEOUT, check=False)
    if done.returncode == CANNOT_BUILD:
        raise Unavailable(f"cannot pull {', '.join(names)}, nor build stand-ins: {done.stderr}")
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_BASES} failed:\n{done.stderr}")
    return dict(zip(names, done.stdout.split(), strict=True))


def pip_secrets() -> list[str]:
    """The machine's pip settings and CA bundle, handed to the build as optional secrets:
    what it takes to reach PyPI from here, kept out of the image's layers."""
    configs = [os.environ.get("PIP_CONFIG_FILE", ""), "/etc/pip.conf", "/etc/xdg/pip/pip.conf"]
    configs += [str(Path.home() / ".config/pip/pip.conf"), str(Path.home() / ".pip/pip.conf")]
    secrets = []
    pip_conf = next((path for path in configs if path and Path(path).is_file()), None)
    if pip_conf:
        secrets += ["--secret", f"id=pipconf,src={pip_conf}"]
    cacert = Path("/etc/ssl/certs/ca-certificates.crt")
    if cacert.is_file():
        secrets += ["--secret", f"id=cacert,src={cacert}"]
    return secrets


def image_id(engine: str, image: str) -> str | None:
    done = run([engine, "image", "inspect", "--format", "{{.Id}}", image], check=False)
    return done.stdout.strip().removeprefix("sha256:") if done.returncode == 0 else None


def build_image(builder: Builder, tag: str, build_args: Mapping[str, str]) -> None:
    """worker/Dockerfile built as users build it, with the base only chosen by build argument."""
    before = image_id("docker", tag)
    before_built = image_id(builder.engine, tag) if builder.via_podman else None
    argv = [*builder.command, "--tag", tag, *pip_secrets()]
    for name, value in build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    run([*argv, str(DOCKERFILE.parent)], env=builder.env, timeout=BUILD_TIMEOUT)
    if builder.via_podman:
        built = image_id("podman", tag)
        # Same config, same ID in both engines: a warm run skips the copy.
        if built != image_id("docker", tag):
            _podman_to_docker(tag)
        if before_built and before_built != built:
            run(["podman", "rmi", before_built], check=False)
    if before and before != image_id("docker", tag):
        run(["docker", "rmi", before], check=False)  # superseded; in use means it stays


def _podman_to_docker(tag: str) -> None:
    with subprocess.Popen(
        ["podman", "save", "--format", "docker-archive", tag], stdout=subprocess.PIPE
    ) as save:
        load = subprocess.run(
            ["docker", "load"],
            stdin=save.stdout,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            check=False,
        )
        if save.stdout is not None:
            save.stdout.close()
        saved = save.wait(timeout=BUILD_TIMEOUT)
    if saved != 0 or load.returncode != 0:
        raise RuntimeError(f"podman save | docker load failed ({saved}): {load.stderr}")


# --- pods as containers --------------------------------------------------------------------


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


def _env(container: Manifest, objects: list[Manifest]) -> dict[str, str]:
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
    pod: Manifest, container: Manifest, objects: list[Manifest], scratch: Path
) -> list[str]:
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    options = []
    for mount in container.get("volumeMounts", []):
        if "subPath" in mount:
            raise ValueError(f"unsupported subPath mount {mount}")
        volume, path = volumes[mount["name"]], mount["mountPath"]
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


def pod_spec(pod: Manifest, objects: list[Manifest], scratch: Path) -> Spec:
    """The container of `pod` (a PodSpec) as a docker run; config files go under `scratch`."""
    [container] = pod["containers"]  # one container per pod here; more would need a pod
    if pod.get("initContainers") or pod.get("hostNetwork") or pod.get("hostPID"):
        raise ValueError("init containers and host namespaces are not carried over")
    env = _env(container, objects)
    user, non_root, security = _security(pod, container)
    command = [expand(arg, env) for arg in container.get("command", [])]
    args = [expand(arg, env) for arg in container.get("args", [])]
    probe = container.get("readinessProbe", {})
    if probe and "exec" not in probe:
        raise ValueError(f"only exec readiness probes are carried over, not {probe}")
    options = [*security, *_volumes(pod, container, objects, scratch), *_limits(container)]
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


def image_user(image: str) -> str:
    return docker("image", "inspect", "--format", "{{.Config.User}}", image)


def effective_uid(spec: Spec) -> int | None:
    """The UID the process runs as, if known without starting it: what runAsNonRoot checks."""
    user = spec.user or image_user(spec.image)
    uid = user.split(":", 1)[0]
    return int(uid) if uid.isdigit() else None


# --- running ------------------------------------------------------------------------------


class Containers:
    """Containers on one user-defined network; everything is labelled with the run for cleanup."""

    def __init__(self, prefix: str) -> None:
        self.run_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.network = self.run_id
        self.names: list[str] = []
        docker("network", "create", "--label", f"{LABEL}={self.run_id}", self.network)

    def start(self, spec: Spec, name: str, aliases: Sequence[str] = ()) -> str:
        if spec.run_as_non_root:
            uid = effective_uid(spec)
            # The kubelet refuses to start such a container; so do we.
            assert uid is not None and uid != 0, f"{name}: runAsNonRoot, but runs as {uid}"
        full = f"{self.run_id}-{name}"
        argv = ["docker", "run", "--detach", "--pull", "never", "--name", full]
        argv += ["--label", f"{LABEL}={self.run_id}", "--network", self.network]
        argv += [arg for alias in aliases for arg in ("--network-alias", alias)]
        argv += ["--user", spec.user] if spec.user else []
        # Names only: the values reach docker through its environment, never its command line.
        argv += [arg for key in spec.env for arg in ("--env", key)]
        argv += list(spec.options)
        argv += ["--entrypoint", spec.entrypoint] if spec.entrypoint is not None else []
        argv += [spec.image, *(spec.args or ())]
        self.names.append(full)
        run(argv, env=dict(spec.env))
        return full

    def wait_ready(self, name: str, spec: Spec, timeout: float) -> None:
        """Until the pod's own readiness probe passes, as a Service would wait to route to it."""
        assert spec.readiness, f"{spec.name} has no readiness probe"
        deadline = time.monotonic() + timeout
        while not succeeds(["docker", "exec", name, *spec.readiness], timeout=30):
            assert time.monotonic() < deadline, f"{name} not ready within {timeout:.0f} s"
            assert self.state(name) == "running", f"{name} stopped: {self.state(name)}"
            time.sleep(0.5)

    def run_in(
        self, name: str, command: Sequence[str], **env: str
    ) -> subprocess.CompletedProcess[str]:
        """`command` inside the running container `name`, with `env` added to its environment."""
        options = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
        return run(["docker", "exec", *options, name, *command], check=False)

    def state(self, name: str) -> str:
        done = run(["docker", "inspect", "--format", "{{.State.Status}}", name], check=False)
        return done.stdout.strip() if done.returncode == 0 else "not created"

    def wait(self, name: str, timeout: float) -> int:
        """The exit code, once the container ends."""
        try:
            return int(docker("wait", name, timeout=timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running after {timeout:.0f} s") from None

    def stdout(self, name: str) -> str:
        return run(["docker", "logs", name]).stdout

    def logs(self, name: str) -> str:
        done = run(["docker", "logs", name], check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        for name in self.names:
            run(["docker", "rm", "--force", "--volumes", name], check=False)
        run(["docker", "network", "rm", self.network], check=False)


@contextmanager
def containers(prefix: str) -> Iterator[Containers]:
    """Containers that are gone afterwards, whatever happened; their logs printed first, so
    that a failing test shows them."""
    made = Containers(prefix)
    try:
        yield made
    finally:
        for name in made.names:
            print(f"----- docker logs {name} ({made.state(name)}) -----\n{made.logs(name)}")
        made.remove()
