"""What a worker tells its observers (metrics.py): each attempt as it ends, each hand-in.

The worker calls no observer on its default path: with none attached, an attempt costs nothing
more than it did before observers existed.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from rediswq.deadletter import Settled
from rediswq.execution import Outcome
from rediswq.queue import Lease


class Attempt(NamedTuple):  # not a dataclass: see execution.Failure
    lease: Lease
    outcome: Outcome
    seconds: float  # how long the handler ran
    settled: Settled | None  # where a failed attempt's item went; None for a success


class Observer(Protocol):
    def attempted(self, attempt: Attempt) -> None:
        """An attempt ended; a success is handed in later, with others (`handed_in`)."""

    def handed_in(self, done: int, lost: int) -> None:
        """Successes handed in: `done` the queue took, `lost` whose leases had expired."""
