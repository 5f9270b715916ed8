"""Building the worker image from worker/Dockerfile as users build it, with whatever builder
this machine has (docker buildx, an older docker CLI's BuildKit, or podman), and getting its bases.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from containers import Unavailable, run, succeeds
from rendering import REPO

DOCKERFILE = REPO / "worker" / "Dockerfile"
BUILD_BASES = REPO / "e2e" / "images" / "build-bases.sh"
# Picks the image builder (docker or podman) instead of the first that works.
BUILDER = "E2E_DOCKER_BUILDER"
# build-bases.sh: "cannot build a base image here" (not root, no debootstrap).
CANNOT_BUILD = 77

PULL_TIMEOUT = 600.0
# Cold: debootstrap of a base, or pip downloading the dependencies.
BUILD_TIMEOUT = 900.0


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


def build_image(
    builder: Builder, tag: str, build_args: Mapping[str, str], context: Path = DOCKERFILE.parent
) -> None:
    """worker/Dockerfile (or `context`'s) built as users build it, with the base only chosen by
    build argument."""
    before = image_id("docker", tag)
    before_built = image_id(builder.engine, tag) if builder.via_podman else None
    argv = [*builder.command, "--tag", tag, *pip_secrets()]
    for name, value in build_args.items():
        argv += ["--build-arg", f"{name}={value}"]
    run([*argv, str(context)], env=builder.env, timeout=BUILD_TIMEOUT)
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
