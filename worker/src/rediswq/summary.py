"""What a worker did: counted as it goes, and said in its last line."""

from __future__ import annotations

from dataclasses import dataclass


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


@dataclass
class Summary:
    done: int = 0
    failed_attempts: int = 0
    dead_lettered: int = 0
    lost: int = 0
    results_not_kept: int = 0  # handled, done, but their results are not in <queue>:results
    stopped_by: int | None = None  # the signal, if one stopped the worker

    def line(self) -> str:
        not_kept = self.results_not_kept
        return (
            f"Done {counted(self.done, 'item')}; "
            f"{counted(self.failed_attempts, 'failed attempt')}, "
            f"{counted(self.dead_lettered, 'item')} dead-lettered, "
            f"{counted(self.lost, 'lost lease')}"
            + (f"; {counted(not_kept, 'result')} not kept" if not_kept else "")
        )
