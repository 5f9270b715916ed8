"""A Redis Cluster of three primaries on loopback, from real server processes of one binary
(redis-server or Valkey), joined as `redis-cli --cluster create` joins them: each node is given a
third of the slots (CLUSTER ADDSLOTSRANGE) and meets the others (CLUSTER MEET). By hand, so that
no redis-cli is needed: the bundled Valkey comes without one."""

from __future__ import annotations

import time

import redis
from rediswq.server import EmbeddedRedis, Started, free_port

_SLOTS = 16384
_CLUSTER = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")


class Node(EmbeddedRedis):
    """A cluster node, its bus on a free port of its own: the default, the port + 10000, may be
    taken, or over 65535. Found as the port is, at each try of a start: a port found free can be
    taken before the server binds it, and the server then exits and is started on others."""

    bus = 0

    def command(self) -> list[str]:
        if not self._started:  # a restart keeps its ports: the other nodes know them
            self.bus = free_port()
        return [*super().command(), *_CLUSTER, "--cluster-port", str(self.bus)]


class Cluster(Started):
    """Three primaries sharing the 16384 slots, no replicas. Use as a context manager."""

    def __init__(self, binary: str, primaries: int = 3) -> None:
        self.nodes = [Node(binary=binary) for _ in range(primaries)]

    @property
    def url(self) -> str:
        """The URL of one node: a client finds the others from it."""
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for n, node in enumerate(self.nodes):
            first, last = self._slots(n)
            with redis.Redis(port=node.port) as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
                for other in self.nodes:
                    if other is not node:
                        meet = ("CLUSTER", "MEET", "127.0.0.1", other.port, other.bus)
                        client.execute_command(*meet)
        self._wait_until_ok()

    def _slots(self, n: int) -> tuple[int, int]:
        """The first and last slot of node `n`: a third each, the rest to the last."""
        share = _SLOTS // len(self.nodes)
        return n * share, _SLOTS - 1 if n == len(self.nodes) - 1 else (n + 1) * share - 1

    def holder(self, slot: int) -> int:
        """The index of the node that holds `slot`."""
        return next(n for n in range(len(self.nodes)) if self._slots(n)[1] >= slot)

    def close(self) -> None:
        for node in self.nodes:
            node.close()

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
