"""scripts/build-image.sh, which `make image`, `make kind-up` and the e2e tests build with: which
builder it finds among the docker CLIs on PATH, what it says when there is none, and the build it
runs. The docker CLIs here are stand-ins that record their arguments; the real build is
`make e2e-docker`'s."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from rendering import REPO

SCRIPT = REPO / "scripts" / "build-image.sh"
BASE = "python:3.11.16-slim-bookworm@sha256:" + "5" * 64


def docker_cli(directory: Path, version: str, *, buildx: bool, base_here: bool = True) -> Path:
    """A docker CLI of `version` in `directory`, with or without buildx, that logs each call."""
    directory.mkdir(parents=True)
    cli = directory / "docker"
    cli.write_text(
        f"""#!/bin/sh
echo "$0 $*" >> "$CALLS"
case "$1" in
buildx) exit {0 if buildx else 1} ;;
version) echo {version} ;;
image) exit {0 if base_here else 1} ;;
pull) echo 'Error response from daemon: Get "https://registry-1.docker.io/v2/": no such host' >&2
  exit 1 ;;
esac
""",
        encoding="utf-8",
    )
    cli.chmod(0o755)
    return cli


def build_image(
    tmp_path: Path, path: list[Path], *args: str, pip_conf: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The script with only `path` on PATH (and no podman), as bash runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("IMAGE_BUILDER", "PIP_CONFIG_FILE")}
    env |= {"PATH": os.pathsep.join(map(str, path)), "CALLS": str(tmp_path / "calls")}
    if pip_conf:
        env["PIP_CONFIG_FILE"] = str(pip_conf)
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def context(tmp_path: Path) -> Path:
    """A build context whose Dockerfile has a Python base, as worker/Dockerfile has."""
    directory = tmp_path / "context"
    directory.mkdir()
    (directory / "Dockerfile").write_text(f"ARG PYTHON_IMAGE={BASE}\nFROM ${{PYTHON_IMAGE}}\n")
    return directory


def test_a_later_docker_cli_on_path_builds_when_the_first_lacks_buildx(tmp_path: Path) -> None:
    new = docker_cli(tmp_path / "local", "28.2.2", buildx=False)
    old = docker_cli(tmp_path / "usr", "20.10.24+dfsg1", buildx=False)
    done = build_image(tmp_path, [new.parent, old.parent], "--which")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"docker\t{old} build (the engine's BuildKit, DOCKER_BUILDKIT=1)\n"


def test_a_docker_cli_with_buildx_is_taken_first(tmp_path: Path) -> None:
    old = docker_cli(tmp_path / "usr", "20.10.24", buildx=False)
    new = docker_cli(tmp_path / "local", "28.2.2", buildx=True)
    done = build_image(tmp_path, [new.parent, old.parent], "--which")
    assert done.stdout == f"docker\t{new} build (BuildKit via buildx)\n", done.stderr


def test_without_buildx_it_says_in_one_line_what_is_missing_and_where_to_get_it(
    tmp_path: Path,
) -> None:
    new = docker_cli(tmp_path / "local", "28.2.2", buildx=False)
    done = build_image(tmp_path, [new.parent], "image:dev", str(context(tmp_path)))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("build-image.sh: docker needs its buildx plugin"), done.stderr
    assert "docker-buildx" in done.stderr
    assert " build " not in (tmp_path / "calls").read_text(), "it must not try to build"


def test_it_builds_with_the_pip_secrets_and_build_args(tmp_path: Path) -> None:
    cli = docker_cli(tmp_path / "local", "28.2.2", buildx=True)
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text("[global]\n", encoding="utf-8")
    built = context(tmp_path)
    env_path = [cli.parent, Path("/usr/bin")]  # env(1), sed(1); /usr/bin's docker comes after
    done = build_image(tmp_path, env_path, "image:dev", str(built), "A=1", pip_conf=pip_conf)
    assert done.returncode == 0, done.stderr
    *_, build = (tmp_path / "calls").read_text().splitlines()
    assert build.startswith(f"{cli} build --provenance=false --sbom=false --tag image:dev ")
    assert f"--secret id=pipconf,src={pip_conf}" in build
    assert build.endswith(f"--build-arg A=1 {built}"), build


def test_a_base_that_cannot_be_pulled_is_named_in_one_line(tmp_path: Path) -> None:
    cli = docker_cli(tmp_path / "local", "28.2.2", buildx=True, base_here=False)
    built = context(tmp_path)
    done = build_image(tmp_path, [cli.parent, Path("/usr/bin")], "image:dev", str(built))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr
    assert f"cannot pull the base image {BASE} (Error response from daemon: " in done.stderr
    assert "PYTHON_IMAGE=" in done.stderr
    assert " build " not in (tmp_path / "calls").read_text(), "it must not try to build"
