"""A `Log` for tests: the messages a worker would print by default, in order, with their events."""

from __future__ import annotations

from typing import Any

from rediswq.logs import INFO, LEVELS


class Log(list[str]):
    """Collects messages at the default level (info and up), as a worker prints them."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def enabled(self, event: str) -> bool:
        return LEVELS.get(event, INFO) >= INFO

    def __call__(self, event: str, message: str, /, **fields: Any) -> None:
        assert event in LEVELS, f"event {event!r} is not in rediswq.logs.LEVELS"
        if self.enabled(event):
            self.append(message)
            self.events.append((event, fields))
