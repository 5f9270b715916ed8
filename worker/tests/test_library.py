"""The steps as a Redis function library (rediswq/scripts.py): given again to a server that lost
it, and replaced by the same steps as scripts where the server refuses it."""

from __future__ import annotations

import pytest
import redis
from conftest import calls
from faults import FaultProxy, command
from fullredis import filled
from rediswq import Lease, WorkQueue, seed
from rediswq.connection import connect
from rediswq.server import EmbeddedRedis
from test_server_limits import documented_acl

ITEMS = [f"item-{n}".encode() for n in range(20)]


def drained(queue: WorkQueue, held: list[Lease] | None = None) -> list[bytes]:
    """The items `queue` holds (`held`, else its first lease) and leases one step at a time
    after them, each handed in by the next step."""
    worked: list[bytes] = []
    done = queue.lease() if held is None else held
    while done:
        worked += [lease.item for lease in done]
        step = queue.step(1, done)
        assert step.completed == [True] * len(done)
        done = step.leases
    return worked


def libraries(client: redis.Redis) -> list[bytes]:
    """The names of the function libraries on the server (FUNCTION LIST: name, value, ...)."""
    listing = client.function_list()
    return [dict(zip(entry[::2], entry[1::2], strict=True))[b"library_name"] for entry in listing]


def test_a_server_that_lost_the_library_is_given_it_again(fresh_server: EmbeddedRedis) -> None:
    admin = connect(fresh_server.url)
    queue = WorkQueue(connect(fresh_server.url), "q")
    seed(queue, ITEMS)
    first = queue.lease()
    admin.function_flush()  # as a restart without persistence leaves it
    step = queue.step(1, first)
    assert step.completed == [True]
    assert libraries(admin) == [queue.scripts.lease.library.name.encode()]
    assert sorted([first[0].item, *drained(queue, step.leases)]) == sorted(ITEMS)
    assert queue.scripts.lease.library.usable is True


@pytest.mark.parametrize("granted", ["+evalsha", "+fcall"])
def test_a_user_who_may_not_load_functions_runs_the_steps_as_scripts(
    fresh_server: EmbeddedRedis, granted: str
) -> None:
    rules = [rule.replace(">CHANGE-ME", ">secret") for rule in documented_acl()]
    rules.remove("+function|load")
    if granted == "+evalsha":
        rules.remove("+fcall")
    admin = connect(fresh_server.url)
    admin.execute_command("ACL", "SETUSER", *rules)  # type: ignore[no-untyped-call]
    queue = WorkQueue(connect(fresh_server.url.replace("redis://", "redis://job2:secret@")), "job2")
    seed(queue, ITEMS)
    admin.config_resetstat()
    assert sorted(drained(queue)) == sorted(ITEMS)
    assert queue.scripts.lease.library.usable is False
    assert calls(admin, "evalsha") > len(ITEMS)
    assert libraries(admin) == []


def test_a_full_redis_without_the_library_is_drained_by_scripts(
    fresh_server: EmbeddedRedis,
) -> None:
    admin = connect(fresh_server.url)
    seed(WorkQueue(admin, "q"), ITEMS)
    admin.function_flush()
    filled(admin)
    queue = WorkQueue(connect(fresh_server.url), "q")
    assert sorted(drained(queue)) == sorted(ITEMS)
    assert queue.scripts.lease.library.usable is False
    assert libraries(admin) == []


def test_a_lost_reply_to_the_library_load_is_harmless(fault_proxy: FaultProxy) -> None:
    """redis-py sends FUNCTION LOAD again on a new connection after its reply was lost: the
    server, which loaded it, answers "already exists", and the steps still run by FCALL."""
    admin = redis.Redis(port=fault_proxy.upstream_port)
    queue = WorkQueue(connect(fault_proxy.url), "q")
    lost = fault_proxy.lose_reply(command("FUNCTION", "LOAD"))
    seed(queue, ITEMS)
    assert lost.fired.is_set(), "the fault did not fire: the test proves nothing"
    assert queue.scripts.lease.library.usable is True
    assert libraries(admin) == [queue.scripts.lease.library.name.encode()]
    admin.config_resetstat()
    assert sorted(drained(queue)) == sorted(ITEMS)
    assert calls(admin, "fcall") > len(ITEMS)
    assert calls(admin, "evalsha") == 0
