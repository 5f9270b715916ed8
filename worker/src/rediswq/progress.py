"""How far a queue is: what is finished out of what was queued, what is under way, and whether
it is over (and why). Plain functions of a `Status`, for `status --watch` and `rediswq local`."""

from __future__ import annotations

from rediswq.status import Status


def finished(status: Status) -> int:
    """Items that are over: done, or failed (dead-lettered); what a bar fills with."""
    return status.done + status.failed


def total(status: Status) -> int:
    return finished(status) + status.pending + len(status.in_flight) + status.delayed


def ended(status: Status) -> str | None:
    """Why watching `status` is over, or None while there is work left (or none yet)."""
    if status.pending or status.in_flight or status.delayed:
        return None
    if status.sealed:
        return "sealed and drained"
    if finished(status):
        # The tutorial's manual flow: items pushed by hand, no seal. Workers run with --no-seal
        # end here too; a worker that requires a seal would wait for one.
        return "drained, but not sealed: nothing pending or in flight (more could still be pushed)"
    return None


def missing(status: Status) -> bool:
    """True if Redis holds nothing of this queue: no items, seal, counters or runs."""
    return not (
        total(status) or status.sealed or status.reclaimed or status.retried or status.released
        or status.run or status.earlier_runs
    )  # fmt: skip


def counts(status: Status) -> str:
    return (
        f"in flight {len(status.in_flight)}, pending {status.pending}, "
        f"delayed {status.delayed}, failed {status.failed}"
    )


def done_of(status: Status) -> str:
    """Done as `status` and the worker's summary count it: a dead-lettered item is finished, but
    not done; it is counted as failed."""
    return f"{status.done}/{total(status)} done ({counts(status)})"


def brief(status: Status) -> str:
    """What is under way, in few words: for the bar, where the width is short."""
    parts = [f"{len(status.in_flight)} in flight"]
    parts += [f"{n} {what}" for n, what in ((status.delayed, "delayed"), (status.failed, "failed"))
              if n]  # fmt: skip
    return ", ".join(parts)
