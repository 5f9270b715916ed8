"""Connecting to Redis: a client that lives through outages (outages.py), a bounded wait at start,
errors in plain words."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from redis.retry import Retry

from rediswq.clusters import slot_options
from rediswq.errors import ConfigError, QueueError, first_line
from rediswq.logs import Log
from rediswq.outages import Outage, OutageRetry
from rediswq.sentinels import Sentinels, found_through_sentinels, master_client
from rediswq.waits import Waiting

# The longest pause between tries while waiting for Redis at start: every pod of a first deploy
# waits for Redis, and a pause of 1 s cost a median 0.44 s after Redis came up (docs/benchmarks.md);
# a refused connection or a PING is cheap for both sides.
_READY_POLL = 0.1


def connect(
    url: str,
    password: str | None = None,
    *,
    timeout: float = 10.0,
    outage: float = 300.0,
    log: Log | None = None,
    pooled: bool = False,
    sentinels: Sentinels | None = None,
    slot: int | None = None,
) -> redis.Redis:
    """A client for `url` (redis:// or rediss://); `password` is used only if the URL has none.

    Calls that lose Redis retry for `outage` seconds, saying so through `log`. Unless `pooled`,
    it holds one connection, made at once (so Redis must answer by then). With `sentinels`, the
    server is the primary they name, asked again on every reconnection: the URL gives only the
    credentials, database and TLS options. With `slot`, the server is a Redis Cluster's node that
    holds that hash slot (clusters.py), the URL one of its nodes.
    """
    _check(url)
    clock = Outage(outage, log)
    try:
        options: dict[str, Any] = dict(
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
            retry=OutageRetry(clock) if outage > 0 else Retry(NoBackoff(), 0),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            # What redis-py tells the server (CLIENT SETINFO) by default, but with the version it
            # was imported as: left to find it, it reads its installed metadata, 2-3 ms of the
            # worker's start here.
            driver_info=DriverInfo(lib_version=redis.__version__),
        )
        # One connection, no pool: a worker talks to Redis from one thread at a time (the
        # lease keeper waits on the client's lock), and the pool's checkout and return
        # measured 10-15 us of CPU per command here, a third of redis-py's whole share.
        if sentinels is not None:
            client = master_client(sentinels, url, password, single=not pooled, **options)
        else:
            if slot is not None:
                options.update(slot_options(url, password, slot, timeout))
            client = redis.Redis.from_url(
                url,
                password=password or None,  # the URL's own password, if any, wins
                single_connection_client=not pooled,
                **options,
            )
    except ValueError as exc:
        raise _malformed(url, str(exc)) from None
    clock.where = where(client)
    return client


def _check(url: str) -> None:
    """Raise a ConfigError unless redis-py will read `url` as it reads to a person."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise _malformed(url, str(exc)) from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise _malformed(url, "expected redis://HOST:PORT/DB or rediss://")
    # `redis:/host:6379` (one slash) has no host, and its path is not a database either.
    if parts.scheme != "unix" and not parts.hostname:
        raise _malformed(url, "no host; expected redis://HOST:PORT/DB (two slashes)")
    # redis-py reads a database path that is not a number as database 0, without a word.
    if parts.scheme != "unix" and not re.fullmatch(r"/?[0-9]*", parts.path):
        raise _malformed(url, f"database {parts.path[1:]!r} is not a number")
    # A missing file would surface at the first connection as "No such file or directory",
    # reported as Redis being unreachable, and be retried: name it, once, as the setting it is.
    for option, values in parse_qs(parts.query).items():
        if option in _TLS_FILES and not Path(values[-1]).is_file():
            raise _malformed(url, f"{option}: no file {values[-1]} (a CA bundle not mounted?)")


# The URL options that name a file (redis-py passes them on to the ssl module).
_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


def _malformed(url: str, reason: str) -> ConfigError:
    return ConfigError(f"malformed Redis URL {redacted(url)!r}: {reason}")


def redacted(url: str) -> str:
    """The URL without its password, fit for an error message or a log."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises, as `password` may, for a URL urlsplit cannot read
    except ValueError:  # then mask whatever stands between "user:" and "@"
        return re.sub(r"(//[^/@]*?:)[^/@]*@", r"\1***@", url)
    if not parts.password:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def wait_until_ready(
    url: str,
    password: str | None,
    timeout: float,
    log: Log | None = None,
    sentinels: Sentinels | None = None,
) -> None:
    """Wait up to `timeout` seconds for Redis to answer: pods start before the Redis pod and
    its DNS name are ready. With `log`, say so while waiting (at once, then every 30 s).

    redis-py retries a number of times, not for a time; an operator sets a time, so this loop
    is ours, on a probe client that does not retry by itself.
    """
    probe = connect(
        url,
        password,
        timeout=min(10.0, max(1.0, timeout)),
        outage=0,
        pooled=True,
        sentinels=sentinels,
    )
    deadline = time.monotonic() + timeout
    delay = 0.05
    waiting = Waiting(log) if log is not None else None
    in_url = credentials_in(url)
    try:
        while True:
            try:
                probe.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                error = describe(exc, where(probe), credentials=in_url)
                if isinstance(exc, redis.AuthenticationError):
                    raise error from None
                if time.monotonic() >= deadline:
                    raise type(error)(
                        f"{error} (gave up after {timeout:g}s: --redis-wait-timeout, "
                        "REDIS_WAIT_TIMEOUT)"
                    ) from None
                if waiting is not None:
                    waiting.waiting("redis", _waiting_for(where(probe), exc, timeout))
            except redis.RedisError as exc:
                raise describe(exc, where(probe), credentials=in_url) from None
            time.sleep(delay)
            delay = min(delay * 2, _READY_POLL)
    finally:
        probe.close()


def _waiting_for(at: str, error: Exception, timeout: float) -> Callable[[float], str]:
    def say(seconds: float) -> str:
        now = f" for {seconds:.0f}s now" if seconds else ""
        return f"Waiting for Redis at {at} ({first_line(error)}){now}; giving up after {timeout:g}s"

    return say


def where(client: redis.Redis) -> str:
    if (through := found_through_sentinels(client)) is not None:
        return through
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def credentials_in(url: str) -> str:
    """Where the credentials used with `url` come from, as the user would fix them."""
    try:
        parts = urlsplit(url)
        in_url = parts.password is not None
    except ValueError:
        return "REDIS_PASSWORD"
    return "the user and password in the Redis URL" if in_url else "REDIS_PASSWORD"


def describe(exc: BaseException, at: str, *, credentials: str = "REDIS_PASSWORD") -> QueueError:
    """One line that names the problem, for any error redis-py raises talking to `at`."""
    text = first_line(exc)
    if isinstance(exc, redis.AuthenticationError) or "NOAUTH" in text or "WRONGPASS" in text:
        return ConfigError(f"Redis at {at} rejected the credentials ({text}); check {credentials}")
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return QueueError(f"cannot reach Redis at {at}: {text}")
    if "WRONGTYPE" in text:
        return ConfigError(f"a queue key in Redis at {at} holds the wrong type: {text}")
    if "DB index is out of range" in text:  # SELECT, as the connection starts
        return ConfigError(f"Redis at {at} has no such database ({text}); check the Redis URL")
    return QueueError(f"Redis at {at} answered with an error: {text}")
