"""A consistent snapshot of a queue, as text or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rediswq.keys import QueueKeys
from rediswq.queue import WorkQueue
from rediswq.runs import RunInfo, history


@dataclass(frozen=True)
class InFlight:
    lease: int
    item: str
    owner: str
    attempt: int
    expires_in: float  # seconds; negative once expired and not yet reclaimed


@dataclass(frozen=True)
class Status:
    queue: str
    sealed: bool
    pending: int
    in_flight: list[InFlight]
    delayed: int  # failed items waiting for their retry
    done: int
    failed: int
    reclaimed: int
    retried: int
    released: int
    run: RunInfo | None  # the run the queue is sealed for
    earlier_runs: list[RunInfo]  # newest first, while their records are kept

    @property
    def drained(self) -> bool:
        return self.sealed and self.pending == 0 and not self.in_flight and self.delayed == 0

    def as_json(self) -> dict[str, Any]:
        # asdict() leaves a NamedTuple (RunInfo) one, which JSON would write as a list.
        return {
            **asdict(self),
            "run": self.run._asdict() if self.run else None,
            "earlier_runs": [run._asdict() for run in self.earlier_runs],
            "drained": self.drained,
        }


def snapshot(queue: WorkQueue) -> Status:
    keys = queue.keys
    # One read-only script (scripts/snapshot.lua): consistent, and it works over maxmemory.
    reply = queue.run(queue.scripts.snapshot, [1])
    pending, _, delayed, flat_leases, flat_deadlines, flat_stats, sealed, (secs, micros) = reply
    leases = _pairs(flat_leases)
    deadlines = [(lease_id, int(score)) for lease_id, score in _pairs(flat_deadlines).items()]
    stats = _pairs(flat_stats)
    now_ms = int(secs) * 1000 + int(micros) // 1000
    in_flight = []
    for lease_id, deadline in deadlines:
        owner, attempt, item = leases.get(lease_id, b"?\n0\n").split(b"\n", 2)
        in_flight.append(
            InFlight(
                lease=int(lease_id),
                item=item.decode("utf-8", "backslashreplace"),
                owner=owner.decode(),
                attempt=int(attempt),
                expires_in=round((deadline - now_ms) / 1000, 3),
            )
        )
    counter = {k.decode(): int(v) for k, v in stats.items()}
    run, earlier_runs = history(queue)
    return Status(
        queue=keys.name,
        sealed=bool(sealed),
        pending=int(pending),
        in_flight=in_flight,
        delayed=int(delayed),
        **{
            name: counter.get(name, 0)
            for name in ("done", "failed", "reclaimed", "retried", "released")
        },
        run=run,
        earlier_runs=earlier_runs,
    )


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def render(status: Status, keys: QueueKeys) -> str:
    """`status` as text; the keys it names are `keys`, the queue's keys on its server."""
    lines = [
        f"queue      {status.queue}  ({'sealed' if status.sealed else 'not sealed'}"
        f"{', drained' if status.drained else ''})",
        f"pending    {status.pending}",
        f"in flight  {len(status.in_flight)}",
    ]
    lines += [
        f"  lease {f.lease}: {f.item!r} held by {f.owner}, attempt {f.attempt}, "
        f"expires in {f.expires_in:.1f}s"
        for f in status.in_flight
    ]
    lines += [
        f"delayed    {status.delayed}  (failed, waiting for their retry)",
        f"done       {status.done}",
        f"failed     {status.failed}  (dead letters in {keys.failed})",
        f"reclaimed  {status.reclaimed}",
        f"retried    {status.retried}",
        f"released   {status.released}",
    ]
    if status.run:
        lines.append(f"run        {status.run.id}  ({status.run.queued} items queued by its seed)")
    lines += [f"earlier    {_ended(keys, run)}" for run in status.earlier_runs]
    return "\n".join(lines)


def _ended(keys: QueueKeys, run: RunInfo) -> str:
    kept = f"done {run.done}, failed {run.failed} (in {keys.run(run.id, ':failed')})"
    if run.remainder:
        return (
            f"{run.id}  superseded by {run.next}: {run.remainder} items left undone in "
            f"{keys.run(run.id, ':pending')} (`rediswq runs restore {run.id}`); {kept}"
        )
    restored = f", its {run.restored} items left undone restored" if run.restored else ""
    return f"{run.id}  {run.ended}{restored}, then {run.next}; {kept}"
