"""Finding the primary through Redis Sentinel: REDIS_SENTINELS names the Sentinels, and every
connection asks them where the primary of REDIS_SENTINEL_MASTER is now, so a client follows a
failover by reconnecting.

redis-py's `redis.sentinel` does the asking: its pool looks the primary up on each new
connection and drops a connection whose server turned replica (READONLY). What is ours: the
settings, and keeping the client's own options (credentials, TLS, database, retry) from the
Redis URL, whose host and port Sentinel then replaces.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

DEFAULT_MASTER = "mymaster"  # the name in Redis's own sentinel.conf


class Sentinels(NamedTuple):  # not a dataclass: see execution.Failure
    """The Sentinels to ask, the name they know the primary by, and their password (if any)."""

    addresses: tuple[tuple[str, int], ...]
    master: str = DEFAULT_MASTER
    password: str | None = None

    def __str__(self) -> str:
        listed = ",".join(f"{host}:{port}" for host, port in self.addresses)
        return f"primary {self.master!r} of Sentinels {listed}"


class _Following(SentinelManagedConnection):
    """A connection that asks the Sentinels where the primary is on every try to connect.

    redis-py's own asks only in `connect()`, but its `send_packed_command` reconnects through
    `connect_check_health()`, which dials the last address again: a client that lost its
    primary mid-command kept dialling the dead one after the failover (seen here with 8.1,
    for the whole outage budget). Asking before each socket is made covers both paths.
    """

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


class _FollowingSSL(_Following, SentinelManagedSSLConnection):
    pass


def addresses(text: str) -> tuple[tuple[str, int], ...]:
    """The (host, port) pairs of "HOST:PORT,HOST:PORT" (port 26379 if left out); () for ""."""
    found = []
    for part in filter(None, (part.strip() for part in text.split(","))):
        host, colon, port = part.rpartition(":")
        if not colon:
            host, port = part, "26379"
        if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected HOST:PORT,HOST:PORT,... (Sentinels), got {part!r}")
        found.append((host.strip("[]"), int(port)))
    return tuple(found)


def master_client(
    sentinels: Sentinels, url: str, password: str | None, *, single: bool, **options: Any
) -> redis.Redis:
    """A client of the primary that `sentinels` name, with the URL's credentials, database and
    TLS, and `options` (timeouts, retry) for its connections."""
    settings = parse_url(url)  # type: ignore[no-untyped-call]
    for given in ("host", "port", "path"):  # Sentinel says where the primary is
        settings.pop(given, None)
    ssl = settings.pop("connection_class", None) is SSLConnection
    if settings.get("password") is None and password:
        settings["password"] = password
    timeout = options.get("socket_timeout")
    asker = Sentinel(
        sentinels.addresses,
        # The Sentinels are asked in turn until one answers: retrying one of them would only
        # delay asking the next. The client's retry (options) covers the whole lookup.
        sentinel_kwargs={
            "password": sentinels.password,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), 0),
        },
    )
    pool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        sentinels.master,
        asker,
        connection_class=_FollowingSSL if ssl else _Following,
        check_connection=False,
        **settings,
        **options,
    )
    client = redis.Redis(connection_pool=pool, single_connection_client=single)
    client.auto_close_connection_pool = True  # the pool is this client's alone
    return client


def found_through_sentinels(client: redis.Redis) -> str | None:
    """How `client` finds its server, if through Sentinel, for messages."""
    pool = client.connection_pool
    if not isinstance(pool, SentinelConnectionPool):
        return None
    listed = ",".join(
        "{host}:{port}".format_map(sentinel.connection_pool.connection_kwargs)
        for sentinel in pool.sentinel_manager.sentinels
    )
    return f"primary {pool.service_name!r} of Sentinels {listed}"
