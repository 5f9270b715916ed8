"""How a line reaches its stream whole: the kinds of stream a worker writes to, the lease keeper's
thread next to the worker's, pipes that lag, signal handlers that log, and forks."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env
from rediswq.logs import Lines, messages


def in_threads(write: Callable[[int], None], count: int) -> None:
    """`write(n)` in `count` threads at once, n from 0; back when all have ended."""
    threads = [threading.Thread(target=write, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _stream(tmp_path: Path, name: str, mode: str) -> tuple[io.TextIOWrapper, Path]:
    path = tmp_path / name
    if mode == "unbuffered":  # python -u, PYTHONUNBUFFERED: a worker in its image
        return io.TextIOWrapper(io.FileIO(path, "w"), encoding="utf-8", write_through=True), path
    # A buffered file, line-buffered (a terminal) or not (a pipe), or a text layer that writes
    # through to a buffer that still holds it
    buffered = path.open("wb")
    return io.TextIOWrapper(
        buffered, encoding="utf-8", line_buffering=mode == "line", write_through=mode == "through"
    ), path


@pytest.mark.parametrize("first", ["unbuffered", "line", "block", "through"])
@pytest.mark.parametrize("second", ["unbuffered", "line", "block", "through"])
def test_each_line_is_in_the_file_once_written_even_where_stdout_is_replaced(
    first: str, second: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A line needs no flush after it on some streams (logs.py): which ones is looked at once a
    # stream, so a stream that replaces another must not be taken for it. Within one
    # millisecond too, where the line's time stamp is not made again.
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0005)
    lines = Lines()
    for mode, name in ((first, "first"), (second, "second")):
        out, path = _stream(tmp_path, name, mode)
        monkeypatch.setattr(sys, "stdout", out)
        say = lines.printer("working")
        assert say is not None
        say(f"Working on {name}")
        lines("working", f"Working on {name} again")
        assert messages(path.read_text()) == [f"Working on {name}", f"Working on {name} again"]
        out.close()


class _CountedFlushes(io.FileIO):
    """An unbuffered file that counts the flushes of the text layer over it."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1
        super().flush()


def test_a_line_through_an_unbuffered_stdout_needs_no_flush_until_reconfigured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0005)  # one millisecond throughout
    path = tmp_path / "log"
    raw = _CountedFlushes(path, "w")
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    lines = Lines()
    for n in range(3):
        lines("working", f"Working on {n}")
    assert raw.flushes == 0
    assert messages(path.read_text()) == ["Working on 0", "Working on 1", "Working on 2"]
    out.reconfigure(write_through=False)  # as a handler might, within the same millisecond
    flushed = raw.flushes
    lines("working", "Working on 3")
    assert raw.flushes == flushed + 1
    assert messages(path.read_text())[-1] == "Working on 3"


class _Holding(io.TextIOWrapper):
    """A text layer of someone's own that holds what it is given until a flush."""

    held: list[str]

    def write(self, text: str) -> int:
        self.__dict__.setdefault("held", []).append(text)
        return len(text)

    def flush(self) -> None:
        for text in self.__dict__.pop("held", []):
            super().write(text)
        super().flush()


def test_a_text_layer_of_its_own_over_an_unbuffered_file_is_flushed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "log"
    out = _Holding(io.FileIO(path, "w"), encoding="utf-8", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    Lines()("working", "Working on apple")
    assert messages(path.read_text()) == ["Working on apple"]


@pytest.fixture
def switching_often() -> Iterator[None]:
    """Threads that take turns every microsecond: a line written in parts, with a flush or another
    system call between them, would be split."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("switching_often")
@pytest.mark.parametrize("form", ["text", "json"])
@pytest.mark.parametrize("stream", ["unbuffered", "file", "memory"])
def test_lines_of_threads_never_interleave(form: str, stream: str, tmp_path: Path) -> None:
    # The worker's thread and the lease keeper's both log. Through an unbuffered stream, as on a
    # pod (PYTHONUNBUFFERED), through a buffered file, and through a text layer over memory, where
    # no system call makes the threads take turns at the end of a line.
    per_thread = 2000
    raw: io.RawIOBase | io.BufferedIOBase
    if stream == "unbuffered":
        raw = io.FileIO(tmp_path / "log", "w")
    else:
        raw = (tmp_path / "log").open("wb") if stream == "file" else io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8", write_through=stream == "unbuffered")
    lines = Lines(form=form, out=out)

    def write(n: int) -> None:
        for i in range(per_thread):
            if i % 2:
                lines("working", f"Working on {n}-{i}", item=f"{n}-{i}")
            else:  # the other path of a line: a message with fields to format
                lines("lease-lost", f"Lease on {n}-{i} was lost", item=f"{n}-{i}", attempt=1)

    in_threads(write, 4)
    out.flush()
    written = raw.getvalue() if isinstance(raw, io.BytesIO) else (tmp_path / "log").read_bytes()
    out.close()
    said = messages(written.decode())
    assert len(said) == 4 * per_thread
    for n in range(4):  # each thread's lines whole, and in the order it wrote them
        own = [text for text in said if re.search(rf" {n}-\d+( |$)", text)]
        assert [int(text.split(f"{n}-")[1].split()[0]) for text in own] == list(range(per_thread))


@pytest.mark.parametrize("write_through", [False, True], ids=["buffered", "unbuffered"])
def test_a_line_held_up_on_its_way_out_takes_no_line_of_another_thread_with_it(
    write_through: bool,
) -> None:
    # One schedule of the two threads, forced: the worker's thread is halfway through writing a
    # line when the keeper's logs one, and the keeper's write then stalls (a pipe whose reader is
    # slow). A text layer that holds text until a flush is not safe to share: without a lock, the
    # keeper's flush took the worker's line along with its own, and handed both to the file after
    # the worker's next line.
    mid_line, stalled, go_on = threading.Event(), threading.Event(), threading.Event()
    keeper: list[threading.Thread] = []

    def keeper_logs_once() -> None:
        if not keeper:
            keeper.append(threading.Thread(target=lines, args=("lease-lost", "Lease on k lost")))
            mid_line.set()
            keeper[0].start()
            stalled.wait(0.5)  # or the keeper is kept from the stream until this line is out
            mid_line.clear()

    class Stalling(io.BytesIO):
        def write(self, data: Any) -> int:
            if keeper and threading.current_thread() is keeper[0]:
                if mid_line.is_set():
                    stalled.set()
                    go_on.wait(5)
            else:
                keeper_logs_once()  # the worker's line, handed to the file
            return super().write(data)

    class Hooked(io.TextIOWrapper):
        def write(self, text: str) -> int:
            written = super().write(text)
            keeper_logs_once()  # the worker's line, in the text layer
            return written

    file = Stalling()
    out = Hooked(file, encoding="utf-8", write_through=write_through)
    lines = Lines(out=out)
    lines("working", "Working on a1")
    lines("working", "Working on a2")
    go_on.set()
    keeper[0].join()
    out.flush()
    said = messages(file.getvalue().decode())
    assert [text for text in said if text.startswith("Working")] == [
        "Working on a1",
        "Working on a2",
    ]
    assert "Lease on k lost" in said


def _through_a_slow_pipe(
    write: Callable[[Lines, int], None], *, form: str = "text", encoding: str = "utf-8"
) -> str:
    """What two threads' `write(lines, n)` put through a pipe whose reader lags, as a pod's
    output is a pipe written unbuffered: a write of more than 4 KiB (PIPE_BUF) waits for room,
    and the kernel lets another thread's write in meanwhile."""
    read_end, write_end = os.pipe()
    out = io.TextIOWrapper(
        io.FileIO(write_end, "w"), encoding=encoding, errors="backslashreplace",
        write_through=True,
    )  # fmt: skip
    lines = Lines(form=form, out=out)
    received = bytearray()

    def read_slowly() -> None:
        while chunk := os.read(read_end, 4096):
            received.extend(chunk)
            time.sleep(0.0002)

    reader = threading.Thread(target=read_slowly)
    reader.start()
    in_threads(lambda n: write(lines, n), 2)
    out.close()
    reader.join()
    os.close(read_end)
    return received.decode()


@pytest.mark.parametrize(
    ("form", "encoding", "message"),
    [
        ("json", "utf-8", "x" * 20_000),  # a traceback is one line in JSON
        ("text", "utf-8", "x" * 20_000),  # one long line: an item, an error
        # Few characters, each written as 10 bytes (\U0001f34e), more than a pipe takes at once:
        # for a shortcut that would count a line's characters, not its bytes.
        ("text", "ascii", "\N{RED APPLE}" * 500),
    ],
    ids=["json", "text", "escaped"],
)
def test_lines_longer_than_a_pipe_takes_at_once_stay_whole(
    form: str, encoding: str, message: str
) -> None:
    def write(lines: Lines, n: int) -> None:
        for i in range(30):
            lines("traceback", f"{n}-{i} {message}")

    received = _through_a_slow_pipe(write, form=form, encoding=encoding)
    said = messages(received)  # a line cut by another is not JSON: left out
    assert sorted(text.split()[0] for text in said) == sorted(
        f"{n}-{i}" for n in range(2) for i in range(30)
    )


def test_a_short_line_never_lands_inside_a_long_one() -> None:
    # The worker's traceback and the lease keeper's short lines, at once. A line short enough for
    # the kernel to write whole still lands between two parts of a longer one, unless it waits
    # for the lock that the longer one holds.
    def write(lines: Lines, n: int) -> None:
        if n == 0:
            for i in range(20):
                traceback = "\n".join(f"File x line {i}-{j} {'y' * 60}" for j in range(300))
                lines("traceback", traceback)
        else:
            for i in range(3000):
                lines("lease-lost", f"Lease on {i} was lost")

    received = _through_a_slow_pipe(write)
    whole = re.compile(r"\S+Z (ERROR File x line \d+-\d+ y{60}|WARNING Lease on \d+ was lost)")
    cut = [line for line in received.splitlines() if not whole.fullmatch(line)]
    assert not cut, f"{len(cut)} lines cut or joined, the first: {cut[0][:120]!r}"
    said = messages(received)
    assert [text for text in said if text.startswith("Lease")] == [
        f"Lease on {i} was lost" for i in range(3000)
    ]
    assert len(said) == 20 * 300 + 3000


def test_a_signal_handler_that_logs_while_a_line_is_written_goes_on() -> None:
    # Python runs a signal handler between two steps of the interrupted thread: here, inside the
    # write of a line, with the lock taken. A handler of the user's that logs takes it again.
    program = """
import io, signal
from rediswq.logs import Lines, messages

class Signalling(io.TextIOWrapper):
    def write(self, text):
        written = super().write(text)
        if "apple" in text:
            signal.raise_signal(signal.SIGUSR1)
        return written

out = Signalling(io.BytesIO(), encoding="utf-8")
lines = Lines(out=out)
signal.signal(signal.SIGUSR1, lambda signum, frame: lines("log", "Handled SIGUSR1"))
lines("working", "Working on apple")
lines("working", "Working on banana")
out.flush()
print(messages(out.buffer.getvalue().decode()))
"""
    ran = subprocess.run(
        [sys.executable, "-c", program], check=False, capture_output=True, text=True, timeout=10,
        env=cli_env(),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == str(["Working on apple", "Handled SIGUSR1", "Working on banana"])


def test_a_signal_handler_that_raises_while_a_line_is_written_lets_other_threads_log() -> None:
    # The worker's second SIGTERM raises Stopped from its handler, which may run inside the write
    # of a line: the lock must be let go on the way out, or the lease keeper's thread, waiting to
    # write its own line, waits for ever.
    program = """
import io, signal, threading, time
from rediswq.logs import Lines, messages

class Stopped(Exception):
    pass

def stop(signum, frame):
    raise Stopped

class Signalling(io.TextIOWrapper):
    def write(self, text):
        written = super().write(text)
        if "apple" in text:
            keeper.start()
            time.sleep(0.2)  # the keeper's thread now waits for the lock
            signal.raise_signal(signal.SIGUSR1)
        return written

out = Signalling(io.BytesIO(), encoding="utf-8")
lines = Lines(out=out)
keeper = threading.Thread(target=lines, args=("lease-lost", "The keeper's line"))
signal.signal(signal.SIGUSR1, stop)
try:
    lines("working", "Working on apple")
except Stopped:
    keeper.join(5)
    lines("exiting", "Stopped, exiting")
out.flush()
print(keeper.is_alive(), messages(out.buffer.getvalue().decode()))
"""
    ran = subprocess.run(
        [sys.executable, "-c", program], check=False, capture_output=True, text=True, timeout=10,
        env=cli_env(),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    said = ["Working on apple", "The keeper's line", "Stopped, exiting"]
    assert ran.stdout.strip() == f"False {said}"


def test_a_process_forked_while_another_thread_writes_a_line_can_log() -> None:
    # A handler that forks while the lease keeper's thread is halfway through a line: the child
    # has no such thread, so the lock it copied would never be released.
    writing = threading.Event()

    class Slow(io.TextIOWrapper):
        def write(self, text: str) -> int:
            if "keeper" in text:
                writing.set()
                time.sleep(0.3)
            return super().write(text)

    lines = Lines(out=Slow(io.BytesIO(), encoding="utf-8"))
    keeper = threading.Thread(target=lines, args=("lease-lost", "The keeper's line"))
    keeper.start()
    assert writing.wait(5)
    child = os.fork()
    if child == 0:  # the handler's child: logs, and ends as a handler's child would
        code = 1
        try:
            lines("working", "Working on apple")
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 10
    while (ended := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    if ended[0] == 0:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
    keeper.join()
    assert ended[0] == child, "the child never logged its line"
    assert os.waitstatus_to_exitcode(ended[1]) == 0
