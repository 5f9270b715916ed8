"""The system as containers on a local Docker engine, under the rendered dev overlay's constraints.

The worker image is built from worker/Dockerfile as users build it; only its base is chosen,
through the PYTHON_IMAGE build argument: the pinned upstream image where it can be pulled, else a
local Debian one from e2e/images/build-bases.sh. Redis, the seed and the workers then run as the
dev overlay's pods would: same user and groups, read-only root filesystem with the emptyDirs as
tmpfs, no capabilities, no-new-privileges, limits, environment, and Redis answering to its
Service name `redis` with the password from the Secret.

Skips, saying why, where no engine or builder can be had; E2E_DOCKER=1 makes that a failure.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import pytest
from containers import FORCE, Containers, Unavailable, containers, docker, require_engine
from images import build_image, dockerfile_arg, find_builder, image_present, local_bases
from podspec import Spec, pod_spec
from rendering import REPO, Manifest, find, render, seed_items
from worklog import QUEUE_EMPTY, assert_all_done, assert_drained, items_worked_on

# The first test also pays for the base images and the image build, cold.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

OVERLAY = "dev"
TAG = "localhost/job-wq-2-e2e/worker:test"
# The only changes to the rendered environment: the tutorial's 10 s of "work" per item shortened
# to keep the run short, and (kill case only) a short lease so the killed worker's item comes
# back in seconds rather than the overlay's minute.
WORK_SECONDS = "2"
KILL_LEASE_SECONDS = "6"
READY_TIMEOUT = 60
SEED_TIMEOUT = 180
# 9 items of 2 s over 2 workers is about 10 s; the rest is start-up and, when killed, the lease.
WORKER_TIMEOUT = 180
# A slim Python base is about 130 MB; a full one (about 1 GB) or a left-over toolchain is not.
MAX_IMAGE_MB = 200
KILLED = 128 + 9  # SIGKILL


def unavailable(reason: str) -> NoReturn:
    if os.environ.get(FORCE) == "1":
        pytest.fail(f"container e2e cannot run: {reason}")
    pytest.skip(f"{reason} (set {FORCE}=1 to fail instead of skipping)")


def report(request: pytest.FixtureRequest, line: str) -> None:
    """Numbers the run should show even when it passes: written past pytest's capture."""
    plugins = request.config.pluginmanager
    terminal, capture = plugins.getplugin("terminalreporter"), plugins.getplugin("capturemanager")
    if terminal is None or capture is None:  # e.g. an xdist worker: no terminal of its own
        print(line)
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(f"\n[e2e-docker] {line}")


@dataclass(frozen=True)
class System:
    image: str
    redis: Spec
    seed: Spec
    worker: Spec
    parallelism: int
    worker_user: str


@pytest.fixture(scope="module")
def system(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> System:
    """The dev overlay's pods as container specs, and the worker image they run."""
    objects = render(OVERLAY)
    scratch = tmp_path_factory.mktemp("volumes")

    def template(job: str) -> Manifest:
        return find(objects, "Job", job)["spec"]["template"]["spec"]  # type: ignore[no-any-return]

    redis = pod_spec(find(objects, "Pod", "redis")["spec"], objects, scratch)
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
    context = template("job-wq-2")["securityContext"]
    return System(
        image=TAG,
        redis=redis.with_image(local.get("redis", redis.image)),
        seed=pod_spec(template("job-wq-2-seed"), objects, scratch).with_image(TAG),
        worker=pod_spec(template("job-wq-2"), objects, scratch)
        .with_image(TAG)
        .with_env(WORK_SECONDS=WORK_SECONDS),
        parallelism=int(worker_job["spec"]["parallelism"]),
        worker_user=f"{context['runAsUser']}:{context['runAsGroup']}",
    )


@pytest.fixture
def running(system: System) -> Iterator[Containers]:
    with containers("job-wq-2-e2e") as made:
        yield made


def start_redis(made: Containers, system: System) -> str:
    # The Service's name, as the settings ConfigMap's REDIS_URL expects it.
    name = made.start(system.redis, "redis", aliases=["redis"])
    made.wait_ready(name, system.redis, READY_TIMEOUT)
    return name


def finish(made: Containers, spec: Spec, name: str) -> tuple[int, str]:
    """Run a one-off container of `spec` to its end: its exit code and its container name."""
    started = made.start(spec, name)
    return made.wait(started, SEED_TIMEOUT), started


def queue_status(made: Containers, system: System) -> dict[str, Any]:
    code, name = finish(made, system.worker.with_args("status", "--json"), "status")
    assert code == 0, f"rediswq status exited {code}"
    return json.loads(made.stdout(name))  # type: ignore[no-any-return]


def test_the_image_is_slim_non_root_and_runs(
    system: System, running: Containers, request: pytest.FixtureRequest
) -> None:
    image = system.image
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image))
    assert re.fullmatch(r"[1-9]\d*:\d+", config["User"]), f"not a numeric non-root user: {config}"
    assert config["User"] == system.worker_user, "image user differs from the Job's runAsUser"
    assert config["Entrypoint"] == ["rediswq"]
    assert config["Cmd"] == ["worker"]
    assert {"PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"} <= set(config["Env"])

    # Without --user, as a runtime that only knows the image would start it.
    ids = docker("run", "--rm", "--read-only", "--cap-drop", "ALL", "--entrypoint", "python3",
                 image, "-c", "import os; print(f'{os.getuid()}:{os.getgid()}')")  # fmt: skip
    assert ids == system.worker_user, f"the image runs as {ids}"

    code, name = finish(running, system.worker.with_args("--help"), "help")
    assert code == 0, f"rediswq --help exited {code}"
    usage = running.stdout(name)
    assert "worker" in usage and "seed" in usage, usage

    # The image holds what worker/requirements.txt pins (the build checks the hashes).
    locked = dict(
        re.findall(r"^([\w.-]+)==(\S+)", (REPO / "worker/requirements.txt").read_text(), re.M)
    )
    show = "import importlib.metadata as m; print(m.version('redis'), m.version('hiredis'))"
    versions = docker("run", "--rm", "--entrypoint", "python3", image, "-c", show)
    assert versions.split() == [locked["redis"], locked["hiredis"]], versions

    found = unwanted_files(image)
    assert not found, f"compilers or package caches in the image: {found[:20]}"

    size = int(docker("image", "inspect", "--format", "{{.Size}}", image))
    report(request, f"worker image size: {size / 1e6:.1f} MB ({size} bytes)")
    assert size < MAX_IMAGE_MB * 1e6, f"image is {size / 1e6:.0f} MB"


# Toolchains by their drivers and back ends; caches by where pip and apt leave them.
COMPILER = re.compile(
    r"(usr/(local/)?)?s?bin/([\w.-]+-)?(gcc|g\+\+|cc|c\+\+|clang|clang\+\+|tcc|ld(\.(bfd|gold|lld))?|as|make)"
    r"(-[\d.]+)?|.*/(cc1|cc1plus|collect2)"
)
CACHE = re.compile(
    r"(.*/)?\.cache/pip(/.*)?|root/\.cache/.+|var/cache/apt/archives/.+\.deb"
    r"|var/lib/apt/lists/[^/]+_(Packages|Sources|InRelease|Release)(\.\w+)?|tmp/.+"
)


def unwanted_files(image: str) -> list[str]:
    """Paths of the image's filesystem that are compilers or package caches."""
    created = docker("create", image)
    try:
        exported = subprocess.run(
            ["docker", "export", created], capture_output=True, timeout=300, check=True
        ).stdout
    finally:
        docker("rm", created)
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        names = [member.name.removeprefix("./") for member in tar.getmembers()]
    assert any(name.endswith("bin/rediswq") for name in names), "export looks empty"
    return [name for name in names if COMPILER.fullmatch(name) or CACHE.fullmatch(name)]


def test_the_workers_drain_the_queue(system: System, running: Containers) -> None:
    # Workers first: they wait for Redis (not yet resolvable by name) and then for the seal.
    workers = [running.start(system.worker, f"worker-{n}") for n in range(system.parallelism)]
    redis = start_redis(running, system)
    code, _ = finish(running, system.seed, "seed")
    assert code == 0, f"seed exited {code}"
    codes = {name: running.wait(name, WORKER_TIMEOUT) for name in workers}
    assert set(codes.values()) == {0}, f"worker exit codes: {codes}"
    logs = {name: running.stdout(name) for name in workers}
    items = seed_items()
    assert_drained(logs, items)
    status = queue_status(running, system)
    assert status["drained"] and status["done"] == len(items), status

    # The password is required, not merely accepted: without it Redis refuses to answer.
    anonymous = running.run_in(redis, ["redis-cli", "-e", "ping"], REDISCLI_AUTH="")
    assert anonymous.returncode != 0 and "NOAUTH" in anonymous.stdout + anonymous.stderr, anonymous


def first_item_in_progress(made: Containers, workers: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in workers:
            worked = items_worked_on(made.stdout(name))
            assert len(worked) <= 1, f"{name} was past its first item before it could be killed"
            if worked:
                return name
        time.sleep(0.1)
    raise AssertionError(f"no worker began an item within {timeout:.0f} s")


def test_a_killed_worker_loses_no_item(system: System, running: Containers) -> None:
    worker = system.worker.with_env(LEASE_SECONDS=KILL_LEASE_SECONDS)
    workers = [running.start(worker, f"worker-{n}") for n in range(system.parallelism)]
    start_redis(running, system)
    code, _ = finish(running, system.seed, "seed")
    assert code == 0, f"seed exited {code}"

    victim = first_item_in_progress(running, workers, SEED_TIMEOUT)
    # SIGKILL: no chance to hand the item back; only its lease running out returns it.
    docker("kill", "--signal", "KILL", victim)
    assert running.wait(victim, 30) == KILLED
    before = running.stdout(victim)
    [held] = items_worked_on(before)
    assert QUEUE_EMPTY not in before
    # restartPolicy Never: the Job controller starts a new pod; here, a fresh container.
    survivors = [name for name in workers if name != victim]
    survivors.append(running.start(worker, f"worker-{system.parallelism}"))

    codes = {name: running.wait(name, WORKER_TIMEOUT) for name in survivors}
    assert set(codes.values()) == {0}, f"worker exit codes: {codes}"
    logs = {name: running.stdout(name) for name in survivors}
    items = seed_items()
    assert_all_done({**logs, victim: before}, items)
    again = [name for name, log in logs.items() if held in items_worked_on(log)]
    assert again, f"{held!r}, held by the killed {victim}, was never worked on again"
    # The killed worker completed nothing, so the others did every item, once.
    assert_drained(logs, items)
    status = queue_status(running, system)
    assert status["drained"] and status["done"] == len(items), status
    assert status["reclaimed"] >= 1, f"the killed worker's lease was never reclaimed: {status}"
