"""What the scripts a server runs touch, read from its MONITOR: each script call (FCALL, EVALSHA,
EVAL) with the keys it declared, and the commands the script ran inside it, with their keys as
the server itself finds them (COMMAND GETKEYS).

A managed service in cluster mode (ElastiCache Serverless, Dragonfly, kvrocks in strict mode)
refuses a script that touches a key it was not given; a self-hosted server does not check, so
the tests check here instead.

MONITOR prints a script's call and then, before any other client's command (a script runs
alone), each command it ran, from a client named `lua`.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field

import redis
from rediswq.server import Started

_LINE = re.compile(rb"^\+?[0-9.]+ \[\d+ ([^\]]*)\] (.*)$", re.DOTALL)
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}
_SCRIPT_CALLS = (b"FCALL", b"FCALL_RO", b"EVALSHA", b"EVALSHA_RO", b"EVAL", b"EVAL_RO")


def _unquoted(quoted: bytes) -> bytes:
    """An argument as MONITOR prints it (the server's sdscatrepr), back to its bytes."""
    out, i = bytearray(), 0
    while i < len(quoted):
        char = quoted[i : i + 1]
        if char != b"\\":
            out += char
            i += 1
        elif quoted[i + 1 : i + 2] == b"x":
            out.append(int(quoted[i + 2 : i + 4], 16))
            i += 4
        else:
            escaped = quoted[i + 1 : i + 2]
            out += _ESCAPES.get(escaped, escaped)
            i += 2
    return bytes(out)


@dataclass
class ScriptCall:
    """One call of a script: its name (FCALL's function, or the SHA), the keys it declared, and
    the commands it ran."""

    name: bytes
    declared: list[bytes]
    inner: list[list[bytes]] = field(default_factory=list)


class Monitored(Started):
    """Records what a server runs while the `with` block runs (a MONITOR connection of its own)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[tuple[bytes, list[bytes]]] = []  # (client, command)
        self._marker = f"monitored-{uuid.uuid4().hex}".encode()
        self._connection = redis.Connection(port=port)  # type: ignore[no-untyped-call]
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self._connection.send_command("MONITOR")  # type: ignore[no-untyped-call]
        assert self._connection.read_response() in (b"OK", "OK")
        self._thread.start()

    def close(self) -> None:
        with redis.Redis(port=self.port) as client:
            client.echo(self._marker)  # the last line this monitor reads
        self._thread.join(timeout=30)
        self._connection.disconnect()  # type: ignore[no-untyped-call]
        assert not self._thread.is_alive(), "MONITOR never showed the end marker"

    def _read(self) -> None:
        while True:
            raw = self._connection.read_response()
            line = raw if isinstance(raw, bytes) else str(raw).encode()
            found = _LINE.match(line)
            if found is None:
                continue
            args = [_unquoted(arg) for arg in _ARG.findall(found.group(2))]
            if args[:2] == [b"ECHO", self._marker] or args[:2] == [b"echo", self._marker]:
                return
            self.lines.append((found.group(1), args))

    def script_calls(self) -> list[ScriptCall]:
        """Every script call seen, with the commands it ran."""
        calls: list[ScriptCall] = []
        for client, args in self.lines:
            if client == b"lua":
                assert calls, f"a script's command with no script call before it: {args}"
                calls[-1].inner.append(args)
            elif args and args[0].upper() in _SCRIPT_CALLS:
                count = int(args[2])
                calls.append(ScriptCall(args[1], args[3 : 3 + count]))
        return calls


def keys_of(client: redis.Redis, command: list[bytes]) -> list[bytes]:
    """The keys of `command`, as the server finds them; none for a command without any (TIME,
    PUBLISH)."""
    try:
        found = client.command_getkeys(*command)
    except redis.ResponseError:
        return []
    return [key if isinstance(key, bytes) else str(key).encode() for key in found]
