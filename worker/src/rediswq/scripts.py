"""The queue's Lua scripts, each one atomic step, registered once per client and called by SHA."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import hiredis
import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from rediswq.keys import lua_binding

_PRELUDE = "common.lua"


def source(name: str) -> str:
    """The script `name`: its shebang line, the key binding, the shared functions, its body."""
    folder = files("rediswq") / "scripts"
    shebang, body = (folder / f"{name}.lua").read_text().split("\n", 1)
    if not shebang.startswith("#!lua"):
        raise ValueError(f"scripts/{name}.lua must start with a #!lua line")
    # Redis scripts cannot include one another; prepending the shared functions keeps each
    # script a single atomic call without copying the record format into every file. The
    # shebang must stay the first line: it carries the flags Redis checks before running.
    return "\n".join((shebang, lua_binding(), (folder / _PRELUDE).read_text(), body))


@dataclass(frozen=True)
class Scripts:
    """redis-py's Script calls EVALSHA and loads the script again after NOSCRIPT (a restart)."""

    lease: Script
    complete: Script
    extend: Script
    release: Script
    reclaim: Script
    seal: Script
    stage: Script
    restore: Script
    snapshot: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            **{name: client.register_script(source(name)) for name in cls.__dataclass_fields__}
        )


def call(client: redis.Redis, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """EVALSHA `script` (registered on `client`) as `script(keys=..., args=...)` does, but
    cheaper on the client.

    On a single-connection client (the worker's) hiredis packs the command and it goes straight
    to the connection, under the client's lock and its retry policy. This bypass is ours because
    at one round trip per item redis-py's per-command layer (observability hooks, closures,
    argument filters and checks) measured 25-30 us of CPU per call here, a fifth of an item's
    whole cost, and it can not be switched off. Sending, parsing and retrying are still redis-py's.
    Not done here: redis-py's early reconnect on a managed server's maintenance notice, which
    comes only over RESP3 (the worker speaks RESP2 unless its URL says protocol=3); a moved
    server then shows as a dropped connection, which the retry handles.
    """
    connection = client.connection
    if connection is None:  # a pooled client: redis-py's own path
        return script(keys=keys, args=args)
    try:
        packed = [hiredis.pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))]
    except TypeError as exc:  # what redis-py raises for an argument it can not send
        raise redis.DataError(str(exc)) from None

    def round_trip() -> Any:
        connection.send_packed_command(packed)  # type: ignore[no-untyped-call]
        return connection.read_response()

    try:
        with client.single_connection_lock:
            return connection.retry.call_with_retry(
                round_trip,
                lambda _: connection.disconnect(),  # type: ignore[no-untyped-call]
            )
    except NoScriptError:  # the server restarted without the script: Script loads it again
        return script(keys=keys, args=args)
