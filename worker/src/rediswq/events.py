"""Wake-ups for waiting workers: the scripts publish when a queue is sealed, gets items back, or
is drained. Polling remains the fallback, so a lost message costs one poll interval, never an item,
and a Redis user that may not subscribe (an ACL without the channel) only polls. A worker
subscribes when it first has to wait: one that finds work at each step (its queue was seeded and
sealed before it started) never opens the channel's connection, which took a connect and six
commands before its first item.

A subscribed worker's poll is only that fallback, and the clock of reclaiming a lease that expired
(nothing publishes then), so the fleet's polls, not each worker's, are what count: with N workers
subscribed, each polls every N / FLEET_POLLS seconds (never more often than its poll interval),
jittered, and all of them together ask about FLEET_POLLS times a second however many they are.
At a fixed 0.25 s, 256 waiting workers made 1,024 calls a second that found nothing. A message
still wakes every subscriber at once, and so does a lost pub/sub connection (what was published
while it was down is lost): redis-py's wait returns when it has connected and subscribed again.
"""

from __future__ import annotations

import enum
import random
import time
from types import TracebackType

import redis

from rediswq.errors import first_line
from rediswq.keys import EVENTS_SUFFIX
from rediswq.logs import Log
from rediswq.queue import WorkQueue

# How long to wait for the server to confirm (or refuse) the subscription, at the first wait.
_CONFIRM_SECONDS = 2.0
# The polls a second of all the waiting workers of a queue together (see the docstring).
FLEET_POLLS = 20.0
# How often a worker counts the subscribers again (PUBSUB NUMSUB): while they are few or still
# growing, often, so workers that begin to wait together soon see each other; once they are many,
# rarely.
_RECOUNT_FEW = 1.0
_RECOUNT_MANY = 30.0
# The longest a waiting worker goes without asking, whatever PUBSUB NUMSUB answers: a count off
# the mark must not put a worker to sleep for days, nor past what the socket's poll() accepts.
_LONGEST_PAUSE = 30.0
# More subscribers than a server holds connections (maxclients is 10,000 unless raised): a count
# above it is not believed. Valkey 9.1.2 answers hundreds of millions while the table of a
# channel's subscribers is being resized (with 8 of them, or 15), until a client joins or leaves;
# taken as said, it kept every waiting worker at the longest pause.
_MOST_SUBSCRIBERS = 100_000


class Heard(enum.Enum):
    """What ended a wait."""

    NOTHING = 0  # its time ran out (or it polls only)
    EVENT = 1  # a message
    SEALED = 2  # a message, and one of them said that the seal ran ("sealed", seal.lua)


class QueueEvents:
    def __init__(self, queue: WorkQueue, log: Log) -> None:
        # redis-py annotates pubsub() from 8.2 on; the oldest and the locked versions do not.
        self._pubsub = queue.client.pubsub(  # type: ignore[no-untyped-call,unused-ignore]
            ignore_subscribe_messages=True
        )
        self._client = queue.client
        self._channel = queue.keys.pending + EVENTS_SUFFIX
        self._log = log
        self._polling = False
        self._subscribers = 1
        self._recount = 0.0  # when to count them again; inf: this user may not

    def __enter__(self) -> QueueEvents:
        return self  # subscribed at the first wait: a worker that never waits needs no channel

    def subscribe(self) -> bool:
        """Subscribe to the queue's channel, on a connection of its own; False if the connection
        failed (then the worker polls, and its next wait tries again). The reply is read here: a
        refusal (NOPERM) comes as the reply, not as an error of subscribe."""
        try:
            self._pubsub.subscribe(self._channel)
            self._pubsub.get_message(timeout=_CONFIRM_SECONDS)
        except redis.ResponseError as exc:
            self._poll_only(exc)
        except redis.RedisError:
            return False
        return True

    def _poll_only(self, exc: redis.ResponseError) -> None:
        self._polling = True
        self._pubsub.close()
        self._log(
            "polling", f"No wake-ups from {self._channel} ({first_line(exc)}); polling instead"
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pubsub.close()

    def pause(self, interval: float) -> float:
        """How long a waiting worker sleeps before it asks again, unless woken: `interval`, or
        longer where many workers are subscribed (see the module's docstring)."""
        if self._polling or not self._pubsub.subscribed:
            return interval
        now = time.monotonic()
        if now >= self._recount:
            try:
                ((_, count),) = self._client.pubsub_numsub(self._channel)
            except redis.ResponseError:  # an ACL without PUBSUB: the interval as given
                self._subscribers, self._recount = 1, float("inf")
            except redis.RedisError:
                return interval
            else:
                if int(count) > _MOST_SUBSCRIBERS:  # the last count stands; soon asked again
                    self._recount = now + _RECOUNT_FEW
                else:
                    # Asked again soon while the count grows: workers that begin to wait together
                    # (at their start, or as a drain ends) subscribe over a second or so, and
                    # the first of them would keep the count of those before them for 30 s.
                    counted = max(1, int(count))
                    grew, self._subscribers = counted > self._subscribers, counted
                    many = self._subscribers / FLEET_POLLS > interval
                    self._recount = now + (_RECOUNT_MANY if many and not grew else _RECOUNT_FEW)
        shared = self._subscribers / FLEET_POLLS
        if shared <= interval:
            return interval
        return min(shared * random.uniform(0.5, 1.5), _LONGEST_PAUSE)  # spreads them; no secret

    def wait(self, timeout: float) -> Heard:
        """Return on the next event (or one that came while the worker was busy), or after
        `timeout` seconds; what it heard. The first wait subscribes and returns at once, having
        heard nothing: what was published before the subscription, the worker's next step finds
        (a seal, items back); what comes after it, the next wait hears."""
        # redis-py counts a channel as subscribed once SUBSCRIBE went out, and subscribes it again
        # on each reconnection; a SUBSCRIBE that never went out is tried again at the next wait.
        if not (self._polling or self._pubsub.subscribed) and self.subscribe():
            return Heard.NOTHING
        if self._polling or not self._pubsub.subscribed:
            time.sleep(timeout)
            return Heard.NOTHING
        heard = Heard.NOTHING
        try:
            message = self._pubsub.get_message(timeout=timeout)
            while message is not None:  # one wake-up for a burst
                if heard is not Heard.SEALED:
                    heard = Heard.SEALED if message.get("data") == b"sealed" else Heard.EVENT
                message = self._pubsub.get_message(timeout=0)
        except redis.ResponseError as exc:
            self._poll_only(exc)
            time.sleep(timeout)
        except redis.RedisError:
            time.sleep(timeout)
        return heard
