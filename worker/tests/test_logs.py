"""What a worker's log says, in text and JSON: timestamps, levels, stable fields, who it is, and why
it waits."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from collected import Log
from conftest import QueueFactory, cli_env, rediswq, said_until, spawn_worker
from recording import recorded
from rediswq import WorkQueue, seed
from rediswq.connection import connect, wait_until_ready
from rediswq.errors import EXIT_CONFIG, QueueError
from rediswq.logs import LEVELS, Lines, identity, message, messages
from rediswq.queue import State
from rediswq.server import EmbeddedRedis
from rediswq.stdlogging import install
from rediswq.waits import Waiting, say_why
from rediswq.worker import Worker

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture
def shorter_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rediswq.waits.REPORT_EVERY", 0.5)


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_text_line_starts_with_the_utc_time_and_the_level() -> None:
    out = io.StringIO()
    before = datetime.now(UTC)
    Lines(out=out)("working", "Working on apple", item="apple", attempt=1)
    line = out.getvalue()
    assert re.fullmatch(rf"{STAMP} INFO Working on apple\n", line), line
    stamp = datetime.fromisoformat(line.split()[0])
    assert before - timedelta(milliseconds=1) <= stamp <= datetime.now(UTC)
    assert message(line.rstrip("\n")) == "Working on apple"


def test_a_line_carries_its_own_millisecond_even_after_the_clock_is_set_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stamp is made once a millisecond and reused within it (logs.py): a clock that an NTP step
    # sets back must not keep an hour-old stamp on every line.
    clock = iter([1_700_000_000.0005, 1_700_000_000.0009, 1_700_000_000.0012, 1_699_996_400.25])
    monkeypatch.setattr(time, "time", lambda: next(clock))
    out = io.StringIO()
    lines = Lines(out=out)
    for n in range(4):
        lines("working", f"Working on {n}")
    assert [line.split()[0] for line in out.getvalue().splitlines()] == [
        "2023-11-14T22:13:20.000Z",
        "2023-11-14T22:13:20.000Z",
        "2023-11-14T22:13:20.001Z",
        "2023-11-14T21:13:20.250Z",
    ]


def test_every_line_of_a_traceback_carries_the_time_and_the_level() -> None:
    out = io.StringIO()
    Lines(out=out)("traceback", "Traceback (most recent call last):\n  File x\nValueError: no")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert all(re.match(rf"{STAMP} ERROR ", line) for line in lines), lines
    assert messages(out.getvalue())[-1] == "ValueError: no"


def test_the_level_leaves_out_the_lines_below_it() -> None:
    out = io.StringIO()
    lines = Lines(out=out, level=logging.WARNING)
    lines("working", "Working on apple")
    lines("failed", "Failed on apple")
    assert messages(out.getvalue()) == ["Failed on apple"]
    assert not lines.enabled("item-done")


def test_a_printer_prints_what_a_call_prints_in_text_and_leaves_json_to_the_call() -> None:
    out = io.StringIO()
    lines = Lines(out=out)
    say = lines.printer("working")
    assert say is not None
    for text in ("Working on apple", "Working on \x1b[2Japple"):
        say(text)
        lines("working", text, item=text[11:], attempt=1)
    printed = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert printed == ["INFO Working on apple"] * 2 + ["INFO Working on \\x1b[2Japple"] * 2
    assert Lines(form="json", out=out).printer("working") is None
    quiet = io.StringIO()
    say = Lines(out=quiet, level=logging.WARNING).printer("working")
    assert say is not None
    say("Working on apple")
    assert quiet.getvalue() == ""
    warn = Lines(out=quiet).printer("lease-expired")  # a printer of another level than INFO
    assert warn is not None
    warn("Lease on apple had expired")
    assert quiet.getvalue().split(" ", 1)[1] == "WARNING Lease on apple had expired\n"


def test_a_handlers_own_logging_comes_out_in_the_workers_format(root_logging: None) -> None:
    out = io.StringIO()
    lines = Lines(form="json", out=out)
    lines.bind(queue="q", worker="w")
    install(lines)
    logging.getLogger("thumbnails").warning("slow disk: %s", "sda")
    logging.getLogger("thumbnails").debug("not shown at info")
    (record,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert record["level"] == "warning" and record["event"] == "log"
    assert record["message"] == "slow disk: sda" and record["logger"] == "thumbnails"
    assert (record["queue"], record["worker"]) == ("q", "w")


def test_a_worker_is_named_by_its_pod_in_a_pod_and_by_host_and_pid_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert identity().startswith(f"{socket.gethostname()}:{os.getpid()}/")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("HOSTNAME", "job-wq-2-x7k2p")
    first, second = identity(), identity()
    assert first.startswith("job-wq-2-x7k2p/") and second.startswith("job-wq-2-x7k2p/")
    # Two containers of one pod, or one restarted in place, are still two lease holders.
    assert first != second


def test_in_an_indexed_job_a_worker_is_named_by_its_pod_not_its_hostname(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An Indexed Job sets each pod's hostname to <job>-<index>, shared by the retries of one
    index; the Downward API's POD_NAME names the pod whose log and history to look up."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("HOSTNAME", "job-wq-2-3")
    monkeypatch.setenv("POD_NAME", "job-wq-2-3-x7k2p")
    assert identity().startswith("job-wq-2-3-x7k2p/")


def test_json_logs_parse_and_carry_the_stable_fields(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    env = cli_env(REDIS_URL=server.url, QUEUE_NAME=queue_name, WORK_SECONDS="0")
    assert rediswq("seed", env=env, stdin=b"apple\npoison-pear\n").returncode == 0
    env |= {"LOG_FORMAT": "json", "LOG_LEVEL": "debug", "RECORD_FILE": str(tmp_path / "done")}
    result = rediswq(
        "worker", "--handler", "recording:fail_on_poison", "--max-attempts", "1", env=env
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]  # every line is JSON
    stable = {"time", "level", "event", "message", "queue", "run", "worker"}
    assert all(stable <= record.keys() for record in records), records
    assert {r["worker"] for r in records} == {records[0]["worker"]}
    assert records[0]["worker"].startswith(f"{socket.gethostname()}:")
    assert {r["queue"] for r in records} == {queue_name}
    assert all(r["event"] in LEVELS for r in records)
    for record in records:
        datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
    by_event = {r["event"]: r for r in records}
    assert by_event["working"]["item"] in ("apple", "poison-pear")
    assert by_event["working"]["attempt"] == 1
    done = by_event["item-done"]
    assert (done["item"], done["level"]) == ("apple", "debug")
    assert 0 <= done["duration"] < 5
    failed = by_event["failed"]
    assert (failed["item"], failed["attempt"], failed["level"]) == ("poison-pear", 1, "warning")
    assert failed["error"] == "ValueError: cannot digest poison-pear"
    assert by_event["traceback"]["level"] == "error"
    assert "\n" in by_event["traceback"]["message"]  # whole, in one record
    summary = by_event["summary"]
    assert (summary["done"], summary["dead_lettered"]) == (1, 1)
    assert records[-1]["message"] == "Queue empty, exiting"


def test_a_worker_waiting_for_the_seal_says_why_at_once_and_then_every_so_often(
    make_queue: QueueFactory, shorter_reports: None
) -> None:
    log = Log()
    started = time.monotonic()
    with pytest.raises(QueueError, match="was not sealed within 2s"):
        Worker(make_queue(), print, seal_timeout=2, log=log).run()
    waits = [(said, fields) for (event, fields), said in zip(log.events, log, strict=True)
             if event == "waiting"]  # fmt: skip
    name = make_queue().keys.name
    assert waits[0][0] == (
        f"Waiting for queue {name!r} to be sealed by the seed; giving up after 2s "
        "(--no-seal if it is filled by hand)"
    )
    assert all(fields["reason"] == "seal" for _, fields in waits)
    # Every half second here (30 s by default), not on every poll (four a second).
    assert 3 <= len(waits) <= 2 + (time.monotonic() - started) / 0.5, waits
    assert "(for 1s now)" in waits[2][0] or "(for 2s now)" in waits[2][0]


def test_a_worker_of_another_run_says_which_seal_it_waits_for(
    make_queue: QueueFactory, shorter_reports: None
) -> None:
    seed(make_queue(), [b"b-1"], run="b")
    log = Log()
    with pytest.raises(QueueError, match="was not sealed for run a"):
        Worker(make_queue(run="a"), print, seal_timeout=1, log=log).run()
    waiting = [said for said in log if said.startswith("Waiting for")]
    assert "to be sealed for run a (it is sealed for run b)" in waiting[0]


def test_a_worker_says_it_waits_for_leases_other_workers_hold(
    make_queue: QueueFactory, shorter_reports: None
) -> None:
    seed(make_queue(), [b"held"])
    other = make_queue(lease_seconds=1.5)
    assert other.lease()  # a worker that then stalls: its lease expires
    log = Log()
    summary = Worker(make_queue(), lambda item: None, log=log).run()
    assert summary.done == 1
    name = make_queue().keys.name
    waiting = [said for said in log if said.startswith(f"Nothing pending in queue {name!r}")]
    assert waiting and waiting[0].endswith("waiting for items other workers hold or that wait "
                                           "for a retry, which may come back")  # fmt: skip


def test_a_worker_waiting_for_redis_says_so_until_it_gives_up(shorter_reports: None) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    log = Log()
    with pytest.raises(QueueError, match=f"cannot reach Redis at 127.0.0.1:{port}"):
        wait_until_ready(f"redis://127.0.0.1:{port}/0", None, 1.6, log)
    assert log[0].startswith(f"Waiting for Redis at 127.0.0.1:{port} (")
    assert log[0].endswith("; giving up after 1.6s")
    assert len(log) >= 2, log
    assert " for 1s now;" in log[-1] or " for 2s now;" in log[-1], log


def test_a_worker_that_requires_a_seal_stops_at_once_on_a_queue_filled_by_hand(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    queue = WorkQueue(connect(server.url), queue_name)
    queue.client.rpush(queue_name, "apple", "banana")  # the tutorial's manual flow
    env = cli_env(REDIS_URL=server.url, QUEUE_NAME=queue_name, RECORD_FILE=str(tmp_path / "done"))
    started = time.monotonic()
    result = rediswq("worker", "--handler", "recording:record", env=env, timeout=60)
    assert time.monotonic() - started < 30  # not the seal timeout's 600 s
    assert result.returncode == EXIT_CONFIG, result
    (line,) = result.stderr.splitlines()
    assert line == (
        f"rediswq: error: queue {queue_name!r} has items but no seal: it was filled by hand "
        "(RPUSH), and a worker that requires a seal could never tell when it is finished; start "
        "the workers with --no-seal (REQUIRE_SEAL=false), or fill the queue with `rediswq seed`; "
        "the 1 item(s) this worker leased are back in it"
    )
    assert recorded(str(tmp_path / "done")) == []  # nothing was worked on
    assert queue.client.lrange(queue_name, 0, -1) == [b"apple", b"banana"]  # in their order
    assert queue.counts() == (2, 0)
    worked = rediswq("worker", "--handler", "recording:record", "--no-seal", env=env)
    assert worked.returncode == 0, worked.stderr
    assert recorded(str(tmp_path / "done")) == ["apple", "banana"]


def test_two_workers_of_one_pod_hold_their_leases_apart(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    # Two containers of one pod share its name; the queue keeps a session's requests in order,
    # so a shared name would make one worker's steps look like stale replays of the other's.
    queue = WorkQueue(connect(server.url), queue_name)
    items = [f"item-{n}" for n in range(300)]
    env = cli_env(
        RECORD_FILE=str(tmp_path / "done"), KUBERNETES_SERVICE_HOST="10.96.0.1",
        HOSTNAME="job-wq-2-x7k2p", WORK_SECONDS="0.002",
    )  # fmt: skip
    workers = [spawn_worker(server.url, queue_name, "--prefetch", "3", env=env) for _ in range(2)]
    said = [said_until(worker, "Waiting for queue") for worker in workers]  # they overlap
    seed(queue, [item.encode() for item in items])
    outputs = ["\n".join(lines) + worker.communicate(timeout=120)[0]
               for worker, lines in zip(workers, said, strict=True)]  # fmt: skip
    assert [worker.returncode for worker in workers] == [0, 0], outputs
    names = {lines[0].removeprefix("Worker with sessionID: ") for lines in said}
    assert len(names) == 2 and all(n.startswith("job-wq-2-x7k2p/") for n in names), names
    assert queue.counts() == (0, 0)
    assert int(queue.client.hget(queue.keys.stats, "done") or 0) == len(items)


def test_an_items_escape_and_nul_bytes_are_shown_escaped_in_text_logs(
    server: EmbeddedRedis, queue_name: str, tmp_path: Path
) -> None:
    item = b"\x1b[31mred\x00\rgone\x7f"
    seed(WorkQueue(connect(server.url), queue_name), [item])
    result = rediswq(
        "worker", "--redis-url", server.url, "--queue", queue_name, "--work-seconds", "0",
        "--handler", "recording:fail_always", "--max-attempts", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for control in "\x1b\x00\r\x7f":
        assert control not in result.stdout, result.stdout
    said = messages(result.stdout)
    assert "Working on \\x1b[31mred\\x00\\rgone\\x7f" in said, said
    error = "ValueError: no luck with \\x1b[31mred\\x00"  # a reason ends at a line break
    assert any(line.startswith("Failed on \\x1b[31mred") and error in line for line in said), said


def test_a_seal_for_the_workers_own_run_that_lands_after_its_step_is_no_reason_to_wait(
    make_queue: QueueFactory,
) -> None:
    queue = make_queue(run="a")
    seed(make_queue(), [b"b-1"], run="b")
    assert queue.step().state is State.OTHER_RUN  # the step decides to wait...
    seed(make_queue(), [b"a-1"], run="a")  # ...and the seed of run a seals before the next read
    log = Log()
    say_why(Waiting(log), queue, State.OTHER_RUN, 600)
    assert list(log) == []  # not "sealed for run a (it is sealed for run a)"
    say_why(Waiting(log), make_queue(run="c"), State.OTHER_RUN, 600)
    assert log[-1].endswith("to be sealed for run c (it is sealed for run a); giving up after 600s")
