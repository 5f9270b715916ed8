"""A Redis Cluster of three primaries on loopback, made by `redis-cli --cluster create` (Debian's
redis-tools) from real server processes of one binary (redis-server or Valkey)."""

from __future__ import annotations

import shutil
import subprocess
import time
from types import TracebackType

import redis
from rediswq.server import EmbeddedRedis, free_port

_CLUSTER = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")


class Cluster:
    """Three primaries sharing the 16384 slots, no replicas. Use as a context manager."""

    def __init__(self, binary: str, primaries: int = 3) -> None:
        # The cluster bus on a free port of its own: the default, the port + 10000, may be taken,
        # or over 65535.
        self.nodes = [
            EmbeddedRedis(binary=binary, options=(*_CLUSTER, "--cluster-port", str(free_port())))
            for _ in range(primaries)
        ]

    @property
    def url(self) -> str:
        """The URL of one node: a client finds the others from it."""
        return self.nodes[0].url

    def __enter__(self) -> Cluster:
        cli = shutil.which("redis-cli")
        assert cli, "redis-cli (redis-tools) makes the cluster"
        for node in self.nodes:
            node.start()
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{node.port}" for node in self.nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self._wait_until_ok()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for node in self.nodes:
            node.__exit__(None, None, None)

    def _wait_until_ok(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                with redis.Redis(port=node.port, decode_responses=True) as client:
                    states.append(client.cluster("info")["cluster_state"])
            if states == ["ok"] * len(self.nodes):
                return
            time.sleep(0.1)
        raise AssertionError("the cluster did not reach cluster_state:ok")
