"""A port found free can be taken by another process before the server binds it (tests run in
parallel, a second `rediswq local`): the server that starts must be the one that answers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from pathlib import Path

import pytest
import redis
from clustered import Node
from rediswq.errors import QueueError
from rediswq.server import EmbeddedRedis, Started, free_port
from replication import SentinelProcess


def _pid_on(port: int) -> int:
    with redis.Redis(port=port) as client:
        return int(client.info("server")["process_id"])


def test_a_server_whose_port_was_taken_meanwhile_starts_on_another(
    fresh_server: EmbeddedRedis,
) -> None:
    late = EmbeddedRedis(binary=fresh_server.binary)
    late.port = fresh_server.port  # taken between free_port() and the start
    with late:
        assert late.port != fresh_server.port
        assert late._process is not None
        assert _pid_on(late.port) == late._process.pid


def test_a_port_taken_by_something_that_is_not_redis_is_given_up_for_another(
    fresh_server: EmbeddedRedis,
) -> None:
    """A listener that never answers: the server cannot bind the port and exits, and the PING
    sent to the port while it starts must give up rather than wait for that listener for ever."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        late = EmbeddedRedis(binary=fresh_server.binary)
        late.port = taken
        with late:
            assert late.port != taken
            assert late._process is not None
            assert _pid_on(late.port) == late._process.pid


def test_a_sentinel_whose_port_was_taken_meanwhile_starts_on_another(
    fresh_server: EmbeddedRedis,
) -> None:
    sentinel = SentinelProcess(fresh_server.binary, fresh_server.port)
    sentinel.port = fresh_server.port
    with sentinel:
        assert sentinel.port != fresh_server.port
        with redis.Redis(port=sentinel.port) as client:
            assert "mymaster" in client.sentinel_masters()


def test_a_cluster_node_whose_bus_port_was_taken_meanwhile_starts_on_others(
    fresh_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another port of the command line than the one the server answers on: the node exits at
    once, before anything answers, and must be started again with a bus port of its own."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        given = iter([taken])
        monkeypatch.setattr("clustered.free_port", lambda: next(given, 0) or free_port())
        with Node(binary=fresh_server.binary) as node:
            assert node.bus != taken
            with redis.Redis(port=node.port) as client:
                assert client.cluster("info")["cluster_state"] == "fail"  # no slots yet: alive


def test_a_server_that_answers_through_a_child_of_its_own_is_taken_as_started(
    fresh_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """A wrapper script that does not exec: the pid that answers is not the one started, but it
    keeps running, so the port is its own and no other is tried."""
    wrapper = tmp_path / "wrapped-server"
    wrapper.write_text(f'#!/bin/sh\n"{fresh_server.binary}" "$@"\n')
    wrapper.chmod(0o755)
    with EmbeddedRedis(binary=str(wrapper)) as wrapped:
        port = wrapped.port
        assert wrapped._process is not None and _pid_on(port) != wrapped._process.pid
        assert redis.Redis(port=port).ping()
        children = Path(f"/proc/{wrapped._process.pid}/task/{wrapped._process.pid}/children")
        server = int(children.read_text().split()[0])
    with contextlib.suppress(ProcessLookupError):  # stop() signals the wrapper alone
        os.kill(server, signal.SIGTERM)


class _FailsAfterAServer(Started):
    def __init__(self, binary: str) -> None:
        self.server = EmbeddedRedis(binary=binary)
        self.pid = 0

    def start(self) -> None:
        self.server.start()
        assert self.server._process is not None
        self.pid = self.server._process.pid
        raise RuntimeError("the part after the server failed")

    def close(self) -> None:
        self.server.close()


def test_what_started_before_a_start_failed_is_stopped(fresh_server: EmbeddedRedis) -> None:
    failing = _FailsAfterAServer(fresh_server.binary)
    with pytest.raises(RuntimeError, match="the part after"), failing:
        pass
    assert failing.pid and not Path(f"/proc/{failing.pid}").exists()


def test_a_restart_whose_port_was_taken_meanwhile_says_so_in_one_line(
    fresh_server: EmbeddedRedis,
) -> None:
    """A restart keeps its port (its clients know it): another process on it is an error."""
    with EmbeddedRedis(binary=fresh_server.binary) as restarted:
        restarted.stop()
        taken = restarted.port
        squatter = EmbeddedRedis(binary=fresh_server.binary)
        squatter.port = taken
        with squatter, pytest.raises(QueueError) as raised:
            restarted.start()
        assert str(raised.value).endswith(f"could not start again: port {taken} is taken")
        assert restarted._process is None


def test_a_server_that_finds_every_port_taken_gives_up_after_a_few(
    fresh_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("rediswq.server.free_port", lambda: fresh_server.port)
    late = EmbeddedRedis(binary=fresh_server.binary)
    with pytest.raises(QueueError, match="found no free port in 5 tries"), late:
        pass
    assert late._process is None
    assert _pid_on(fresh_server.port) != 0  # the one that holds the port is untouched
