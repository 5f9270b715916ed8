"""`rediswq local`: the whole system on one machine: an embedded server and worker processes."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TextIO

from rediswq.connection import connect
from rediswq.deadletter import DeadLetters
from rediswq.logs import message
from rediswq.progress import done_of
from rediswq.queue import WorkQueue
from rediswq.results import as_json, stored_results
from rediswq.seeding import read_items, seed
from rediswq.server import EmbeddedRedis
from rediswq.status import Status, snapshot

_SUMMARY = re.compile(r"^Done (\d+) items?;")
# How long interrupted workers get to put their items back before they are killed.
_STOP_SECONDS = 30


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen[str]
    done: int = 0
    lines: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def finish(self, timeout: float | None = None) -> None:
        """Wait for the process, then for its last lines to be shown and counted."""
        self.process.wait(timeout=timeout)
        # The reader thread may still hold lines the process wrote just before it exited (its
        # release notice, its summary); without the join they would be lost or miscounted.
        if self.reader is not None:
            self.reader.join()


class Console:
    """One writer for many threads, so prefixed lines never interleave."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def line(self, text: str) -> None:
        with self._lock:
            self._out.write(text + "\n")
            self._out.flush()


def _stream(worker: WorkerProcess, console: Console) -> None:
    assert worker.process.stdout is not None
    for raw in worker.process.stdout:
        line = raw.rstrip("\n")
        worker.lines.append(line)
        if match := _SUMMARY.match(message(line) or ""):
            worker.done = int(match.group(1))
        console.line(f"[{worker.name}] {line}")


def _start_worker(
    number: int, url: str, queue: str, worker_args: list[str], console: Console
) -> WorkerProcess:
    process = subprocess.Popen(
        [sys.executable, "-m", "rediswq", "worker", "--redis-url", url, "--queue", queue,
         "--redis-wait-timeout", "10", *worker_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Workers on one host cannot share a metrics port: `local` serves no metrics.
        env={**{k: v for k, v in os.environ.items() if k != "METRICS_PORT"},
             "PYTHONUNBUFFERED": "1"},
        # Out of the terminal's reach: its Ctrl-C, landing while a worker still imports, would
        # print a traceback. This command stops them (`_stop`).
        start_new_session=True,
    )  # fmt: skip
    worker = WorkerProcess(f"worker-{number}", process)
    worker.reader = threading.Thread(target=_stream, args=(worker, console), daemon=True)
    worker.reader.start()
    return worker


def run_local(
    items_path: str,
    *,
    workers: int,
    queue_name: str,
    worker_args: list[str],
    results: bool = False,
    keep: str | None = None,
    out: TextIO,
) -> int:
    """Seed `items_path`, drain it with `workers` processes, print a summary; 0 if all done.

    With `keep` (how the user runs `rediswq`), the server stays up and the summary ends with
    the lines that reach and stop it.
    """
    console = Console(out)
    items = read_items(items_path)
    started = time.monotonic()
    with EmbeddedRedis() as server:
        console.line(f"Started {server.binary} on 127.0.0.1:{server.port}")
        queue = WorkQueue(connect(server.url), queue_name)
        queued = seed(queue, items).queued
        console.line(f"Queued {queued} items from {items_path} in {queue_name!r}, sealed")
        pool = [
            _start_worker(n, server.url, queue_name, worker_args, console)
            for n in range(1, workers + 1)
        ]
        try:
            last = _follow(queue, pool, console)
        except KeyboardInterrupt:
            _stop(pool)
            raise
        final = snapshot(queue)
        if _progress(final) != last:
            console.line(_progress(final))
        # The server goes away with this command: show what it kept.
        for letter in DeadLetters(queue).listing():
            console.line(f"dead letter {letter.item!r}: {letter.error}")
        if results:
            for item, stored in sorted(stored_results(queue)):
                console.line(f"result {json.dumps(as_json(item, stored), ensure_ascii=False)}")
        kept = server.detach() if keep is not None else None
    code = _summarize(console, pool, final, queued, time.monotonic() - started)
    if keep is not None and kept is not None:
        for line in _kept(server.url, queue_name, kept, keep):
            console.line(line)
    return code


def _kept(url: str, queue_name: str, pid: int, rediswq: str) -> list[str]:
    """What to paste to look at the kept server's queue, and to stop the server."""
    return [
        "Redis is still running, with the queue (--keep); look inside with:",
        f"  export REDIS_URL={url} QUEUE_NAME={shlex.quote(queue_name)}",
        *(f"  {rediswq} {command}" for command in ("status", "failed", "results")),
        f"Stop it with: kill {pid}",
    ]


def _follow(queue: WorkQueue, pool: list[WorkerProcess], console: Console) -> str:
    """Print the progress line each time it changes until the workers exit; the last one."""
    last = ""
    while any(w.process.poll() is None for w in pool):
        line = _progress(snapshot(queue))
        if line != last:
            console.line(line)
            last = line
        time.sleep(0.2)
    for worker in pool:
        worker.finish()
    return last


def _stop(pool: list[WorkerProcess]) -> None:
    """Let the workers put their items back before the server goes.

    SIGTERM, which a running worker handles as Ctrl-C, and whose default action ends one that
    is still starting silently, where a SIGINT would raise in the middle of its imports.
    """
    for worker in pool:
        if worker.process.poll() is None:
            worker.process.send_signal(signal.SIGTERM)
    for worker in pool:
        try:
            worker.finish(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.finish()


def _progress(status: Status) -> str:
    return f"progress {done_of(status)}"


def _summarize(
    console: Console, pool: list[WorkerProcess], final: Status, queued: int, seconds: float
) -> int:
    console.line(f"Summary: {final.done}/{queued} done, {final.failed} failed, in {seconds:.1f}s")
    for worker in pool:
        console.line(f"  {worker.name}: {worker.done} done, exit {worker.process.returncode}")
    ok = final.done == queued and final.failed == 0 and all(w.process.returncode == 0 for w in pool)
    if not ok:
        console.line("Not every item was done: see the worker logs above")
    return 0 if ok else 1
