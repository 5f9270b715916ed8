"""`make bench`: items per second until the last worker exits, ours against the tutorial's commands.

Each run starts W worker processes with a no-op handler, waits until each has connected and said
so, publishes N items, and times from then to the last exit. Interpreter start-up (about 0.2 s a
process here, as long as a whole prefetching run) is left out for every contender alike.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rediswq.connection import connect
from rediswq.queue import WorkQueue
from rediswq.seeding import seed
from rediswq.server import EmbeddedRedis

BASELINE = Path(__file__).with_name("tutorial_baseline.py")
QUEUE = "bench"


@dataclass(frozen=True)
class Contender:
    name: str
    prefetch: int | None  # None: the tutorial baseline

    def command(self, url: str) -> list[str]:
        if self.prefetch is None:
            return [sys.executable, str(BASELINE), url, QUEUE]
        return [
            sys.executable, "-m", "rediswq", "worker", "--redis-url", url, "--queue", QUEUE,
            "--work-seconds", "0", "--prefetch", str(self.prefetch),
        ]  # fmt: skip


# The targets at 2 workers, for the contenders after the baseline.
TARGETS = (3, 20)
# docs/benchmarks.md from this line on is measured by the container e2e, and `make bench` keeps it.
KEPT = "<!-- From here on: measured by the container e2e (make e2e-docker), kept by make bench. -->"

CONTENDERS = (
    Contender("tutorial baseline", None),
    Contender("rediswq, defaults", 1),
    Contender("rediswq, prefetch 64", 64),
)


def _wait_for(log: Path, marker: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while marker not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"a worker never said {marker!r}: {log.read_text()[-500:]}")
        time.sleep(0.01)


def run_once(
    server: EmbeddedRedis, contender: Contender, workers: int, items: int, logs: Path
) -> float:
    queue = WorkQueue(connect(server.url), QUEUE)
    db = queue.client
    db.delete(*queue.keys.all(), f"{QUEUE}:processing", f"{QUEUE}:go")
    marker = "ready" if contender.prefetch is None else "Initial queue state"
    # Output goes to files, not pipes: a reader here would take CPU from the workers.
    procs = []
    for number in range(workers):
        log = logs / f"worker-{number}.log"
        with log.open("wb") as out:
            procs.append((subprocess.Popen(contender.command(server.url), stdout=out), log))
    for proc, log in procs:
        _wait_for(log, marker, proc)
    payload = [f"item-{n}".encode() for n in range(items)]
    if contender.prefetch is None:
        db.rpush(QUEUE, *payload)  # the tutorial fills its list by hand
        db.rpush(f"{QUEUE}:go", *["go"] * workers)
    else:
        seed(queue, payload)  # waiting workers start at the seal
    started = time.perf_counter()
    codes = [proc.wait() for proc, _ in procs]
    elapsed = time.perf_counter() - started
    left = queue.counts()[0]
    if any(codes) or left:
        raise SystemExit(f"{contender.name}: exit codes {codes}, {left} items left")
    return items / elapsed


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=5, help="runs per cell; the best counts")
    parser.add_argument("--output", type=Path, help="write the table here as Markdown")
    args = parser.parse_args()

    with EmbeddedRedis() as server, tempfile.TemporaryDirectory() as logs:
        version = connect(server.url).info("server").get("redis_version", "?")
        # Rounds interleave the contenders, so a slow spell of a shared machine does not fall on
        # one contender's runs only; each cell keeps its best round.
        rates: dict[tuple[str, int], float] = {}
        for _ in range(args.repeat):
            for w in args.workers:
                for c in CONTENDERS:
                    rate = run_once(server, c, w, args.items, Path(logs))
                    rates[(c.name, w)] = max(rate, rates.get((c.name, w), 0.0))
    header = "| contender | " + " | ".join(f"{w} worker(s)" for w in args.workers) + " |"
    lines = [header, "|---|" + "---:|" * len(args.workers)]
    for c in CONTENDERS:
        cells = []
        for w in args.workers:
            ratio = rates[(c.name, w)] / rates[(CONTENDERS[0].name, w)]
            cells.append(f"{rates[(c.name, w)]:,.0f}/s ({ratio:.1f}x)")
        lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    if 2 in args.workers:
        base = rates[(CONTENDERS[0].name, 2)]
        for contender, target in zip(CONTENDERS[1:], TARGETS, strict=True):
            ratio = rates[(contender.name, 2)] / base
            verdict = "met" if ratio >= target else "NOT met"
            table += (
                f"\n\nTarget for {contender.name} at 2 workers: {target}x; {ratio:.1f}x, {verdict}."
            )
    print(table)
    if args.output:
        old = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        kept = "\n" + old[old.index(KEPT) :] if KEPT in old else ""
        args.output.write_text(
            "# Benchmarks\n\n"
            f"`make bench`: {args.items:,} items, no-op handler, items per second from the moment "
            "the items are published to waiting, connected workers until the last one exits "
            f"(best of {args.repeat} rounds, each running every contender in turn); the ratio is "
            "against the tutorial baseline with as many workers. The baseline varies most: like "
            "the tutorial's workers, one may wait up to 2 s in BRPOPLPUSH after the last item.\n\n"
            f"Machine: {machine()}; server: {Path(server.binary).name} {version}.\n\n"
            f"{table}\n{kept}",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
