"""The fault proxy itself: each fault does what faults.py says, to a client that never retries."""

from __future__ import annotations

import time

import pytest
import redis
from faults import FaultProxy, command
from redis.backoff import NoBackoff
from redis.retry import Retry


def plain_client(proxy: FaultProxy, timeout: float = 5.0) -> redis.Redis:
    return redis.Redis.from_url(proxy.url, socket_timeout=timeout, retry=Retry(NoBackoff(), 0))


def test_a_lost_reply_comes_after_the_command_ran(fault_proxy: FaultProxy) -> None:
    db = plain_client(fault_proxy)
    db.set("k", "0")
    lost = fault_proxy.lose_reply(command("INCRBY", "k"), nth=2)
    assert db.incr("k") == 1
    with pytest.raises(redis.ConnectionError):
        db.incr("k")
    assert lost.fired.is_set()
    assert db.get("k") == b"2"  # the server ran it; a new connection is fine
    assert db.incr("k") == 3


def test_only_the_matching_reply_of_a_pipeline_is_lost_with_those_after_it(
    fault_proxy: FaultProxy,
) -> None:
    db = plain_client(fault_proxy)
    fault_proxy.lose_reply(command("EXEC"))
    pipe = db.pipeline(transaction=True)
    pipe.rpush("list", "a", "b")
    pipe.rpush("list", "c")
    with pytest.raises(redis.ConnectionError):
        pipe.execute()
    assert db.lrange("list", 0, -1) == [b"a", b"b", b"c"]


def test_cut_drops_open_connections_and_accepts_new_ones(fault_proxy: FaultProxy) -> None:
    db = plain_client(fault_proxy)
    assert db.ping()
    fault_proxy.cut()
    assert db.ping()  # the pool finds its connection closed and makes a new one
    assert fault_proxy.accepted == 2


def test_a_stall_outlasts_the_socket_timeout_then_passes(fault_proxy: FaultProxy) -> None:
    db = plain_client(fault_proxy, timeout=0.5)
    db.ping()
    fault_proxy.stall(1.5)
    with pytest.raises(redis.TimeoutError):
        db.ping()
    time.sleep(1.5)
    assert plain_client(fault_proxy).ping()


def test_an_outage_refuses_connections_until_it_ends(fault_proxy: FaultProxy) -> None:
    db = plain_client(fault_proxy)
    db.ping()
    fault_proxy.outage(1.0)
    with pytest.raises(redis.ConnectionError):
        db.ping()
    time.sleep(1.2)
    assert db.ping()
    assert fault_proxy.accepted == 2  # the refused one is not counted
