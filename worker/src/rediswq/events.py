"""Wake-ups for waiting workers: the scripts publish when a queue is sealed, gets items back, or
is drained. Polling remains the fallback, so a lost message costs one poll interval, never an item,
and a Redis user that may not subscribe (an ACL without the channel) only polls.
"""

from __future__ import annotations

import time
from types import TracebackType

import redis

from rediswq.logs import Log
from rediswq.queue import WorkQueue

# How long to wait for the server to confirm (or refuse) the subscription at start.
_CONFIRM_SECONDS = 2.0


class QueueEvents:
    def __init__(self, queue: WorkQueue, log: Log) -> None:
        # redis-py annotates pubsub() from 8.2 on; the oldest and the locked versions do not.
        self._pubsub = queue.client.pubsub(  # type: ignore[no-untyped-call,unused-ignore]
            ignore_subscribe_messages=True
        )
        self._channel = f"{queue.keys.pending}:events"
        self._log = log
        self._polling = False

    def __enter__(self) -> QueueEvents:
        # Subscribed before the first step, so nothing published after it can be missed. The
        # reply is read here: a refusal (NOPERM) comes as the reply, not as an error of subscribe.
        try:
            self._pubsub.subscribe(self._channel)
            self._pubsub.get_message(timeout=_CONFIRM_SECONDS)
        except redis.ResponseError as exc:
            self._poll_only(exc)
        except redis.RedisError:
            pass  # the connection: wait() tries again, and polls meanwhile
        return self

    def _poll_only(self, exc: redis.ResponseError) -> None:
        self._polling = True
        self._pubsub.close()
        reason = str(exc).strip().splitlines()[0]
        self._log("polling", f"No wake-ups from {self._channel} ({reason}); polling instead")

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
        if self._polling or not self._pubsub.subscribed:
            time.sleep(timeout)
            return
        try:
            if self._pubsub.get_message(timeout=timeout) is not None:
                while self._pubsub.get_message(timeout=0) is not None:
                    pass  # one wake-up for a burst
        except redis.ResponseError as exc:
            self._poll_only(exc)
            time.sleep(timeout)
        except redis.RedisError:
            time.sleep(timeout)
