"""The queue's Lua scripts, each one atomic step: functions of one library, called by FCALL, or
scripts called by EVALSHA where the server will not take the library.

Why a library: an EVALSHA runs its whole script on every call, shared functions (common.lua) and
key bindings included, while a library defines them once when it loads and each FCALL runs only
its function. That took 1.2 us of the lease step's 15 us of server time here, at one step per
item. The library's name carries a hash of its code, so workers of two versions sharing a server
(a rolling upgrade) each find their own; a server keeps the libraries it was given (in its RDB
and AOF) until `FUNCTION DELETE`. A server that lost the library (restarted without persistence,
`FUNCTION FLUSH`) answers "Function not found" and is given it again, as NOSCRIPT is answered
for a script. A server that refuses it (older than 7.0, an ACL user without `function|load` or
`fcall`, `FUNCTION LOAD` over maxmemory) gets the same steps by EVALSHA, ~1 us slower a step.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import hiredis
import redis
from redis.commands.core import Script
from redis.connection import AbstractConnection
from redis.exceptions import NoScriptError

from rediswq.keys import lua_binding, lua_library_binding

_PRELUDE = "common.lua"
# Read as files next to this module, where the package installs them (pyproject.toml's
# package-data): importlib.resources took 1 ms more of a worker's start here to find them.
_SCRIPTS = Path(__file__).with_name("scripts")
_log = logging.getLogger(__name__)

# What the direct path (`_round_trip`) uses of redis-py beyond its documented API: attributes of
# a single-connection client, of its connection, of the connection's retry. redis-py may change
# them in any release; a client without one takes redis-py's public path (test_internals.py
# checks them, and that they behave as used, against the oldest, locked and newest redis-py).
_CLIENT_INTERNALS = ("connection", "single_connection_lock")
_CONNECTION_INTERNALS = ("send_packed_command", "read_response", "disconnect", "retry")
_RETRY_INTERNALS = ("call_with_retry",)


@cache  # read once: each script is part of the library and of its own EVALSHA fallback
def _parts(name: str) -> tuple[str, str]:
    """The #!lua line of script `name` and its body."""
    shebang, body = (_SCRIPTS / f"{name}.lua").read_text().split("\n", 1)
    if not shebang.startswith("#!lua"):
        raise ValueError(f"scripts/{name}.lua must start with a #!lua line")
    return shebang, body


@cache
def _prelude() -> str:
    return (_SCRIPTS / _PRELUDE).read_text()


def source(name: str) -> str:
    """The script `name`: its shebang line, the key binding, the shared functions, its body."""
    shebang, body = _parts(name)
    # Redis scripts cannot include one another; prepending the shared functions keeps each
    # script a single atomic call without copying the record format into every file. The
    # shebang must stay the first line: it carries the flags Redis checks before running.
    return "\n".join((shebang, lua_binding(), _prelude(), body))


@cache
def library() -> tuple[str, str]:
    """The library's name and its code: the shared functions once, then a function per script,
    named `<library>_<script>`, with the flags of the script's #!lua line."""
    declare, bind = lua_library_binding()
    functions = []
    for name in Scripts._fields:
        shebang, body = _parts(name)
        given = re.search(r"flags=(\S+)", shebang)
        flags = ", ".join(f"'{flag}'" for flag in given.group(1).split(",")) if given else ""
        functions.append(
            f"redis.register_function{{function_name = NAME .. '_{name}', flags = {{{flags}}},\n"
            f"callback = function(keys, args)\n{bind}{body}\nend}}\n"
        )
    code = "\n".join((declare, _prelude(), *functions))
    name = "rediswq_" + hashlib.sha1(code.encode(), usedforsecurity=False).hexdigest()[:16]
    return name, f"#!lua name={name}\nlocal NAME = '{name}'\n{code}"


class Library:
    """The library on one server: `usable` is None until a call tells, then whether FCALL works."""

    def __init__(self) -> None:
        self.name, self.code = library()
        self.usable: bool | None = None

    def load(self, client: redis.Redis) -> bool:
        """Give the server the library; whether it took it (or had it: a retried load)."""
        try:
            _sent(client, ("FUNCTION", "LOAD", self.code))
            self.usable = True
        except redis.ResponseError as exc:
            self.usable = "already exists" in str(exc)
        return self.usable


class Function(Script):
    """A step: FCALL of its function while the server takes the library, else, as a redis-py
    Script, EVALSHA of the same step as a script."""

    def __init__(self, client: redis.Redis, name: str, library: Library) -> None:
        super().__init__(client, source(name))
        self.function = f"{library.name}_{name}"
        self.library = library
        # The keys last called with, the packed part of FCALL that names the function and
        # them, and its count of arguments; one tuple, so a thread never reads half an update.
        self._head: tuple[Sequence[str], bytes, int] = ((), b"", 0)

    def packed(self, keys: Sequence[str], args: Sequence[Any]) -> bytes:
        """FCALL of this function with `keys` and `args`, as sent on the wire. The head, up to
        the keys, is packed once per list of keys (a caller passes the same list object each
        time and never changes it): hiredis took 4 us to pack a whole lease step here, 1 us to
        pack its arguments alone."""
        seen, head, count = self._head
        if keys is not seen:
            whole = _packed(("FCALL", self.function, len(keys), *keys))
            head, count = whole[whole.index(b"\r\n") + 2 :], 3 + len(keys)
            self._head = (keys, head, count)
        body = _packed(tuple(args))
        return b"*%d\r\n%b%b" % (count + len(args), head, body[body.index(b"\r\n") + 2 :])


class Scripts(NamedTuple):  # not a dataclass: see execution.Failure
    """Every step, sharing one Library (which decides between FCALL and EVALSHA)."""

    lease: Function
    complete: Function
    extend: Function
    release: Function
    reclaim: Function
    seal: Function
    stage: Function
    restore: Function
    snapshot: Function

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        shared = Library()
        return cls(**{name: Function(client, name, shared) for name in cls._fields})


def _refused(exc: redis.ResponseError) -> bool:
    """The server does not know FCALL (older than 7.0) or the user may not call it."""
    text = str(exc)
    return text.startswith("unknown command") or "'fcall' command" in text


def call(client: redis.Redis, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
    """Run `script` (registered on `client`): FCALL if it is a Function whose library the server
    takes, else EVALSHA, loading the library or the script again where the server lost it."""
    if isinstance(script, Function) and script.library.usable is not False:
        try:
            return _fcall(client, script, keys, args)
        except redis.ResponseError as exc:
            if "Function not found" in str(exc):
                if script.library.load(client):
                    return _fcall(client, script, keys, args)
            elif _refused(exc):
                script.library.usable = False
            else:
                raise
    if direct(client) is None:  # a pooled client: redis-py's own path
        return script(keys=keys, args=args)
    try:
        return _sent(client, ("EVALSHA", script.sha, len(keys), *keys, *args))
    except NoScriptError:  # the server restarted without the script: Script loads it again
        return script(keys=keys, args=args)


def _fcall(
    client: redis.Redis, function: Function, keys: Sequence[str], args: Sequence[Any]
) -> Any:
    connection = direct(client)
    if connection is None:
        return client.execute_command(  # type: ignore[no-untyped-call]
            "FCALL", function.function, len(keys), *keys, *args
        )
    return _round_trip(client, connection, function.packed(keys, args))


def _sent(client: redis.Redis, command: tuple[Any, ...]) -> Any:
    """The reply to `command`, sent as `client.execute_command(*command)` would."""
    connection = direct(client)
    if connection is None:
        return client.execute_command(*command)  # type: ignore[no-untyped-call]
    return _round_trip(client, connection, _packed(command))


def _packed(command: tuple[Any, ...]) -> bytes:
    try:
        packed: bytes = hiredis.pack_command(command)
        return packed
    except TypeError as exc:  # what redis-py raises for an argument it can not send
        raise redis.DataError(str(exc)) from None


def missing_internals(client: redis.Redis) -> list[str]:
    """What the direct path needs of redis-py's internals that the single-connection `client`
    lacks, by name; none with the redis-py versions this package supports."""
    missing = [f"Redis.{name}" for name in _CLIENT_INTERNALS if not hasattr(client, name)]
    connection = getattr(client, "connection", None)
    if connection is not None:
        kind = type(connection).__name__
        missing += [f"{kind}.{n}" for n in _CONNECTION_INTERNALS if not hasattr(connection, n)]
        retry = getattr(connection, "retry", None)
        if retry is not None:
            kind = type(retry).__name__
            missing += [f"{kind}.{n}" for n in _RETRY_INTERNALS if not hasattr(retry, n)]
    return missing


# Whether clients of a kind (their class, their connection's) have what the direct path uses:
# looked at once per kind, not per call.
_DIRECT: dict[tuple[type, type], bool] = {}


def direct(client: redis.Redis) -> AbstractConnection | None:
    """The single connection of `client`, for `_round_trip` to write on; None for a pooled client,
    or for a redis-py without what the direct path uses (said once; redis-py's public path then
    gives the same replies, ~25 us a step slower)."""
    connection: AbstractConnection | None = getattr(client, "connection", None)
    if connection is None and hasattr(client, "connection"):
        return None  # a pooled client
    kind = (type(client), type(connection))
    usable = _DIRECT.get(kind)
    if usable is None:
        missing = missing_internals(client)
        if missing:
            _log.warning(
                "redis-py %s lacks %s: queue steps take its public path, slower",
                redis.__version__, ", ".join(missing),
            )  # fmt: skip
        usable = _DIRECT[kind] = not missing
    return connection if usable else None


def _round_trip(client: redis.Redis, connection: AbstractConnection, packed: bytes) -> Any:
    """The reply to the `packed` command, sent on `connection`, the single connection of `client`.

    Straight to the connection, under the client's lock and its retry policy, cheaper on the
    client than `execute_command`. This bypass is ours because at one round trip per item
    redis-py's per-command layer (observability hooks, closures, argument filters and checks)
    measured 25-30 us of CPU per call here, a fifth of an item's whole cost, and it can not be
    switched off. Sending, parsing and retrying are still redis-py's. Not done here: redis-py's
    early reconnect on a managed server's maintenance notice (RESP3, which redis-py 8 speaks by
    default); a moved server then shows as a dropped connection, which the retry handles.
    """

    retry = connection.retry
    with client.single_connection_lock:
        exchange = getattr(retry, "exchange", None)  # outages.OutageRetry's
        if exchange is not None:
            return exchange(connection, packed)

        def round_trip() -> Any:  # redis-py's own Retry: with --redis-outage-timeout 0
            connection.send_packed_command([packed])  # type: ignore[no-untyped-call]
            return connection.read_response()

        return retry.call_with_retry(
            round_trip,
            lambda _: connection.disconnect(),  # type: ignore[no-untyped-call]
        )
