"""Git drives the runs, with the dev overlay's pods as containers (e2e/dockersystem.py): deploy run
A, deploy the same tree again, deploy run B with new items; the logs say exactly which items were
worked on at each step.

A deploy here is what the replaced Jobs of a deploy do: the workers start (first, as nothing orders
them in a cluster), then the seed. The unchanged deploy runs them again too, which neither
deploy.sh nor Flux nor Argo CD does with an unchanged tree: it shows what happens when the Jobs are
replaced all the same (another setting or image changed, a controller's double replace): nothing is
redone. Redis, and so the queue, lives through all three steps.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from containers import Containers
from dockersystem import (
    WORKER_TIMEOUT,
    System,
    finish,
    job_specs,
    queue_status,
    start_redis,
)
from podspec import Spec
from rediswq.logs import messages
from rediswq.runs import run_id
from rendering import manifests_copy, render_tree, seed_items
from worklog import QUEUE_EMPTY, assert_drained, items_worked_on

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

# "apple" again: in a new run an item of an earlier run is new work.
NEW_ITEMS = ["kiwi", "lime", "apple", "mango", "papaya"]
# How long run B's workers are left waiting beside run A's seal before B's seed runs.
EARLY_SECONDS = 8.0


def start_workers(made: Containers, worker: Spec, count: int, step: str) -> list[str]:
    return [made.start(worker, f"{step}-worker-{n}") for n in range(count)]


def seed_and_finish(
    made: Containers, seed: Spec, workers: list[str], step: str
) -> tuple[str, dict[str, str]]:
    """Run the seed, then wait for the workers: the seed's output and each worker's log."""
    code, name = finish(made, seed, f"{step}-seed")
    assert code == 0, f"{step}: seed exited {code}\n{made.logs(name)}"
    codes = {worker: made.wait(worker, WORKER_TIMEOUT) for worker in workers}
    assert set(codes.values()) == {0}, f"{step}: worker exit codes {codes}"
    return made.stdout(name), {worker: made.stdout(worker) for worker in workers}


def test_git_drives_the_runs(system: System, running: Containers, tmp_path: Path) -> None:
    start_redis(running, system)
    run_a = run_id([item.encode() for item in seed_items()])

    # 1. First deploy: run A, the committed items, each worked on once.
    workers = start_workers(running, system.worker, system.parallelism, "a")
    said, logs = seed_and_finish(running, system.seed, workers, "a")
    assert f"for run {run_a} and sealed it" in said, said
    assert_drained(logs, seed_items())

    # 2. The same tree again: the seed changes nothing, the workers find run A drained.
    workers = start_workers(running, system.worker, system.parallelism, "again")
    said, logs = seed_and_finish(running, system.seed, workers, "again")
    assert f"already sealed for run {run_a}; nothing changed" in said, said
    for worker, log in logs.items():
        assert items_worked_on(log) == [], f"{worker} redid work of run A: {log}"
        assert messages(log)[-1:] == [QUEUE_EMPTY], log

    # 3. A commit with new items: run B. Its workers start while run A's seal is still there and
    # must wait for B's, not take A's drained queue for their own and exit.
    root = manifests_copy(tmp_path / "repo")
    (root / "seed" / "items.txt").write_text("\n".join(NEW_ITEMS) + "\n", encoding="utf-8")
    seed_b, worker_b = job_specs(render_tree(root, "dev"), tmp_path / "volumes")
    run_b = run_id([item.encode() for item in NEW_ITEMS])
    workers = start_workers(running, worker_b, system.parallelism, "b")
    time.sleep(EARLY_SECONDS)
    for worker in workers:
        assert running.state(worker) == "running", f"{worker} did not wait for run B's seal"
        assert items_worked_on(running.stdout(worker)) == [], "worked before run B was seeded"
    said, logs = seed_and_finish(running, seed_b, workers, "b")
    assert f"Run {run_a} is over" in said, said
    assert f"for run {run_b} and sealed it" in said, said
    assert_drained(logs, NEW_ITEMS)

    status = queue_status(running, system)
    assert status["drained"] and status["done"] == len(NEW_ITEMS), status
    assert status["run"]["id"] == run_b, status
    assert [run["id"] for run in status["earlier_runs"]] == [run_a], status
