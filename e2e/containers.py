"""The container e2e's machinery: a Docker engine, and pods run as containers on one network.

How a pod spec becomes a `docker run` is e2e/podspec.py; how the worker image is built,
e2e/images.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from podspec import Spec

# Set in CI, where a missing engine or builder is a broken machine, not a reason to skip.
FORCE = "E2E_DOCKER"
LABEL = "io.github.job-wq-2.e2e-run"

COMMAND_TIMEOUT = 120.0
KILLED = 128 + 9  # a container's exit code after SIGKILL (`docker kill`)


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
        self.volumes: list[str] = []
        docker("network", "create", "--label", f"{LABEL}={self.run_id}", self.network)

    def volume(self, name: str) -> str:
        """A new Docker volume, removed with the containers: what a PersistentVolumeClaim is to
        the Pods that mount it in turn."""
        full = f"{self.run_id}-{name}"
        docker("volume", "create", "--label", f"{LABEL}={self.run_id}", full)
        self.volumes.append(full)
        return full

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
        for volume in self.volumes:
            run(["docker", "volume", "rm", "--force", volume], check=False)
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
