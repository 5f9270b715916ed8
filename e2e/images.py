"""Building the worker image from worker/Dockerfile as users build it, with the builder this
machine has (scripts/build-image.sh, which `make image` runs too), and getting its bases.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from containers import Unavailable, run, succeeds
from rendering import REPO

DOCKERFILE = REPO / "worker" / "Dockerfile"
BUILD_IMAGE = REPO / "scripts" / "build-image.sh"
BUILD_BASES = REPO / "e2e" / "images" / "build-bases.sh"
# build-bases.sh: "cannot build a base image here" (not root, no debootstrap).
CANNOT_BUILD = 77

PULL_TIMEOUT = 600.0
# Cold: debootstrap of a base, or pip downloading the dependencies.
BUILD_TIMEOUT = 900.0


@dataclass(frozen=True)
class Builder:
    """The builder scripts/build-image.sh picks, and the engine whose store the image lands in."""

    engine: str  # docker or podman
    description: str

    @property
    def via_podman(self) -> bool:
        return self.engine == "podman"


def find_builder() -> Builder:
    """What scripts/build-image.sh builds with here (IMAGE_BUILDER=docker or =podman narrows the
    choice); Unavailable, with the script's one line, when nothing can."""
    done = run([str(BUILD_IMAGE), "--which"], check=False)
    if done.returncode != 0:
        raise Unavailable(done.stderr.strip())
    engine, description = done.stdout.rstrip("\n").split("\t")
    return Builder(engine, description)


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
    args = [f"{name}={value}" for name, value in build_args.items()]
    run(
        [str(BUILD_IMAGE), tag, str(context), *args],
        env={"IMAGE_BUILDER": builder.engine},
        timeout=BUILD_TIMEOUT,
    )
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
