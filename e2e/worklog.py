"""What every end-to-end run asserts over the workers' logs, wherever the workers ran."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from rediswq.logs import message, messages

WORKING_ON = "Working on "
QUEUE_EMPTY = "Queue empty, exiting"
STARTED = "Worker with sessionID: "


def items_worked_on(log: str) -> list[str]:
    return [said[len(WORKING_ON) :] for said in messages(log) if said.startswith(WORKING_ON)]


def assert_drained(logs: Mapping[str, str], items: list[str]) -> None:
    """Every item worked on exactly once across the workers; each worker ended on the queue, and
    said everything in timestamped log lines (text or JSON)."""
    seen = Counter(item for log in logs.values() for item in items_worked_on(log))
    assert seen == Counter(items), f"items worked on {dict(seen)} != queued {items}"
    for worker, log in logs.items():
        unstamped = [line for line in log.splitlines() if line and message(line) is None]
        assert not unstamped, f"{worker} logged lines without a time and level: {unstamped}"
        said = messages(log)
        assert said and said[-1] == QUEUE_EMPTY, f"{worker} did not end with {QUEUE_EMPTY!r}"


def assert_named_by_pod(logs: Mapping[str, str]) -> None:
    """In a cluster: each worker, keyed by its pod's name, holds its leases under that name."""
    for pod, log in logs.items():
        (name,) = [said for said in messages(log) if said.startswith(STARTED)]
        assert name.startswith(f"{STARTED}{pod}/"), f"{pod} leases as {name}"


def assert_all_done(logs: Mapping[str, str], items: list[str]) -> None:
    """After a worker was killed mid-item: every item still worked on at least once."""
    seen = {item for log in logs.values() for item in items_worked_on(log)}
    missing = set(items) - seen
    assert not missing, f"never worked on: {sorted(missing)}"


def repeats(logs: Mapping[str, str], items: list[str]) -> int:
    """assert_all_done, then how many times an item was worked on again (at-least-once, counted)."""
    assert_all_done(logs, items)
    return sum(len(items_worked_on(log)) for log in logs.values()) - len(items)


def wait_until_begun(
    logs: Callable[[], Iterable[str]], enough: int, within: float, poll: float
) -> int:
    """Once the workers, whose logs as they are now `logs` returns, began `enough` items: how many
    they began (so that a fault is injected mid-run, not before the first item)."""
    deadline = time.monotonic() + within
    while True:
        begun = sum(len(items_worked_on(log)) for log in logs())
        if begun >= enough:
            return begun
        assert time.monotonic() < deadline, f"the workers began fewer than {enough} items"
        time.sleep(poll)
