"""How long a failed item waits before its next attempt: exponential backoff with jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

from rediswq.errors import QueueError

_RANDOM = random.Random()


@dataclass(frozen=True)
class Backoff:
    """After attempt n fails, wait between half and all of min(max, base * 2**(n-1)) seconds.

    The random half spreads the retries of items that failed together (a dependency that was
    down) instead of sending them back at once; keeping the other half fixed still guarantees
    each wait a floor, unlike "full jitter", which may retry at once. base=0 retries at once.
    """

    base: float = 1.0
    max: float = 60.0

    def __post_init__(self) -> None:
        if self.base < 0 or self.max < self.base:
            raise QueueError(f"retry backoff needs 0 <= base <= max, got {self}")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (from 1)."""
        if self.base == 0:
            return 0.0
        # min() first on the exponent: 2**10000 would not fit a float.
        ceiling = min(self.max, self.base * 2.0 ** min(attempt - 1, 64))
        return ceiling / 2 + (rng or _RANDOM).uniform(0, ceiling / 2)

    @classmethod
    def parse(cls, text: str) -> Backoff:
        """`BASE[,MAX]` in seconds; `0` or `off` for no backoff. MAX defaults to 60 * BASE."""
        cleaned = text.strip().lower()
        if cleaned in ("0", "off", "none"):
            return cls(0.0, 0.0)
        try:
            parts = [float(part) for part in cleaned.split(",")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2) or not all(0 <= p < float("inf") for p in parts):
            raise ValueError(f"expected BASE[,MAX] in seconds, or off; got {text!r}")
        base = parts[0]
        ceiling = parts[1] if len(parts) == 2 else 60 * base
        if ceiling < base:
            raise ValueError(f"the maximum is below the base in {text!r}")
        return cls(base, ceiling)

    def __str__(self) -> str:
        return f"{self.base:g},{self.max:g}" if self.base else "off"
