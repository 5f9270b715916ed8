"""Wake-ups for waiting workers: the scripts publish when a queue is sealed, gets items back, or
is drained. Polling remains the fallback, so a lost message costs one poll interval, never an item.
"""

from __future__ import annotations

import contextlib
import time
from types import TracebackType

import redis

from rediswq.queue import WorkQueue


class QueueEvents:
    def __init__(self, queue: WorkQueue) -> None:
        # redis-py leaves pubsub() unannotated.
        self._pubsub = queue.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._channel = f"{queue.keys.pending}:events"

    def __enter__(self) -> QueueEvents:
        # Subscribed before the first step, so nothing published after it can be missed.
        with contextlib.suppress(redis.RedisError):  # then no wake-ups, only polling
            self._pubsub.subscribe(self._channel)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pubsub.close()

    def wait(self, timeout: float) -> None:
        """Return on the next event (or one that came while the worker was busy), or after
        `timeout` seconds."""
        if not self._pubsub.subscribed:
            time.sleep(timeout)
            return
        try:
            if self._pubsub.get_message(timeout=timeout) is not None:
                while self._pubsub.get_message(timeout=0) is not None:
                    pass  # one wake-up for a burst
        except redis.RedisError:
            time.sleep(timeout)
