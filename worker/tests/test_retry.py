"""Retries with backoff: the delays, measured; no lease before its time; no exit while one waits."""

from __future__ import annotations

import itertools
import random
import threading
import time

import pytest
from collected import Log
from conftest import QueueFactory
from rediswq import State, seed
from rediswq.deadletter import DeadLetters, Settled
from rediswq.execution import Failure
from rediswq.retry import Backoff
from rediswq.status import snapshot
from rediswq.worker import Worker


def test_the_delay_doubles_up_to_the_maximum_with_jitter_in_its_upper_half() -> None:
    backoff = Backoff(1.0, 5.0)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (50, 5.0), (10_000, 5.0)]:
        delays = {backoff.delay(attempt, rng) for _ in range(200)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(delays) > 100  # jittered, not one value
    assert Backoff(0, 0).delay(3) == 0


@pytest.mark.parametrize(
    ("text", "base", "maximum"),
    [("2", 2.0, 120.0), ("0.5,10", 0.5, 10.0), ("off", 0.0, 0.0), ("0", 0.0, 0.0)],
)
def test_backoff_settings(text: str, base: float, maximum: float) -> None:
    assert Backoff.parse(text) == Backoff(base, maximum)


@pytest.mark.parametrize("text", ["", "x", "1,2,3", "-1", "5,1", "nan", "inf"])
def test_bad_backoff_settings(text: str) -> None:
    with pytest.raises(ValueError):
        Backoff.parse(text)


def test_the_waits_between_attempts_are_measured_and_grow(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=4)
    seed(queue, [b"flaky"])
    started: list[float] = []

    def handler(item: bytes) -> None:
        started.append(time.monotonic())
        if len(started) < 4:
            raise ConnectionError("the dependency is down")

    summary = Worker(queue, handler, backoff=Backoff(0.4, 1.0), log=Log()).run()
    assert (summary.done, summary.failed_attempts) == (1, 3)
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    # Floors: half of 0.4, 0.8 and 1.0 (the maximum); the ceiling plus a generous margin.
    for gap, floor in zip(gaps, [0.2, 0.4, 0.5], strict=True):
        assert floor <= gap < 2 * floor + 1.5, gaps


def test_a_delayed_item_is_not_leased_before_its_time(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=3)
    seed(queue, [b"later"])
    (lease,) = queue.lease()
    failure = Failure("OSError", "down", "")
    assert DeadLetters(queue).settle(lease, failure, delay=1.0) is Settled.DELAYED
    failed_at = time.monotonic()
    status = snapshot(queue)
    assert (status.delayed, status.pending, status.drained) == (1, 0, False)
    step = queue.step(1)
    assert (step.state, step.leases) == (State.WAIT, [])  # not drained: the item comes back
    while not (leases := queue.lease()):
        time.sleep(0.02)
    assert time.monotonic() - failed_at >= 0.95  # the server's clock, to its millisecond
    assert (leases[0].item, leases[0].attempt) == (b"later", 2)
    assert snapshot(queue).delayed == 0


def test_a_worker_waits_for_a_delayed_retry_instead_of_exiting(make_queue: QueueFactory) -> None:
    failing, waiting = make_queue(max_attempts=2), make_queue(max_attempts=2)
    seed(failing, [b"x"])
    (lease,) = failing.lease()
    DeadLetters(failing).settle(lease, Failure("OSError", "down", ""), delay=1.5)
    worked: list[bytes] = []
    log = Log()
    thread = threading.Thread(target=Worker(waiting, worked.append, log=log).run)
    thread.start()
    log.wait_for("waiting", reason="leases")  # it found nothing to lease, and stays
    assert thread.is_alive() and worked == []
    thread.join(timeout=10)
    assert worked == [b"x"]


def test_a_reset_drops_items_waiting_for_a_retry(make_queue: QueueFactory) -> None:
    queue = make_queue(max_attempts=3)
    seed(queue, [b"old"])
    (lease,) = queue.lease()
    DeadLetters(queue).settle(lease, Failure("OSError", "down", ""), delay=60)
    result = seed(queue, [b"new"], reset=True)
    assert result.reset is not None and int(result.reset["dropped_pending"]) == 1
    assert (snapshot(queue).delayed, queue.lease()[0].item) == (0, b"new")
