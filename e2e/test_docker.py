"""The system as containers on a local Docker engine (e2e/dockersystem.py says how they run): the
image, a drained queue, a killed worker.

Skips, saying why, where no engine or builder can be had; E2E_DOCKER=1 makes that a failure.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import time
from collections import Counter
from pathlib import Path

import pytest
from containers import KILLED, Containers, docker
from dockersystem import (
    SEED_TIMEOUT,
    WORKER_TIMEOUT,
    System,
    finish,
    job_specs,
    queue_status,
    report,
    start_redis,
)
from rendering import REPO, manifests_copy, render_tree, seed_items
from worklog import QUEUE_EMPTY, assert_all_done, assert_drained, items_worked_on

# The first test also pays for the base images and the image build, cold.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

# The tutorial's lease is a minute; the kill case shortens it so that the killed worker's item
# comes back in seconds.
KILL_LEASE_SECONDS = "6"
# A slim Python base is about 130 MB; a full one (about 1 GB) or a left-over toolchain is not.
MAX_IMAGE_MB = 200


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


def test_json_logs_parse_and_metrics_answer_in_the_restricted_container(
    system: System, running: Containers, tmp_path: Path
) -> None:
    # The dev overlay with components/metrics: METRICS_PORT and the named port come from it.
    root = manifests_copy(tmp_path / "repo")
    with_metrics = root / "overlays" / "dev" / "kustomization.yaml"
    with_metrics.write_text(
        with_metrics.read_text().replace(
            "  - ../../components/namespace\n",
            "  - ../../components/namespace\n  - ../../components/metrics\n",
        )
    )
    _, worker = job_specs(render_tree(root, "dev"), tmp_path / "volumes")
    port = int(worker.env["METRICS_PORT"])
    worker = worker.with_env(LOG_FORMAT="json")
    name = running.start(worker, "worker-json")
    start_redis(running, system)
    code, _ = finish(running, system.seed, "seed")
    assert code == 0, f"seed exited {code}"

    # Scraped from inside the container (its loopback), while it works on an item.
    scrape = (f"import urllib.request; print(urllib.request.urlopen("
              f"'http://127.0.0.1:{port}/metrics', timeout=10).read().decode())")  # fmt: skip
    deadline = time.monotonic() + SEED_TIMEOUT
    while not items_worked_on(running.stdout(name)):
        assert time.monotonic() < deadline, running.logs(name)
        time.sleep(0.2)
    scraped = running.run_in(name, ["python3", "-c", scrape])
    assert scraped.returncode == 0, scraped.stderr
    assert 'rediswq_items_in_flight{queue="job2"} 1.0' in scraped.stdout, scraped.stdout

    assert running.wait(name, WORKER_TIMEOUT) == 0, running.logs(name)
    log = running.logs(name)  # stderr too: every line must be JSON
    records = [json.loads(line) for line in log.splitlines()]
    stable = {"time", "level", "event", "message", "queue", "run", "worker"}
    assert all(stable <= record.keys() for record in records), records
    assert {r["queue"] for r in records} == {"job2"} and all(r["run"] for r in records)
    worked = [r["item"] for r in records if r["event"] == "working"]
    assert sorted(worked) == sorted(seed_items())
    assert_drained({name: log}, seed_items())


STOPPED = 128 + 15  # SIGTERM
STOP_ROUNDS = 4


def working(made: Containers, workers: list[str], timeout: float) -> None:
    """Once each of `workers` has begun an item."""
    deadline = time.monotonic() + timeout
    while not all(items_worked_on(made.stdout(name)) for name in workers):
        assert time.monotonic() < deadline, f"{workers} did not all begin an item"
        time.sleep(0.1)


def test_workers_stopped_again_and_again_lose_nothing_and_leave_their_attempts(
    system: System, running: Containers, tmp_path: Path
) -> None:
    """What an eviction or a node drain does to a worker, four times to both: SIGTERM mid-item,
    the item goes back uncharged, the container (the pod) is gone, a fresh one starts (the Job's
    fresh slot). Every item is done once, and `rediswq history` keeps what the stopped ones did."""
    root = manifests_copy(tmp_path / "repo")
    items = [f"item-{n:02d}" for n in range(30)]
    (root / "seed" / "items.txt").write_text("\n".join(items) + "\n", encoding="utf-8")
    seed, worker = job_specs(render_tree(root, "dev"), tmp_path / "volumes")
    workers = [running.start(worker, f"worker-{n}") for n in range(system.parallelism)]
    start_redis(running, system)
    code, _ = finish(running, seed, "seed")
    assert code == 0, f"seed exited {code}"

    sessions: dict[str, str] = {}
    started = len(workers)
    for _ in range(STOP_ROUNDS):
        working(running, workers, SEED_TIMEOUT)
        for name in workers:
            docker("stop", "--time", "30", name)
        for name in workers:
            assert running.wait(name, 60) == STOPPED, running.logs(name)
            log = running.stdout(name)
            assert "Stopped by SIGTERM, exiting" in log and QUEUE_EMPTY not in log, log
            [said] = [line for line in log.splitlines() if "sessionID: " in line]
            sessions[name] = said.split("sessionID: ")[1]
        workers = [running.start(worker, f"worker-{started + n}") for n in range(len(workers))]
        started += len(workers)

    codes = {name: running.wait(name, WORKER_TIMEOUT) for name in workers}
    assert set(codes.values()) == {0}, f"worker exit codes: {codes}"
    code, name = finish(running, worker.with_args("history", "--count", "1000", "--json"), "log")
    assert code == 0, running.logs(name)
    history = json.loads(running.stdout(name))
    done = Counter(entry["item"] for entry in history if entry["outcome"] == "done")
    assert done == Counter(items), f"each item done exactly once: {dict(done)}"
    released = [entry for entry in history if entry["outcome"] == "released"]
    assert {entry["worker"] for entry in released} <= set(sessions.values())
    assert len(released) >= STOP_ROUNDS, f"the stopped workers' items: {released}"
    for container, session in sessions.items():
        assert [e for e in history if e["worker"] == session], f"nothing of {container}"
    code, name = finish(running, worker.with_args("status", "--json"), "status")
    status = json.loads(running.stdout(name))
    assert status["drained"] and status["done"] == len(items), status
