"""A port found free can be taken by another process before the server binds it (tests run in
parallel, a second `rediswq local`): the server that starts must be the one that answers."""

from __future__ import annotations

import redis
from rediswq.server import EmbeddedRedis
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


def test_a_sentinel_whose_port_was_taken_meanwhile_starts_on_another(
    fresh_server: EmbeddedRedis,
) -> None:
    sentinel = SentinelProcess(fresh_server.binary, fresh_server.port)
    sentinel.port = fresh_server.port
    try:
        sentinel.start()
        assert sentinel.port != fresh_server.port
        with redis.Redis(port=sentinel.port) as client:
            assert "mymaster" in client.sentinel_masters()
    finally:
        sentinel.stop()
