"""The worker loop: handlers, failures, lease renewal, signals, and waiting for the seed."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from collected import Log
from conftest import QueueFactory, cli_env, said_until, spawn_worker
from recording import recorded
from rediswq import WorkQueue, seed
from rediswq.attempts import Attempt
from rediswq.errors import QueueError
from rediswq.logs import messages
from rediswq.queue import Lease
from rediswq.server import EmbeddedRedis
from rediswq.worker import Worker, exit_code


def test_the_tutorials_log_lines(make_queue: QueueFactory) -> None:
    queue = make_queue()
    seed(queue, [b"apple", b"banana"])
    log = Log()
    summary = Worker(queue, lambda item: None, log=log).run()
    assert log[0] == f"Worker with sessionID: {queue.session}"
    assert log[1] == "Initial queue state: empty=False"
    assert log[2:4] == ["Working on apple", "Working on banana"]
    assert log[-1] == "Queue empty, exiting"
    assert (summary.done, exit_code(summary)) == (2, 0)


def test_a_failing_handler_dead_letters_its_item_and_the_rest_complete(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(max_attempts=3)
    seed(queue, [b"good-1", b"poison", b"good-2"])
    worked: list[bytes] = []

    def handler(item: bytes) -> None:
        if item == b"poison":
            raise ValueError("bad item")
        worked.append(item)

    log = Log()
    summary = Worker(queue, handler, log=log).run()
    assert sorted(worked) == [b"good-1", b"good-2"]
    assert queue.client.lrange(queue.keys.failed, 0, -1) == [b"poison"]
    assert (summary.done, summary.failed_attempts, summary.dead_lettered) == (2, 3, 1)
    assert exit_code(summary) == 0
    assert any("moved to" in line and "ValueError: bad item" in line for line in log)
    assert log[-2] == "Done 2 items; 3 failed attempts, 1 item dead-lettered, 0 lost leases"


def test_a_long_handler_keeps_its_lease(make_queue: QueueFactory) -> None:
    queue = make_queue(lease_seconds=0.6)
    rival = make_queue(lease_seconds=0.6)
    seed(queue, [b"slow"])
    stolen: list[bytes] = []

    def handler(item: bytes) -> None:
        deadline = time.monotonic() + 2.0  # more than three lease lengths
        while time.monotonic() < deadline:
            stolen.extend(lease.item for lease in rival.lease())
            time.sleep(0.1)

    summary = Worker(queue, handler, log=Log()).run()
    assert stolen == []
    assert (summary.done, summary.lost) == (1, 0)


def test_prefetch_leases_several_items_per_round_trip(make_queue: QueueFactory) -> None:
    queue = make_queue()
    seed(queue, [f"{n}".encode() for n in range(10)])
    seen: list[bytes] = []
    summary = Worker(queue, seen.append, prefetch=4, log=Log()).run()
    assert seen == [f"{n}".encode() for n in range(10)]
    assert summary.done == 10


def started_on_an_unsealed_queue(
    queue: WorkQueue, poll_interval: float
) -> tuple[threading.Thread, list[bytes]]:
    """A worker thread that has found the queue unsealed and said it waits for the seed; and
    what it works on."""
    seen: list[bytes] = []
    log = Log()
    worker = Worker(queue, seen.append, log=log, poll_interval=poll_interval)
    thread = threading.Thread(target=worker.run)
    thread.start()
    log.wait_for("waiting", reason="seal")
    return thread, seen


def test_a_worker_started_before_the_seed_waits_for_it(make_queue: QueueFactory) -> None:
    thread, seen = started_on_an_unsealed_queue(make_queue(), poll_interval=0.05)
    assert thread.is_alive()  # an empty, unsealed queue is not the end
    seed(make_queue(), [b"late-1", b"late-2"])
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert seen == [b"late-1", b"late-2"]


def test_the_seal_wait_is_bounded(make_queue: QueueFactory) -> None:
    worker = Worker(make_queue(), lambda item: None, seal_timeout=0.3, log=Log())
    with pytest.raises(QueueError, match=r"not sealed within 0\.3s"):
        worker.run()


def test_a_waiting_worker_wakes_on_the_seal_not_on_its_poll(make_queue: QueueFactory) -> None:
    # Subscribed, and asleep on an unsealed queue: only the seal's message can wake it in time.
    thread, seen = started_on_an_unsealed_queue(make_queue(), poll_interval=30)
    seed(make_queue(), [b"woken"])
    thread.join(timeout=5)
    assert not thread.is_alive(), "slept through the seal"
    assert seen == [b"woken"]


def test_the_end_is_noticed_quickly(make_queue: QueueFactory) -> None:
    """A worker waiting on another's lease sees the end within half a second of it."""
    holder, waiter = make_queue(), make_queue()
    seed(holder, [b"last"])
    (lease,) = holder.lease()
    finished = threading.Event()
    log = Log()

    def work() -> None:
        Worker(waiter, lambda item: None, log=log, poll_interval=30).run()
        finished.set()

    thread = threading.Thread(target=work)
    thread.start()
    log.wait_for("waiting", reason="leases")
    assert not finished.is_set()
    holder.complete(lease)
    completed_at = time.monotonic()
    assert finished.wait(timeout=5)
    assert time.monotonic() - completed_at < 0.5
    thread.join()


def test_sigterm_releases_the_item_at_once_and_exits_non_zero(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    queue: WorkQueue = make_queue()
    seed(queue, [b"first", b"second"])
    env = cli_env(RECORD_FILE=str(tmp_path / "done"), SLOW_SECONDS="30")
    worker = spawn_worker(
        server.url, queue.keys.name, "--handler", "recording:record_slowly", env=env
    )
    said = said_until(worker, "Working on")
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=10)
    lines = [*said, *messages(out)]
    assert worker.returncode == 128 + signal.SIGTERM
    assert "Working on first" in lines
    assert lines[-1] == "Stopped by SIGTERM, exiting"
    assert queue.client.lrange(queue.keys.pending, 0, -1) == [b"first", b"second"]
    assert queue.counts() == (2, 0)
    (lease,) = queue.lease()
    assert (lease.item, lease.attempt) == (b"first", 1)  # the interrupted attempt is not charged
    assert recorded(str(tmp_path / "done")) == []


@pytest.mark.parametrize("handler", ["record_buffered", "record_buffered_on_a_library"])
def test_what_a_handler_leaves_open_is_still_flushed_at_exit(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path, handler: str
) -> None:
    """The worker freezes its own imports for the garbage collector, and leaves them to the OS at
    exit (preloaded.py), but not the handler's module, nor a module the handler names."""
    record = tmp_path / "record.txt"
    queue = make_queue()
    seed(queue, [b"a", b"b", b"c"])
    env = cli_env(RECORD_FILE=str(record))
    worker = spawn_worker(server.url, queue.keys.name, "--handler", f"recording:{handler}", env=env)
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out
    assert recorded(str(record)) == ["a", "b", "c"], out


def test_what_a_handler_leaves_open_is_flushed_when_a_signal_stops_the_worker(
    server: EmbeddedRedis, make_queue: QueueFactory, tmp_path: Path
) -> None:
    # A stop takes the same exit (preloaded.py): the handler's module is cleared as Python does.
    record = tmp_path / "record.txt"
    queue = make_queue()
    seed(queue, [b"a", b"slow"])
    env = cli_env(RECORD_FILE=str(record), SLOW_SECONDS="30")
    handler = "recording:record_buffered_slowly"
    worker = spawn_worker(server.url, queue.keys.name, "--handler", handler, env=env)
    said_until(worker, "buffered slow")  # not "Working on slow": the handler is not in yet
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=10)
    assert worker.returncode == 128 + signal.SIGTERM, out
    assert recorded(str(record)) == ["a", "slow"], out


def test_a_stopped_worker_does_not_say_the_leases_it_hands_in_were_lost(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stop that comes between an item's end and the next step: the loop ends, and the worker
    # hands the item in on its way out. The lease keeper, still renewing, must not hold it then.
    queue = make_queue(lease_seconds=0.3)  # renewed every 0.1 s
    seed(queue, [b"a", b"b"])
    completing = queue.complete

    def complete_and_linger(*leases: Lease) -> list[bool]:
        handed_in = completing(*leases)
        time.sleep(0.35)  # the keeper renews meanwhile: a lease it still held would be gone
        return handed_in

    monkeypatch.setattr(queue, "complete", complete_and_linger)
    log = Log()

    class StopAfterAnItem:
        def attempted(self, attempt: Attempt) -> None:
            worker.summary.stopped_by = signal.SIGTERM  # as the signal handler records it

        def handed_in(self, done: int, lost: int) -> None:
            pass

    worker = Worker(queue, lambda item: None, log=log, observers=(StopAfterAnItem(),))
    summary = worker.run()
    assert (summary.done, summary.lost, summary.stopped_by) == (1, 0, signal.SIGTERM)
    assert [event for event, _ in log.events if event.startswith("lease")] == []
    assert queue.counts() == (1, 0)
