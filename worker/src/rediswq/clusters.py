"""Redis Cluster (self-hosted, or a serverless service that speaks only Cluster mode): a queue's
keys share one hash slot (keys.py), so its client talks to the one primary that holds the slot,
and asks the cluster again where that is whenever it reconnects: after a failover, or a MOVED
reply once the slot was moved to another node (the command did not run; it is sent again).

Detected, not configured: a server whose INFO says `cluster_enabled:1` gets this client.

Why not redis-py's RedisCluster for the queue itself: it routes each command by its keys, so
the worker's single connection, its packed FCALL path and its WAIT (scripts.py, replicas.py)
would all have to be written twice, and a queue needs one node anyway. redis-py's cluster code
still does the finding: its NodesManager reads the slot map (CLUSTER SLOTS) from the nodes.
"""

from __future__ import annotations

import threading
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.connection import Connection, SSLConnection
from redis.exceptions import AskError, ClusterDownError, TryAgainError


def cluster_enabled(client: redis.Redis) -> bool:
    """Whether the server `client` talks to is a node of a Redis Cluster."""
    try:
        info = client.info("cluster")
    except redis.ResponseError:  # a server, or an ACL user, that refuses INFO cluster
        return False
    return bool(int(info.get("cluster_enabled", 0)))


class SlotLocator:
    """Where a hash slot's primary is now, from the cluster's own map."""

    def __init__(self, url: str, **options: Any) -> None:
        self._url, self._options = url, options
        self._cluster: RedisCluster | None = None
        self._lock = threading.Lock()

    def primary_of(self, slot: int) -> tuple[str, int]:
        """The (host, port) of the primary that holds `slot`, read from the cluster each time:
        this runs only when a connection is made, and an old map would send it to a dead node."""
        with self._lock:
            if self._cluster is None:
                self._cluster = RedisCluster.from_url(self._url, **self._options)
            else:
                self._cluster.nodes_manager.initialize()
            node = self._cluster.nodes_manager.get_node_from_slot(slot)
            return str(node.host), int(node.port)

    def close(self) -> None:
        with self._lock:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None


class SlotConnection(Connection):
    """A connection to the primary of one hash slot, wherever that is when it connects."""

    def __init__(self, *, locator: SlotLocator, slot: int, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]
        self.locator, self.slot = locator, slot

    def _connect(self) -> Any:
        self.host, self.port = self.locator.primary_of(self.slot)
        return super()._connect()  # type: ignore[no-untyped-call]

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except (AskError, TryAgainError, ClusterDownError) as exc:
            # The slot is elsewhere now (MOVED, ASK) or being failed over (CLUSTERDOWN,
            # TRYAGAIN): the command did not run. A reconnection asks the cluster again; the
            # client's retry sends it again, as after a dropped connection.
            self.disconnect()  # type: ignore[no-untyped-call]
            raise redis.ConnectionError(f"the queue's hash slot {self.slot}: {exc}") from exc


class SlotSSLConnection(SlotConnection, SSLConnection):
    pass


def slot_options(url: str, password: str | None, slot: int, timeout: float) -> dict[str, Any]:
    """The client options that make a client of `url` one of `slot`'s primary (see `connect`)."""
    locator = SlotLocator(
        url,
        **({"password": password} if password else {}),  # the URL's own password, if any, wins
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    tls = url.startswith("rediss://")
    return {
        "connection_class": SlotSSLConnection if tls else SlotConnection,
        "locator": locator,
        "slot": slot,
    }
