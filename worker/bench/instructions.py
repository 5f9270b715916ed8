"""`bench.py --instructions`: the instructions a no-op item costs the worker (all of its
processes) and Redis, counted by valgrind's callgrind.

On a shared machine a CPU time moves by tens of percent from one round to the next, more than two
commits differ. A count of instructions does not move with the machine's load, so it compares two
commits to a fraction of a percent. It is not time: a cache miss costs more than an instruction,
and the kernel's work (system calls, page faults, waking a process) is not counted at all.

Each figure is the difference of two runs, one of `SMALL` and one of `LARGE` items, over the
difference in items: start-up and the shutdown cancel out. Redis's count starts after the seed
(the CPU table's includes it). Needs valgrind on PATH; callgrind runs a program about 50 times
slower, so the runs are short.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench import HERE, QUEUE, Contender
from rediswq.server import EmbeddedRedis
from sides import Side

# Items of the two runs, per prefetch: at 64, whole batches, and enough of them to be the bulk.
SMALL = {1: 200, 64: 640}
LARGE = {1: 2_200, 64: 6_400}
_TOTAL = re.compile(rb"^(?:summary|totals): (\d+)$", re.MULTILINE)


class CountedRedis(EmbeddedRedis):
    """A server run under callgrind, which writes its count to `out` when the server exits."""

    def __init__(self, out: Path, **options: Any) -> None:
        super().__init__(**options)
        self.out = out

    def command(self) -> list[str]:
        # valgrind runs the server in its own process: the pid that answers INFO is the one
        # started, as EmbeddedRedis checks.
        return ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}",
                *super().command()]  # fmt: skip

    def zero(self) -> None:
        """Count from now on: what the server did before (the seed) is left out."""
        assert self._process is not None
        zeroed = ["callgrind_control", "--zero", str(self._process.pid)]
        subprocess.run(zeroed, capture_output=True, check=True)


def total(out: Path) -> int:
    """The instructions a callgrind output file counts."""
    found = _TOTAL.search(out.read_bytes())
    if not found:
        raise SystemExit(f"{out}: no instruction count in it")
    return int(found.group(1))


def _run(server: str, python: str, items: int, prefetch: int) -> tuple[int, int]:
    """(the worker's, Redis's) instructions for a run of `items` sealed no-op items."""
    with tempfile.TemporaryDirectory(prefix="rediswq-instructions-") as tmp:
        counts = Path(tmp)
        # At 1 Hz, not 10: the server's timer does work a second, not an item, and a slower run
        # would count more of it.
        options = ("--hz", "1")
        with CountedRedis(counts / "redis.out", binary=server, options=options) as redis:
            seeder = [python, str(HERE / "seeder.py"), redis.url, QUEUE, str(items)]
            subprocess.run(seeder, input=b"go\n", stdout=subprocess.DEVNULL, check=True)
            redis.zero()
            worker = Contender("counted", "worker", prefetch).command(redis.url, python)
            # A file per process (%p): the worker's supervisor forks the process that works.
            counted = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}/worker.%p"]
            subprocess.run([*counted, *worker], capture_output=True, check=True)
        workers = sorted(counts.glob("worker.*"))
        return sum(total(out) for out in workers), total(counts / "redis.out")


def per_item(server: str, python: str, prefetch: int) -> tuple[float, float]:
    """(the worker's, Redis's) instructions per no-op item at `prefetch`, with the worker of
    `python` and the server binary `server`."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind on PATH (Debian: apt-get install valgrind)")
    small, large = SMALL[prefetch], LARGE[prefetch]
    worker_small, redis_small = _run(server, python, small, prefetch)
    worker_large, redis_large = _run(server, python, large, prefetch)
    span = large - small
    return (worker_large - worker_small) / span, (redis_large - redis_small) / span


def table(server: str, sides: list[Side]) -> str:
    """The counts of each side at prefetch 1 and 64 as Markdown, and the first side's ratio to
    the second's when there are two."""
    counted = {side.name: [n for p in (1, 64) for n in per_item(server, side.python, p)]
               for side in sides}  # fmt: skip
    lines = [
        "Instructions per no-op item, counted by valgrind's callgrind (worker/bench/"
        f"instructions.py: the difference of a run of {SMALL[1]:,} items and one of "
        f"{LARGE[1]:,}, {SMALL[64]:,} and {LARGE[64]:,} at prefetch 64; Redis's from after the "
        "seed):",
        "",
        "| side | worker, defaults | Redis, defaults | worker, prefetch 64 | Redis, prefetch 64 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, counts in counted.items():
        lines.append(f"| {name} | " + " | ".join(f"{n:,.0f}" for n in counts) + " |")
    if len(sides) == 2:
        mine, theirs = (counted[side.name] for side in sides)
        ratios = " | ".join(f"{a / b:.3f}" for a, b in zip(mine, theirs, strict=True))
        lines.append(f"| {sides[0].name} / {sides[1].name} | {ratios} |")
    return "\n".join(lines)
