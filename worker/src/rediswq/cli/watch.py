"""`status --watch`: a live bar on a terminal, plain lines elsewhere, with the rate and the time
left, until the queue is drained; the last line says why it ended."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column
from rich.text import Text

from rediswq.progress import brief, done_of, ended, finished, missing, total
from rediswq.queue import WorkQueue
from rediswq.status import Status, snapshot


def rate(task: Task) -> str:
    speed = task.speed
    left = task.time_remaining
    shown = f"{speed:.1f} items/s" if speed else "-- items/s"
    if task.finished:
        return shown
    return f"{shown}, ETA {_duration(left)}" if left is not None else f"{shown}, ETA --"


def _duration(seconds: float) -> str:
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _RateColumn(ProgressColumn):
    """Items per second and the time left, from rich's own estimate over the last 30 s."""

    def render(self, task: Task) -> Text:
        return Text(rate(task), style="progress.remaining")


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits 1 on its own; the command's exit code for a closed pipe is decided once.
        self.quiet = True
        raise BrokenPipeError


@dataclass(frozen=True)
class Watched:
    """The last status seen, and why the watch ended."""

    status: Status
    reason: str


def watch(
    queue: WorkQueue,
    out: TextIO,
    *,
    interval: float = 1.0,
    terminal: bool | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Watched:
    """Show the queue's progress until it is drained; a bar if `out` is a terminal (or
    `terminal`), else a line each time the counts change."""
    console = _Console(file=out, force_terminal=terminal, highlight=False)
    live = console.is_terminal
    # On a narrow terminal the counts give way (cut short) before the rate and the time left.
    # The bar, the rate and the time left go by the items finished, failed ones too (they are
    # over); the number beside the bar is of those done, as `rediswq status` counts them.
    progress = Progress(
        TextColumn("{task.description}", table_column=Column(no_wrap=True)),
        BarColumn(bar_width=20),
        TextColumn("{task.fields[done]}", table_column=Column(no_wrap=True)),
        TextColumn("{task.fields[counts]}", table_column=Column(no_wrap=True, ratio=1)),
        _RateColumn(table_column=Column(no_wrap=True)),
        TimeElapsedColumn(),
        console=console,
        disable=not live,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    name = queue.keys.name
    status = snapshot(queue)
    task = progress.add_task(
        name, total=total(status) or None, completed=finished(status), counts="", done=""
    )
    last_seen = ""
    told_missing = False
    # Not started when not live: it then only keeps the rate (some rich versions print a blank
    # line when a disabled display stops).
    with progress if live else contextlib.nullcontext():
        while True:
            progress.update(
                task, total=total(status) or None, completed=finished(status),
                done=f"{status.done}/{total(status)}", counts=brief(status),
            )  # fmt: skip
            if missing(status) and not told_missing:
                told_missing = True
                console.print(
                    f"No queue {name!r} in Redis (no items, seal or counters): waiting for it to "
                    "be seeded; check --queue (QUEUE_NAME) if it should be there",
                    soft_wrap=True,
                )
            reason = ended(status)
            seen = done_of(status)
            if not live and seen != last_seen:  # a line per change: a log, not a redraw
                console.print(f"{name}: {seen}; {rate(progress.tasks[0])}", soft_wrap=True)
                last_seen = seen
            if reason is not None:
                break
            sleep(interval)
            status = snapshot(queue)
    console.print(f"{name}: {reason}: {status.done} done, {status.failed} failed", soft_wrap=True)
    return Watched(status, reason)
