"""Every script declares every key it touches, as Redis documents for scripts and functions and
as managed services in cluster mode enforce (ElastiCache refuses a script that touches a key it
was not given). A self-hosted server does not check, so the whole flow runs here with MONITOR
watching: seed, a seed of the same run, work, a failure, a dead letter, requeue, purge, release,
reclaim, status, a supersede, a restore, a replayed seal and restore, a reset, a drained run.
"""

from __future__ import annotations

import pytest
import redis
from faults import FaultProxy, Matcher, called, command, loaded, sealing
from monitored import Monitored, keys_of
from redis.commands.core import Script
from rediswq import WorkQueue, seed
from rediswq.connection import connect
from rediswq.deadletter import DeadLetters
from rediswq.execution import Failure
from rediswq.runs import restore
from rediswq.status import snapshot


def _flow(queue: WorkQueue, proxy: FaultProxy, by: str) -> None:
    """Every step the queue has, each way a run can end, and a replay of each durable step."""

    def call_of(script: Script) -> Matcher:
        return called(script) if by == "FCALL" else command("EVALSHA", script.sha)

    letters = DeadLetters(queue)
    seed(queue, [b"a", b"b", b"c", b"d"], run="first")
    seed(queue, [b"a", b"b", b"c", b"d"], run="first")  # already sealed for it
    first, second = queue.step(2).leases
    queue.extend(first, second)
    letters.settle(first, Failure("ValueError", "no", "", permanent=True), delay=0)
    letters.settle(second, Failure("OSError", "down", ""), delay=0)  # back for a retry
    third, fourth = queue.lease(2)
    queue.complete(third)
    queue.release(fourth)
    queue.reclaim()
    queue.counts()
    queue.checked()  # a starting worker's: every key's type, the seal and the counts
    snapshot(queue)
    letters.requeue(every=True)
    (again,) = queue.lease(1)
    letters.settle(again, Failure("ValueError", "no", "", permanent=True), delay=0)
    letters.requeue([again.item])
    (again,) = queue.lease(1)
    letters.settle(again, Failure("ValueError", "no", "", permanent=True), delay=0)
    letters.purge()
    lost = proxy.lose_reply(sealing(queue, by))
    seed(queue, [b"e"], run="second")  # supersedes "first", its items pending; sent twice
    assert lost.fired.is_set(), "the seal's reply was not lost: no replay was run"
    lost = proxy.lose_reply(call_of(queue.scripts.restore))
    assert restore(queue, "first") == 2  # c and d; sent twice too
    assert lost.fired.is_set(), "the restore's reply was not lost: no replay was run"
    queue.client.delete(queue.keys.run("first"))  # as if its record had expired
    seed(queue, [b"f"], run="third", reset=True)
    while leases := queue.lease(10):
        queue.complete(*leases)
    seed(queue, [b"g"], run="fourth")  # "third" ended drained


@pytest.mark.parametrize("by", ["FCALL", "EVALSHA"])
def test_every_key_a_script_touches_is_one_it_was_given(
    fault_proxy: FaultProxy, queue_name: str, by: str
) -> None:
    client = connect(fault_proxy.url)
    queue = loaded(WorkQueue(client, queue_name))
    queue.scripts.lease.library.usable = by == "FCALL"  # the library, or the scripts
    letters = DeadLetters(queue)
    scripts = {**queue.scripts._asdict(), "fail": letters._fail, "requeue": letters._requeue,
               "purge": letters._purge}  # fmt: skip
    names = {script.sha.encode(): name for name, script in scripts.items()}
    names |= {script.function.encode(): name for name, script in queue.scripts._asdict().items()}
    with Monitored(fault_proxy.upstream_port) as monitored:
        _flow(queue, fault_proxy, by)
    undeclared = []
    ran = set()
    with redis.Redis(port=fault_proxy.upstream_port) as server:
        for call in monitored.script_calls():
            name = names.get(call.name, call.name.decode(errors="replace"))
            ran.add(name)
            for command in call.inner:
                for key in keys_of(server, command):
                    if key not in call.declared:
                        undeclared.append((name, command[0].decode(), key.decode()))
    assert ran == set(scripts), ran
    assert not undeclared, sorted(set(undeclared))
