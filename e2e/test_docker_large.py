"""A million items through components/remote-items, with the dev overlay's pods as containers: the
seed streams a gzipped list from an HTTP server (standing in for object storage) within its
128 MiB limit, checks the digest Git holds, seals the queue for the digest's run, and a worker
named by the same digest works on it. Deploying the same tree again downloads nothing."""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from containers import Containers, docker
from dockersystem import System, finish, job_specs, queue_status, report, start_redis
from podspec import Spec
from rediswq.runs import items_digest
from remoteitems import OVERLAY, overlay
from rendering import render_tree

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

MILLION = 1_000_000
# A tenth of the list: the seed's peak memory must not grow with the list.
TENTH = MILLION // 10
PORT = 8080
# Peak RSS the tenfold list may add: batches in flight, not items.
GROWTH_KIB = 16 * 1024
# Runs the seed as its Job does, and says what it cost: wall time and the process's peak RSS.
MEASURED = """\
import resource, sys, time
from rediswq.cli import main
start = time.monotonic()
try:
    code = main(sys.argv[1:])
finally:
    took, peak = time.monotonic() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"MEASURED {took:.2f} s {peak} KiB", file=sys.stderr)
sys.exit(code)
"""


def names(count: int) -> Iterator[bytes]:
    """Object keys, as a real list of files to process would hold."""
    return (f"photos/{n // 1000:04d}/{n:07d}.jpg".encode() for n in range(count))


def served_list(folder: Path, name: str, count: int) -> str:
    """Write `count` items gzipped to `folder/name`; their digest, for ITEMS_SHA256."""
    with gzip.open(folder / name, "wb", compresslevel=6) as out:
        for item in names(count):
            out.write(item + b"\n")
    (folder / name).chmod(0o644)
    return items_digest(names(count))


def item_server(system: System, folder: Path) -> Spec:
    """An HTTP server with `folder`, from the worker image's Python, as the `items` host."""
    probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/')"
    return Spec(
        name="items",
        image=system.image,
        entrypoint="python3",
        args=("-m", "http.server", str(PORT), "--directory", "/srv"),
        env={},
        user=system.worker_user,
        run_as_non_root=True,
        options=("--read-only", "--volume", f"{folder}:/srv:ro"),
        readiness=("python3", "-c", probe),
    )


def measured(made: Containers, seed: Spec, name: str) -> tuple[str, float, int]:
    """Run the seed to its end: what it printed, its seconds and its peak RSS in KiB."""
    assert seed.args is not None
    code, started = finish(
        made, replace(seed, entrypoint="python3", args=("-c", MEASURED, *seed.args)), name
    )
    logs = made.logs(started)
    assert code == 0, f"{name} exited {code}\n{logs}"
    found = re.search(r"MEASURED ([0-9.]+) s ([0-9]+) KiB", logs)
    assert found, logs
    return made.stdout(started), float(found.group(1)), int(found.group(2))


def used_memory(made: Containers, redis: str) -> int:
    """Redis's `used_memory`, in bytes."""
    info = made.run_in(redis, ["redis-cli", "info", "memory"])
    found = re.search(r"^used_memory:(\d+)", info.stdout, re.MULTILINE)
    assert found, info.stdout + info.stderr
    return int(found.group(1))


def test_a_million_items_stream_from_a_url_into_a_sealed_run(
    request: pytest.FixtureRequest, system: System, running: Containers, tmp_path: Path
) -> None:
    folder = tmp_path / "served"
    folder.mkdir()
    folder.chmod(0o755)
    small = served_list(folder, "tenth.txt.gz", TENTH)
    big = served_list(folder, "items.txt.gz", MILLION)
    url = f"http://items:{PORT}/items.txt.gz"
    seed_small, _ = job_specs(
        render_tree(
            overlay(
                tmp_path / "a", ITEMS_URL=f"http://items:{PORT}/tenth.txt.gz", ITEMS_SHA256=small
            ),
            OVERLAY,
        ),
        tmp_path / "volumes",
    )
    seed, worker = job_specs(
        render_tree(overlay(tmp_path / "b", ITEMS_URL=url, ITEMS_SHA256=big), OVERLAY),
        tmp_path / "volumes",
    )
    run = big[:12]

    redis = start_redis(running, system)
    server = item_server(system, folder)
    served = running.start(server, "items", aliases=["items"])
    running.wait_ready(served, server, 60)

    # The tenth into a queue of its own, for the seed's memory at a tenth of the list.
    _, seconds_small, peak_small = measured(
        running, seed_small.with_env(QUEUE_NAME="tenth"), "seed-tenth"
    )
    before = used_memory(running, redis)
    said, seconds, peak = measured(running, seed, "seed")
    held = used_memory(running, redis) - before
    assert f"Queued {MILLION} items in 'job2' for run {run} and sealed it" in said, said
    assert peak - peak_small < GROWTH_KIB, f"peak RSS {peak} KiB at 1M, {peak_small} KiB at 100k"
    report(
        request,
        f"seeded {MILLION:,} items from a URL in {seconds:.1f} s, peak RSS {peak / 1024:.0f} MiB, "
        f"{held / 2**20:.0f} MiB in Redis ({TENTH:,}: {seconds_small:.1f} s, "
        f"{peak_small / 1024:.0f} MiB)",
    )

    status = queue_status(running, system)
    assert status["pending"] == MILLION and status["run"]["id"] == run, status

    # A worker of the same Git: named by the digest alone, it finds its run and works on it.
    started = running.start(worker, "worker")
    deadline = time.monotonic() + 120
    while "Working on photos/0000/0000000.jpg" not in running.stdout(started):
        assert time.monotonic() < deadline, running.logs(started)
        assert running.state(started) == "running", running.logs(started)
        time.sleep(0.5)
    docker("stop", started)
    assert f"Worker of run {run}" in running.stdout(started)

    # The same tree deployed again: sealed for that run already, so the list is not fetched.
    code, again = finish(running, seed, "seed-again")
    assert code == 0, running.logs(again)
    assert f"already sealed for run {run}; nothing changed" in running.stdout(again)
    fetches = re.findall(r'"GET /items\.txt\.gz HTTP', running.logs(served))
    assert len(fetches) == 1, running.logs(served)
