"""The system of the container e2e: the dev overlay's pods as containers on a local Docker engine.

The worker image is built from worker/Dockerfile as users build it; only its base is chosen,
through the PYTHON_IMAGE build argument: the pinned upstream image where it can be pulled, else a
local Debian one from e2e/images/build-bases.sh. Redis, the seed and the workers then run as the
dev overlay's pods would: same user and groups, read-only root filesystem with the emptyDirs as
tmpfs and Redis's volume claim as a Docker volume, no capabilities, no-new-privileges, limits,
environment, and Redis answering to its Service name `redis` with the password from the Secret.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
from containers import FORCE, Containers, Unavailable, require_engine
from images import build_image, dockerfile_arg, find_builder, image_present, local_bases
from podspec import Spec, pod_spec, stateful_pod_spec
from rendering import Manifest, find, render

OVERLAY = "dev"
# E2E_WORKER_TAG: another name, so that checkouts tested side by side do not share one image.
TAG = os.environ.get("E2E_WORKER_TAG", "localhost/job-wq-2-e2e/worker:test")
# The one change to the rendered environment (tests may add theirs): the tutorial's 10 s of
# "work" per item shortened to keep the run short.
WORK_SECONDS = "2"
READY_TIMEOUT = 60
SEED_TIMEOUT = 180
# 9 items of 2 s over 2 workers is about 10 s; the rest is start-up and, when killed, the lease.
WORKER_TIMEOUT = 180


def unavailable(reason: str) -> NoReturn:
    if os.environ.get(FORCE) == "1":
        pytest.fail(f"container e2e cannot run: {reason}")
    pytest.skip(f"{reason} (set {FORCE}=1 to fail instead of skipping)")


def report(request: pytest.FixtureRequest, line: str, tag: str = "e2e-docker") -> None:
    """Numbers the run should show even when it passes: written past pytest's capture."""
    plugins = request.config.pluginmanager
    terminal, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if terminal is None or capture is None:  # e.g. an xdist worker: no terminal of its own
        print(line)
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(f"\n[{tag}] {line}")


@dataclass(frozen=True)
class System:
    image: str
    redis: Spec
    seed: Spec
    worker: Spec
    parallelism: int
    worker_user: str


def build_system(request: pytest.FixtureRequest, scratch: Path) -> System:
    """The dev overlay's pods as container specs, and the worker image they run, built now."""
    objects = render(OVERLAY)

    redis = stateful_pod_spec(find(objects, "StatefulSet", "redis"), objects, scratch)
    python = dockerfile_arg("PYTHON_IMAGE")
    try:
        require_engine()
        builder = find_builder()
        start = time.monotonic()
        wanted = {"python": (builder.engine, python), "redis": ("docker", redis.image)}
        missing = [name for name, (engine, ref) in wanted.items() if not image_present(engine, ref)]
        local = local_bases(missing, podman=builder.via_podman)
    except Unavailable as exc:
        unavailable(str(exc))
    for name, (_, ref) in wanted.items():
        shown = f"{local[name]} (local stand-in: {ref} cannot be pulled)" if name in local else ref
        report(request, f"{name} image: {shown}")
    report(request, f"base images ready in {time.monotonic() - start:.1f} s")

    start = time.monotonic()
    build_image(builder, TAG, {"PYTHON_IMAGE": local["python"]} if "python" in local else {})
    took = time.monotonic() - start
    report(request, f"worker image built in {took:.1f} s by {builder.description}")

    worker_job = find(objects, "Job", "job-wq-2")
    context = template(objects, "job-wq-2")["securityContext"]
    seed, worker = job_specs(objects, scratch)
    return System(
        image=TAG,
        redis=redis.with_image(local.get("redis", redis.image)),
        seed=seed,
        worker=worker,
        parallelism=int(worker_job["spec"]["parallelism"]),
        worker_user=f"{context['runAsUser']}:{context['runAsGroup']}",
    )


def template(objects: list[Manifest], job: str) -> Manifest:
    return find(objects, "Job", job)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def job_specs(objects: list[Manifest], scratch: Path) -> tuple[Spec, Spec]:
    """The seed's and a worker's container, as the rendered objects (any items) define them."""
    seed = pod_spec(template(objects, "job-wq-2-seed"), objects, scratch).with_image(TAG)
    worker = pod_spec(template(objects, "job-wq-2"), objects, scratch).with_image(TAG)
    return seed, worker.with_env(WORK_SECONDS=WORK_SECONDS)


def redis_on(system: System, claim: str, volume: str, scratch: Path) -> Spec:
    """The Redis pod of `system` with its volume claim `claim` on the Docker volume `volume`."""
    objects = render(OVERLAY)
    statefulset = find(objects, "StatefulSet", "redis")
    spec = stateful_pod_spec(statefulset, objects, scratch, {claim: volume})
    return spec.with_image(system.redis.image)


def start_redis(
    made: Containers, system: System, spec: Spec | None = None, name: str = "redis"
) -> str:
    """A Redis container, `spec` or the system's, ready under the Service's name `redis`, as the
    settings ConfigMap's REDIS_URL expects it."""
    spec = spec or system.redis
    started = made.start(spec, name, aliases=["redis"])
    made.wait_ready(started, spec, READY_TIMEOUT)
    return started


def finish(made: Containers, spec: Spec, name: str) -> tuple[int, str]:
    """Run a one-off container of `spec` to its end: its exit code and its container name."""
    started = made.start(spec, name)
    return made.wait(started, SEED_TIMEOUT), started


def queue_status(made: Containers, system: System) -> dict[str, Any]:
    code, name = finish(made, system.worker.with_args("status", "--json"), "status")
    assert code == 0, f"rediswq status exited {code}"
    return json.loads(made.stdout(name))  # type: ignore[no-any-return]
