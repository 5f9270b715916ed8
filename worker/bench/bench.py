"""`make bench`: what one item costs, ours against the tutorial's commands and a batched-Lua
reference loop, and (`--against REV`) this checkout against another commit.

Each run starts W worker processes with a no-op handler (or one INCR a item), waits until each has
connected, said so and come to rest waiting, publishes N items and times from then to the last
exit. Per run it reads:
items per second; the workers' CPU per item (their processes' user+system time from the go to
their exit, the supervisor's child included); Redis's CPU per item (INFO's used_cpu_sys and
used_cpu_user); the commands Redis ran per item (INFO commandstats, the ones inside scripts
included). Apart from that, the time from spawning a worker to its first "Working on" line on a
sealed queue, interpreter start-up included, five times a side after each round. Rounds alternate
the contenders (and the sides), so a slow spell of a shared machine falls on all of them alike;
each cell reports the median round. With `--instructions`, each side's instructions per item too,
counted by valgrind (instructions.py), which the machine's load does not move.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path

import redis
from rediswq.server import EmbeddedRedis
from sides import Side, compared

HERE = Path(__file__).resolve().parent
QUEUE = "bench"
SPAWNS_A_ROUND = 5  # worker starts timed per side after each round; the table gives their median
# docs/benchmarks.md from this line on is measured otherwise (fleet.py, the container e2e), and
# `make bench` keeps it.
KEPT = "<!-- From here on: measured by fleet.py and the container e2e, kept by make bench. -->"


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # "worker", "baseline" (tutorial_baseline.py) or "reference" (reference.py)
    prefetch: int = 1
    handler: str = ""
    side: Side | None = None  # None: the same for every side

    @property
    def label(self) -> str:
        return f"{self.name} ({self.side.name})" if self.side else self.name

    def command(self, url: str, python: str) -> list[str]:
        if self.kind == "baseline":
            return [python, str(HERE / "tutorial_baseline.py"), url, QUEUE]
        if self.kind == "reference":
            return [python, str(HERE / "reference.py"), url, QUEUE, str(self.prefetch)]
        args = [
            python, "-m", "rediswq", "worker", "--redis-url", url, "--queue", QUEUE,
            "--work-seconds", "0", "--prefetch", str(self.prefetch),
        ]  # fmt: skip
        return args + (["--handler", self.handler] if self.handler else [])


@dataclass
class Cell:
    """The rounds of one contender at one worker count."""

    rate: list[float] = field(default_factory=list)
    worker_us: list[float] = field(default_factory=list)
    server_us: list[float] = field(default_factory=list)
    commands: list[float] = field(default_factory=list)

    def median(self, name: str) -> float:
        values: list[float] = getattr(self, name)
        return statistics.median(values) if values else float("nan")


class Server:
    """Redis's own counters: CPU seconds and commands run, read through one connection."""

    def __init__(self, url: str) -> None:
        self.db = redis.Redis.from_url(url, single_connection_client=True)

    def counters(self) -> tuple[float, int]:
        info = self.db.info("everything")
        cpu = float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        calls = sum(int(v["calls"]) for k, v in info.items() if k.startswith("cmdstat_"))
        return cpu, calls - 1  # the INFO that read them


def _threads(pid: int) -> Iterator[Path]:
    """The /proc directory of each thread of process `pid` and of its live children (the
    supervised worker). A process that ended meanwhile is left out, with its children."""
    task = Path(f"/proc/{pid}/task")
    try:
        threads = os.listdir(task)
        children = (task / str(pid) / "children").read_text().split()
    except OSError:
        return
    for thread in threads:
        yield task / thread
    for child in children:
        yield from _threads(int(child))


def _read(path: Path) -> str:
    """`path`'s text; empty if its thread ended since the listing (the others still count)."""
    with suppress(FileNotFoundError, ProcessLookupError):
        return path.read_text()
    return ""


def _cpu_of_tree(pid: int) -> float:
    """CPU seconds so far of process `pid` and its live children (the supervised worker).

    Summed from each thread's schedstat, in nanoseconds. /proc/PID/stat counts in clock ticks
    (10 ms), rounded down for user and system time apart: read at the go, it made the CPU
    after the go look larger by up to 20 ms a process (10 on average), twice as much for a
    worker with a supervisor as for one without. A thread that ended before the go is not
    counted here but is in the rusage at the exit; the workers start theirs after they say they
    are ready.
    """
    stats = (_read(thread / "schedstat") for thread in _threads(pid))
    return sum(int(stat.split()[0]) for stat in stats if stat) / 1e9


def _reaped(proc: subprocess.Popen[bytes]) -> tuple[int, float]:
    """Wait for `proc`: its exit code and the CPU seconds of it and its waited-for children."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def _wait_for(log: Path, marker: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while marker not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"a worker never said {marker!r}: {log.read_text()[-500:]}")
        time.sleep(0.01)


def _runnable(pid: int) -> bool:
    """Whether a thread of process `pid` or of its children is running or waiting for a core."""
    stats = (_read(thread / "stat") for thread in _threads(pid))
    # The state follows the command's name in brackets, which may hold spaces.
    return any(stat.rpartition(")")[2].split()[:1] == ["R"] for stat in stats)


def settled(pids: list[int], quiet: float = 0.05, timeout: float = 10.0) -> None:
    """Wait until none of `pids` (their children included) has used CPU for `quiet` seconds, nor
    waits for a core: each is waiting for the items, its start over. A worker's ready line is not
    the end of its start: it subscribes for wake-ups at its first wait, after the line, and the go
    could come during that, by how long the poll for the line slept. A worker that never rests
    that long (one that polls faster) gets the go at `timeout`, and the run says so."""
    deadline = time.monotonic() + timeout
    last = [_cpu_of_tree(pid) for pid in pids]
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = [_cpu_of_tree(pid) for pid in pids]
        if now == last and not any(map(_runnable, pids)):
            return
        last = now
    print(f"the workers did not come to rest within {timeout:g}s; the go comes anyway",
          file=sys.stderr, flush=True)  # fmt: skip


def _env() -> dict[str, str]:
    # The bench directory on the path: the INCR handler (handlers.py) for either side. Output
    # unbuffered, as the image has it: a worker's log then takes the same path as on a pod.
    path = os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def run_once(
    server: EmbeddedRedis, contender: Contender, python: str, *, workers: int, items: int,
    logs: Path,
) -> tuple[float, float, float, float]:  # fmt: skip
    """(items/s, worker CPU us/item, Redis CPU us/item, commands/item) of one run."""
    meter = Server(server.url)
    meter.db.flushall()
    env = {**_env(), "BENCH_REDIS_URL": server.url}
    procs = []
    for number in range(workers):
        log = logs / f"worker-{number}.log"
        with log.open("wb") as out:
            command = contender.command(server.url, python)
            procs.append((subprocess.Popen(command, stdout=out, env=env), log))
    seeder = None
    if contender.kind == "worker":
        seeder = subprocess.Popen(
            [python, str(HERE / "seeder.py"), server.url, QUEUE, str(items)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert seeder.stdin and seeder.stdout
        if seeder.stdout.readline().strip() != b"ready":
            raise SystemExit("the seeder did not start")
    marker = "Initial queue state" if contender.kind == "worker" else "ready"
    for proc, log in procs:
        _wait_for(log, marker, proc)
    settled([proc.pid for proc, _ in procs])
    at_go = sum(_cpu_of_tree(proc.pid) for proc, _ in procs)
    cpu, calls = meter.counters()
    if seeder is None:
        meter.db.rpush(QUEUE, *[b"item-%d" % n for n in range(items)])
        cpu, calls = meter.counters()  # the hand-filled list is not the contender's work
        started = time.monotonic()
        meter.db.rpush(f"{QUEUE}:go", *["go"] * workers)
    else:
        assert seeder.stdin and seeder.stdout
        seeder.stdin.write(b"go\n")
        seeder.stdin.flush()
        started = float(seeder.stdout.readline())
    reaped = [_reaped(proc) for proc, _ in procs]
    elapsed = time.monotonic() - started
    cpu_after, calls_after = meter.counters()
    if seeder is not None:
        seeder.wait()
    codes = [code for code, _ in reaped]
    left = meter.db.llen(QUEUE)
    if any(codes) or left:
        raise SystemExit(f"{contender.label}: exit codes {codes}, {left} items left")
    worker_cpu = sum(used for _, used in reaped) - at_go
    return (
        items / elapsed,
        worker_cpu / items * 1e6,
        (cpu_after - cpu) / items * 1e6,
        (calls_after - calls) / items,
    )


def spawn_to_first_item(server: EmbeddedRedis, python: str, items: int = 200) -> float:
    """Seconds from spawning one worker (defaults) to its first "Working on" line, on a sealed
    queue with `items` items."""
    Server(server.url).db.flushall()
    seeder = subprocess.Popen(
        [python, str(HERE / "seeder.py"), server.url, QUEUE, str(items)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    seeder.communicate(b"go\n")
    command = Contender("", "worker").command(server.url, python)
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=_env())
    assert proc.stdout
    # Blocking reads: this process sleeps until a line comes, taking no CPU from the worker.
    for line in proc.stdout:
        if b"Working on" in line:
            first = time.monotonic() - started
            break
    else:
        raise SystemExit(f"the worker of {python} never worked on an item")
    proc.stdout.read()
    if proc.wait():
        raise SystemExit(f"the worker of {python} exited {proc.returncode}")
    return first


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


def contenders(sides: list[Side], incr: bool) -> list[Contender]:
    """Every contender, each of ours once per side, the sides next to each other."""
    shared = [
        Contender("tutorial baseline", "baseline"),
        Contender("reference, K=64", "reference", 64),
    ]
    own = [("rediswq, defaults", 1, ""), ("rediswq, prefetch 64", 64, "")]
    if incr:
        own.append(("rediswq, defaults, INCR", 1, "handlers:incr"))
    return shared + [
        Contender(name, "worker", prefetch, handler, side)
        for name, prefetch, handler in own
        for side in sides
    ]


def _in_turn(contenders: list[Contender], number: int) -> list[Contender]:
    """The contenders of round `number`: every other round the sides swap places, so that
    neither always runs first (after the other's exit, say)."""
    if number % 2:
        return contenders
    swapped = list(contenders)
    for i in range(len(swapped) - 1):
        a, b = swapped[i], swapped[i + 1]
        if a.side and b.side and a.name == b.name and a.side != b.side:
            swapped[i], swapped[i + 1] = b, a
    return swapped


def _rounds(
    server: EmbeddedRedis, everyone: list[Contender], args: argparse.Namespace, logs: Path
) -> Iterator[tuple[int, Contender, int, tuple[float, float, float, float]]]:
    for number in range(1, args.repeat + 1):
        for w in args.workers:
            for c in _in_turn(everyone, number):
                python = c.side.python if c.side else sys.executable
                measured = run_once(server, c, python, workers=w, items=args.items, logs=logs)
                print(
                    f"round {number}/{args.repeat}, {w} worker(s), {c.label}: "
                    f"{measured[0]:,.0f}/s, "
                    f"worker {measured[1]:.1f} us/item, server {measured[2]:.1f} us/item, "
                    f"{measured[3]:.1f} commands/item",
                    file=sys.stderr, flush=True,
                )  # fmt: skip
                yield number, c, w, measured


def _ratios(mine: Cell, theirs: Cell, measure: str) -> str:
    """The ratio of the medians of `measure`, and the range of the ratios round by round."""
    pairs = zip(getattr(mine, measure), getattr(theirs, measure), strict=True)
    each = [a / b for a, b in pairs]
    return f"{mine.median(measure) / theirs.median(measure):.2f} ({min(each):.2f}-{max(each):.2f})"


def report(
    everyone: list[Contender],
    cells: dict[tuple[str, int], Cell],
    spawn: dict[str, list[float]],
    sides: list[Side],
    workers: list[int],
) -> str:
    lines = [
        "| contender | workers | items/s | worker CPU us/item | Redis CPU us/item "
        "| commands/item |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for w in workers:
        for c in everyone:
            cell = cells[(c.label, w)]
            lines.append(
                f"| {c.label} | {w} | {cell.median('rate'):,.0f} | {cell.median('worker_us'):.1f} "
                f"| {cell.median('server_us'):.1f} | {cell.median('commands'):.1f} |"
            )
    lines += ["", "| side | spawn to first item (s) |", "|---|---:|"]
    lines += [f"| {side.name} | {statistics.median(spawn[side.name]):.3f} |" for side in sides]
    if 2 in workers:
        reference = cells[("reference, K=64", 2)].median("rate")
        baseline = cells[("tutorial baseline", 2)].median("rate")
        lines += ["", "At 2 workers, against the tutorial baseline and the reference loop:", ""]
        for c in everyone[2:]:
            rate = cells[(c.label, 2)].median("rate")
            lines.append(f"- {c.label}: {rate / baseline:.1f}x the baseline, "
                         f"{rate / reference:.2f} of the reference")  # fmt: skip
    if len(sides) == 2:
        this, other = sides
        lines += [
            "",
            f"{this.name} against {other.name}, ratios of the medians (below 1: {this.name} "
            "needs less; above 1 for items/s: faster), and in brackets the lowest and highest "
            "ratio of one round's pair, run one after the other: how far the machine moved a "
            "ratio within this run:",
            "",
            "| contender | workers | items/s | worker CPU/item | Redis CPU/item | commands/item |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for w in workers:
            for c in everyone:
                if c.side is not this:
                    continue
                mine = cells[(c.label, w)]
                theirs = cells[(Contender(c.name, c.kind, side=other).label, w)]
                shown = [_ratios(mine, theirs, m)
                         for m in ("rate", "worker_us", "server_us", "commands")]  # fmt: skip
                lines.append(f"| {c.name} | {w} | " + " | ".join(shown) + " |")
        mine_spawn = statistics.median(spawn[this.name])
        theirs_spawn = statistics.median(spawn[other.name])
        lines.append(f"\nSpawn to first item: {mine_spawn:.3f} s against {theirs_spawn:.3f} s "
                     f"({mine_spawn / theirs_spawn:.2f}).")  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each cell its median")
    parser.add_argument("--against", metavar="REV", help="also measure this commit, alternating")
    parser.add_argument("--no-incr", dest="incr", action="store_false", help="skip the INCR rows")
    parser.add_argument(
        "--instructions", action="store_true",
        help="also count each side's instructions per item with valgrind (instructions.py)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, help="write the results here as Markdown")
    args = parser.parse_args()

    with ExitStack() as stack:
        sides = compared(stack, args.against)
        server = stack.enter_context(EmbeddedRedis())
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        version = Server(server.url).db.info("server").get("redis_version", "?")
        everyone = contenders(sides, args.incr)
        cells = {(c.label, w): Cell() for c in everyone for w in args.workers}
        spawn: dict[str, list[float]] = {side.name: [] for side in sides}
        rounds = _rounds(server, everyone, args, logs)
        for number, c, w, (rate, worker_us, server_us, commands) in rounds:
            cell = cells[(c.label, w)]
            cell.rate.append(rate)
            cell.worker_us.append(worker_us)
            cell.server_us.append(server_us)
            cell.commands.append(commands)
            if c is _in_turn(everyone, number)[-1] and w == args.workers[-1]:  # a round ended
                # Several starts a round, the sides in turn: one start is a single sample of a
                # shared machine's load, and a slow spell would fall on one side alone.
                for start in range(SPAWNS_A_ROUND):
                    for side in sides if (number + start) % 2 else sides[::-1]:
                        spawn[side.name].append(spawn_to_first_item(server, side.python))
                        print(f"spawn to first item, {side.name}: {spawn[side.name][-1]:.3f} s",
                              file=sys.stderr, flush=True)  # fmt: skip
        table = report(everyone, cells, spawn, sides, args.workers)
        if args.instructions:
            import instructions  # noqa: PLC0415 - here, not at the top: it imports this module

            table += "\n\n" + instructions.table(server.binary, sides)
    print(table)
    if args.output:
        old = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        kept = "\n" + old[old.index(KEPT) :] if KEPT in old else ""
        today = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
        workers = " ".join(map(str, args.workers))
        options = f"--items {args.items} --workers {workers} --repeat {args.repeat}"
        options += f" --against {args.against}" if args.against else ""
        options += " --instructions" if args.instructions else ""
        command = f"make bench BENCH_ARGS='{options}'"
        args.output.write_text(
            "# Benchmarks\n\n"
            f"`{command}` on {today}, commit {sides[0].name}"
            + (f" against {sides[1].name}" if len(sides) == 2 else "")
            + f": {args.items:,} no-op items a run (the INCR rows: one INCR a item), workers "
            f"started and waiting before the items come, medians of {args.repeat} rounds that "
            "alternate the contenders and the sides; spawn to first item: the median of "
            f"{SPAWNS_A_ROUND * args.repeat} starts a side. Worker CPU counts from the go to the "
            "workers' exit; Redis's CPU and commands include the seed's for the rediswq rows. "
            "The reference loop (worker/bench/reference.py) is the least a batched lease can "
            "cost: LPOP 64 and one ZADD, then ZREM, in one script a round trip, with no owner "
            "records, no reclaim and no replay memory. "
            f"Machine: {machine()}; server: {Path(server.binary).name} {version}. "
            "Absolute figures on a shared machine vary from day to day and hour to hour; the "
            "ratios within one run are what compare.\n\n"
            f"{table}\n{kept}",
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
