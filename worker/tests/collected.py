"""A `Log` for tests: the messages a worker would print by default, in order, with their events."""

from __future__ import annotations

import threading
from typing import Any

from rediswq.logs import INFO, LEVELS


class Log(list[str]):
    """Collects messages at the default level (info and up), as a worker prints them."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._logged = threading.Condition()

    def enabled(self, event: str) -> bool:
        return LEVELS.get(event, INFO) >= INFO

    def __call__(self, event: str, message: str, /, **fields: Any) -> None:
        assert event in LEVELS, f"event {event!r} is not in rediswq.logs.LEVELS"
        if self.enabled(event):
            with self._logged:
                self.append(message)
                self.events.append((event, fields))
                self._logged.notify_all()

    def wait_for(self, event: str, timeout: float = 30, **fields: Any) -> None:
        """Return once a worker on another thread has logged `event` with `fields` (a test's
        sign that it got that far); fail after `timeout` seconds."""

        def logged() -> bool:
            return any(
                name == event and fields.items() <= given.items() for name, given in self.events
            )

        with self._logged:
            assert self._logged.wait_for(logged, timeout), f"no {event} {fields}: {list(self)}"
