"""Many workers, one Redis: what waiting workers cost it, and how soon the seal reaches them all.

W worker processes (256 by default) start on a queue the seed has not sealed yet. Once every one
has said that it waits, the benchmark reads Redis's counters over a window: the calls a second of
all of them waiting. Then it seeds ITEMS short items (5 ms each) and TAIL long ones (40 s) and
seals: for each worker, the time from the seal to its first "Working on" line. When only the
long items are left, it reads the calls a second again over 20 s, from 2 s on, while all but
TAIL workers wait for the last ones (all of them began to wait within a second or so, so a short
window would catch their first, jittered, pauses only). Memory is the RSS and PSS of every
worker process (a supervisor and its worker each) while they wait.

"Calls" are what the clients send (FCALL, EVALSHA, PUBSUB NUMSUB); "commands" add the ones the
scripts run inside Redis.

Usage: python fleet.py [--workers 256] [--against REV]; a Linux machine (it reads /proc).
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import redis
from bench import HERE, _env
from rediswq.server import EmbeddedRedis
from sides import Side, compared

QUEUE = "fleet"
CALLS = ("cmdstat_fcall", "cmdstat_evalsha", "cmdstat_pubsub|numsub")
WINDOW = 10.0  # seconds each rate is measured over


@dataclass(frozen=True)
class Fleet:
    workers: int
    waiting_calls: float  # per second
    waiting_commands: float
    tail_calls: float
    tail_commands: float
    first_lease: list[float]  # seconds from the seal, one per worker
    rss_mib: float
    pss_mib: float


def _counters(db: redis.Redis) -> tuple[int, int]:
    stats = db.info("commandstats")
    calls = sum(int(stats[name]["calls"]) for name in CALLS if name in stats)
    every = sum(int(value["calls"]) for value in stats.values())
    return calls, every - 1  # the INFO itself


def _rates(db: redis.Redis, seconds: float) -> tuple[float, float]:
    calls, every = _counters(db)
    time.sleep(seconds)
    calls_after, every_after = _counters(db)
    return (calls_after - calls) / seconds, (every_after - every) / seconds


def _tree(pid: int) -> list[int]:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for child in children for p in _tree(int(child)))]


def _memory(pids: list[int]) -> tuple[float, float]:
    """MiB of RSS and of PSS (shared pages split among their users) of the processes."""
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "Rss":
                rss += int(value.split()[0])
            elif name == "Pss":
                pss += int(value.split()[0])
    return rss / 1024, pss / 1024


def _first_work(log: Path) -> float:
    """The wall-clock time of the first "Working on" line in a worker's log."""
    for line in log.read_text(errors="replace").splitlines():
        if " Working on " in line:
            stamp = line.split(" ", 1)[0]
            when = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
            return when.replace(tzinfo=datetime.UTC).timestamp()
    raise SystemExit(f"{log.name} never worked on an item: {log.read_text()[-300:]}")


def _all_say(logs: list[Path], text: str, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + 600
    left = list(logs)
    while left:
        left = [log for log in left if text not in log.read_text(errors="replace")]
        if any(proc.poll() is not None for proc in procs) or time.monotonic() > deadline:
            raise SystemExit(f"{len(left)} workers never said {text!r}")
        time.sleep(0.5)


def measure(server: EmbeddedRedis, side: Side, workers: int, items: int, tail: int) -> Fleet:
    db = redis.Redis.from_url(server.url)
    db.flushall()
    env = {**_env(), "BENCH_REDIS_URL": server.url, "TAIL": str(tail)}
    command = [
        side.python, "-m", "rediswq", "worker", "--redis-url", server.url, "--queue", QUEUE,
        "--handler", "handlers:short_or_long",
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        logs = [Path(tmp) / f"worker-{n}.log" for n in range(workers)]
        procs = []
        for log in logs:
            with log.open("wb") as out:
                procs.append(subprocess.Popen(command, stdout=out, env=env))
        print(f"{side.name}: {workers} workers started", file=sys.stderr, flush=True)
        _all_say(logs, "Waiting for queue", procs)
        print(f"{side.name}: all wait; measuring", file=sys.stderr, flush=True)
        time.sleep(WINDOW / 2)  # the first ones counted the others before all had come
        rss, pss = _memory([pid for proc in procs for pid in _tree(proc.pid)])
        waiting = _rates(db, WINDOW)
        seeder = subprocess.Popen(
            [side.python, str(HERE / "seeder.py"), server.url, QUEUE, str(items)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert seeder.stdin and seeder.stdout
        seeder.stdout.readline()
        seeder.stdin.write(b"go\n")
        seeder.stdin.flush()
        # The seed starts at this instant (the monotonic clock is the system's): the latency
        # below includes its staging of the items before the seal, a few milliseconds.
        sealed = float(seeder.stdout.readline()) + time.time() - time.monotonic()
        seeder.wait()
        while db.llen(QUEUE) > 0:
            time.sleep(0.1)
        print(f"{side.name}: only the tail left; measuring", file=sys.stderr, flush=True)
        time.sleep(2)
        in_tail = _rates(db, 2 * WINDOW)
        codes = [proc.wait() for proc in procs]
        if any(codes):
            raise SystemExit(f"{side.name}: exit codes {sorted(set(codes))}")
        first = sorted(_first_work(log) - sealed for log in logs)
    return Fleet(workers, *waiting, *in_tail, first, rss, pss)


def report(results: list[tuple[Side, Fleet]]) -> str:
    lines = [
        "| side | workers | calls/s, all waiting | commands/s, all waiting | calls/s, tail "
        "| commands/s, tail | seal → first lease, median / slowest | RSS, PSS (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for side, f in results:
        median = f.first_lease[len(f.first_lease) // 2]
        lines.append(
            f"| {side.name} | {f.workers} | {f.waiting_calls:.0f} | {f.waiting_commands:.0f} "
            f"| {f.tail_calls:.0f} | {f.tail_commands:.0f} "
            f"| {median:.2f} s / {f.first_lease[-1]:.2f} s | {f.rss_mib:,.0f}, {f.pss_mib:,.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=256)
    parser.add_argument("--items", type=int, default=2048, help="short items, 5 ms each")
    parser.add_argument("--tail", type=int, default=4, help="long items at the end, 40 s each")
    parser.add_argument("--against", metavar="REV", help="measure this commit too, after")
    args = parser.parse_args()
    with ExitStack() as stack:
        sides = compared(stack, args.against)
        server = stack.enter_context(EmbeddedRedis())
        results = [(s, measure(server, s, args.workers, args.items, args.tail)) for s in sides]
    print(report(results))


if __name__ == "__main__":
    main()
