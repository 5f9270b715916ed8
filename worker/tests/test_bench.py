"""The benchmark's own readings (worker/bench/bench.py): what it reports must be what ran."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import instructions
import pytest
from bench import Cell, _cpu_of_tree, _runnable, contenders, report, settled
from rediswq.server import EmbeddedRedis
from sides import Side

# Spends about 0.3 s of CPU in itself and in a child, says so, then waits for a line and exits.
# Each says it in one write: print() writes the text and its newline apart when unbuffered
# (PYTHONUNBUFFERED), and the other's line could come between them.
_BUSY = """
import os, sys, time
def spin(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
if os.fork() == 0:
    spin(0.3)
    os.write(1, b"child ready\\n")
    sys.stdin.readline()
    os._exit(0)
spin(0.3)
os.write(1, b"ready\\n")
sys.stdin.readline()
os.wait()
os._exit(0)  # no teardown: what runs after the go is next to nothing
"""


def test_the_cpu_read_at_the_go_is_the_processes_own_to_the_millisecond() -> None:
    """Read at the go and again at the exit: what is between is what ran after the go (here
    next to nothing), not the rounding of the first reading (up to 10 ms per process and kind
    of time in clock ticks)."""
    for _ in range(3):
        busy = subprocess.Popen(
            [sys.executable, "-c", _BUSY], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert busy.stdin and busy.stdout
        said = {busy.stdout.readline().strip(), busy.stdout.readline().strip()}
        assert said == {b"ready", b"child ready"}
        at_go = _cpu_of_tree(busy.pid)
        busy.stdin.write(b"\n\n")
        busy.stdin.close()
        _, status, usage = os.wait4(busy.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        after_go = usage.ru_utime + usage.ru_stime - at_go
        assert at_go > 0.5
        assert -0.002 < after_go < 0.004, (at_go, after_go)


# Says it is ready, then still works 0.3 s in a child, as a worker subscribes after its ready
# line, and waits.
_STARTING = """
import os, sys, time
os.write(1, b"ready\\n")
if os.fork() == 0:
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    sys.stdin.readline()
    os._exit(0)
sys.stdin.readline()
os.wait()
os._exit(0)
"""


@contextlib.contextmanager
def _ready(program: str) -> Iterator[int]:
    """The pid of `program` once it said "ready"; it ends with the block (its stdin closed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", program], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin and proc.stdout
    try:
        assert proc.stdout.readline() == b"ready\n"
        yield proc.pid
    finally:
        proc.stdin.close()  # it and its child read the end of it and exit
        proc.wait()


def test_the_go_waits_until_the_workers_rest_after_their_ready_line() -> None:
    with _ready(_STARTING) as pid:
        settled([pid])
        at_go = _cpu_of_tree(pid)
        time.sleep(0.2)
        later = _cpu_of_tree(pid)
    assert at_go > 0.3
    assert later - at_go < 0.002


_SLEEPING = "import os, sys\nos.write(1, b'ready\\n')\nsys.stdin.readline()"


def test_a_process_that_waits_for_a_core_is_not_at_rest() -> None:
    # Not using CPU can also mean not getting it: a spinning child counts as running, a
    # sleeping one does not.
    spinning = "import os, sys\nos.write(1, b'ready\\n')\nwhile True: pass"
    with _ready(spinning) as pid:
        assert any(_runnable(pid) for _ in range(50))
        os.kill(pid, signal.SIGKILL)
    with _ready(_SLEEPING) as pid:
        time.sleep(0.05)
        assert not any(_runnable(pid) for _ in range(50))


def test_the_go_waits_while_a_worker_waits_for_a_core(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[int] = []

    def runnable(pid: int) -> bool:  # waiting for a core at the first three looks
        asked.append(pid)
        return len(asked) <= 3

    monkeypatch.setattr("bench._runnable", runnable)
    with _ready(_SLEEPING) as pid:
        settled([pid], quiet=0.01)
    assert len(asked) == 4


# A busy child, then threads that start and end all the while in the parent, as a worker's might.
_CHURNING = """
import os, sys, threading, time
if os.fork() == 0:
    end = time.process_time() + 0.3
    while time.process_time() < end:
        pass
    os.write(1, b"ready\\n")
    sys.stdin.readline()
    os._exit(0)
def churn():
    while True:
        started = threading.Thread(target=lambda: None)
        started.start()
        started.join()
threading.Thread(target=churn, daemon=True).start()
sys.stdin.readline()
os._exit(0)
"""


def test_a_thread_that_ends_during_the_reading_leaves_the_children_counted() -> None:
    with _ready(_CHURNING) as pid:
        readings = [_cpu_of_tree(pid) for _ in range(300)]
    assert min(readings) > 0.3, sorted(readings)[:5]


def test_the_ab_table_shows_each_rounds_ratios_beside_the_ratio_of_the_medians() -> None:
    this, other = Side("new", sys.executable), Side("old", sys.executable)
    everyone = contenders([this, other], incr=False)
    # Three rounds; the new side's worker CPU is 0.5, 1.0 and 2.0 times the old's.
    cpu = {this.name: [5.0, 10.0, 20.0], other.name: [10.0, 10.0, 10.0]}
    cells = {
        (c.label, 2): Cell([100.0] * 3, cpu[c.side.name] if c.side else [1.0] * 3, [1.0] * 3,
                           [2.0] * 3)
        for c in everyone
    }  # fmt: skip
    table = report(everyone, cells, {"new": [0.1], "old": [0.2]}, [this, other], [2])
    row = next(line for line in table.splitlines() if line.startswith("| rediswq, defaults | 2 |"))
    assert (
        row == "| rediswq, defaults | 2 | 1.00 (1.00-1.00) | 1.00 (0.50-2.00) "
        "| 1.00 (1.00-1.00) | 1.00 (1.00-1.00) |"
    )


def test_instructions_are_counted_in_real_runs_and_show_what_a_batch_saves(
    server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """instructions.py, on runs shortened for the test: an item leased in a batch of 64 costs
    fewer instructions than one leased alone, in the worker and in Redis, and each count has the
    size of a step (a count of the supervisor alone, or of the seed, would not)."""
    if shutil.which("valgrind") is None:
        pytest.skip("needs valgrind on PATH (Debian/Ubuntu: apt-get install valgrind)")
    monkeypatch.setattr(instructions, "SMALL", {1: 20, 64: 64})
    monkeypatch.setattr(instructions, "LARGE", {1: 120, 64: 384})
    worker_alone, redis_alone = instructions.per_item(server.binary, sys.executable, 1)
    worker_batched, redis_batched = instructions.per_item(server.binary, sys.executable, 64)
    assert 10_000 < worker_batched < worker_alone < 1_000_000
    assert 5_000 < redis_batched < redis_alone < 1_000_000
