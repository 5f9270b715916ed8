"""Replicated servers on loopback for the failover tests: a primary, its replicas, and three
Sentinels watching them, all real processes of one server binary (redis-server or Valkey)."""

from __future__ import annotations

import time

import redis
from rediswq.server import EmbeddedRedis, Started

MASTER = "mymaster"
# Sentinel's own defaults (30 s to call a primary down, 3 min per failover) suit a data centre,
# not a test: these make a failover take a few seconds.
_DOWN_AFTER_MS = 1000
_FAILOVER_TIMEOUT_MS = 6000


class SentinelProcess(EmbeddedRedis):
    """One Sentinel: the server binary run with --sentinel on a config file it may rewrite.
    Started as any embedded server is: on another port if a process took its own first."""

    def __init__(self, binary: str, primary_port: int) -> None:
        super().__init__(binary=binary)
        self.primary_port = primary_port
        self.config = self.dir / "sentinel.conf"

    def command(self) -> list[str]:
        # Written at each try of a start: a Sentinel takes its port from its config file (which
        # it also rewrites as it learns), and the port changes when a try finds it taken.
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"logfile {self.dir / 'server.log'}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} {_FAILOVER_TIMEOUT_MS}\n"
        )
        return [self.binary, str(self.config), "--sentinel"]

    def log_tail(self, lines: int = 30) -> str:
        log = self.dir / "server.log"
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


class Replicated(Started):
    """A primary, `replicas` replicas, and three Sentinels (quorum 2), with AOF on every server:
    `servers[0]` is the first primary. Use as a context manager."""

    def __init__(self, binary: str, replicas: int = 1) -> None:
        self.binary = binary
        self.replicas = replicas
        self.servers = [EmbeddedRedis(binary=binary, appendonly=True)]
        self.sentinels: list[SentinelProcess] = []

    @property
    def sentinel_addresses(self) -> str:
        """REDIS_SENTINELS for these Sentinels."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def start(self) -> None:
        # The others are made once the primary has started: only then is its port known (one
        # taken meanwhile by another process is replaced, see port_lost).
        primary = self.servers[0]
        primary.start()
        follow = ("--replicaof", "127.0.0.1", str(primary.port))
        for _ in range(self.replicas):
            replica = EmbeddedRedis(binary=self.binary, appendonly=True, options=follow)
            self.servers.append(replica)
            replica.start()
        for server in self.servers[1:]:
            self.wait_in_sync(server, primary)
        for _ in range(3):
            self.sentinels.append(SentinelProcess(self.binary, primary.port))
            self.sentinels[-1].start()
        self._wait_until_sentinels_see(len(self.servers) - 1)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()

    def diagnosed(self) -> str:
        """The first Sentinel's last lines, for an assertion message."""
        return self.sentinels[0].log_tail()

    def primary_port(self) -> int:
        """The primary's port, as the Sentinels name it now."""
        with redis.Redis(port=self.sentinels[0].port) as sentinel:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER)
        return int(port)

    def primary(self) -> EmbeddedRedis:
        port = self.primary_port()
        (found,) = [server for server in self.servers if server.port == port]
        return found

    def wait_for_failover(self, old: EmbeddedRedis, timeout: float = 60) -> EmbeddedRedis:
        """The new primary, once every Sentinel names one other than `old` and it says so."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ports = set()
            for sentinel in self.sentinels:
                with redis.Redis(port=sentinel.port) as client:
                    ports.add(int(client.sentinel_get_master_addr_by_name(MASTER)[1]))
            if len(ports) == 1 and old.port not in ports:
                new = self.primary()
                with redis.Redis(port=new.port) as client:
                    if client.info("replication")["role"] == "master":
                        return new
            time.sleep(0.1)
        raise AssertionError(f"no failover from port {old.port} within {timeout:g}s")

    def settled(self, timeout: float) -> tuple[EmbeddedRedis, EmbeddedRedis]:
        """(primary, replica) once every Sentinel names one primary and the other server holds
        all it had written. Which is which is Sentinel's to say: on a starved machine a primary
        promoted a moment ago may answer late for a second (`down-after-milliseconds` here), and
        Sentinel then fails over again, back to the server that just came back."""
        deadline = time.monotonic() + timeout
        while True:
            ports = set()
            for sentinel in self.sentinels:
                with redis.Redis(port=sentinel.port) as client:
                    ports.add(int(client.sentinel_get_master_addr_by_name(MASTER)[1]))
            if len(ports) == 1:
                primary = self.primary()
                (replica,) = [server for server in self.servers if server is not primary]
                try:
                    self.wait_in_sync(replica, primary, timeout=2)
                    return primary, replica
                except AssertionError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no primary with an in-sync replica within {timeout:g}s")
            time.sleep(0.1)

    @staticmethod
    def wait_in_sync(replica: EmbeddedRedis, primary: EmbeddedRedis, timeout: float = 60) -> None:
        """Return once `replica` replicates `primary` with its link up, and holds everything
        `primary` had written when this was called."""
        deadline = time.monotonic() + timeout
        with (
            redis.Redis(port=replica.port) as follower,
            redis.Redis(port=primary.port) as leader,
        ):
            target = int(leader.info("replication")["master_repl_offset"])
            while time.monotonic() < deadline:
                info = follower.info("replication")
                if (
                    info["role"] == "slave"
                    and int(info["master_port"]) == primary.port
                    and info["master_link_status"] == "up"
                    and int(info.get("slave_repl_offset", -1)) >= target
                ):
                    return
                time.sleep(0.1)
        raise AssertionError(f"port {replica.port} is not a replica of {primary.port} in sync")

    def _wait_until_sentinels_see(self, replicas: int, timeout: float = 30) -> None:
        """Sentinels learn the replicas and each other over a few seconds; a failover before
        then finds no replica to promote or no quorum."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = 0
            for sentinel in self.sentinels:
                with redis.Redis(port=sentinel.port, decode_responses=True) as client:
                    state = client.sentinel_master(MASTER)
                    if (
                        int(state["num-slaves"]) >= replicas
                        and int(state["num-other-sentinels"]) >= len(self.sentinels) - 1
                    ):
                        ready += 1
            if ready == len(self.sentinels):
                return
            time.sleep(0.1)
        raise AssertionError("the Sentinels did not find the replicas and each other")
