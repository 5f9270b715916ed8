"""The Redis keys of one queue. The pending list is the bare queue name, as in the tutorial."""

from __future__ import annotations

from dataclasses import dataclass

from rediswq.errors import QueueError


@dataclass(frozen=True)
class QueueKeys:
    name: str

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise QueueError("queue name is empty; set --queue or QUEUE_NAME")

    @property
    def pending(self) -> str:
        return self.name

    @property
    def leases(self) -> str:
        return f"{self.name}:leases"

    @property
    def deadlines(self) -> str:
        return f"{self.name}:deadlines"

    @property
    def retries(self) -> str:
        return f"{self.name}:retries"

    @property
    def failed(self) -> str:
        return f"{self.name}:failed"

    @property
    def stats(self) -> str:
        return f"{self.name}:stats"

    @property
    def sealed(self) -> str:
        return f"{self.name}:sealed"

    @property
    def seq(self) -> str:
        return f"{self.name}:seq"

    def staging(self, token: str) -> str:
        return f"{self.name}:staging:{token}"

    def all(self) -> list[str]:
        """Every key, in the order the Lua scripts expect them (see scripts/common.lua)."""
        return [
            self.pending,
            self.leases,
            self.deadlines,
            self.retries,
            self.failed,
            self.stats,
            self.sealed,
            self.seq,
        ]

    def expected_types(self) -> dict[str, str]:
        """Redis type of each key that exists; 'none' is fine for all of them."""
        return {
            self.pending: "list",
            self.leases: "hash",
            self.deadlines: "zset",
            self.retries: "hash",
            self.failed: "list",
            self.stats: "hash",
            self.sealed: "string",
            self.seq: "string",
        }
