"""A fault-injecting TCP proxy on loopback, in front of a real Redis-compatible server.

    proxy = FaultProxy(server.port)   # or the `fault_proxy` fixture (conftest.py)
    client = connect(proxy.url)
    lost = proxy.lose_reply(called(queue.scripts.lease))
    queue.step()                      # ran on the server; its reply never came back; redis-py
    assert lost.fired.is_set()        # reconnected and sent it again
    proxy.cut()                       # drop every open connection now; new ones are accepted
    proxy.stall(3)                    # forward nothing either way for 3 s; connections stay open
    proxy.stall_new_connections(3)    # the same, for 3 s from now, on connections made since
    proxy.outage(5)                   # cut, then refuse new connections for 5 s

A lost reply: `lose_reply(matching, nth)` lets the nth command (counted from that call, over
all connections) for which `matching(args)` is true reach the server, and when the server's reply
to it arrives, cuts that client's connection instead of forwarding it (replies queued ahead of it
are forwarded). The proxy parses the commands each client sends and the replies the server sends
back, and pairs them in order, one reply per command. A RESP3 push answers no command, except
the one that confirms a SUBSCRIBE (of one channel: one push a channel); so aim it at nothing else
on a connection in subscribed mode, whose messages have no command. A pipeline is a run of
commands: aim at its last one (`command("EXEC")` for a transaction) to lose the whole batch's
replies.

Written by hand, not taken from a chaos tool (toxiproxy and the like), because those cut by byte
counts or time, while these tests need "after the server ran this command, before its reply".
One thread per direction per connection keeps it obvious; the tests open a few connections.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.commands.core import Script
from rediswq.queue import WorkQueue
from rediswq.scripts import Function
from rediswq.server import Started

Command = list[bytes]
Matcher = Callable[[Command], bool]


def command(name: str, *first_args: bytes | str) -> Matcher:
    """Matches the command `name` (any case) whose arguments start with `first_args`."""
    want = [name.upper().encode()] + [a.encode() if isinstance(a, str) else a for a in first_args]

    def matches(args: Command) -> bool:
        head = [args[0].upper(), *args[1 : len(want)]] if args else []
        return head == want

    return matches


def called(script: Script) -> Matcher:
    """Matches a call of `script`: FCALL of its function if it is one of the queue's steps (see
    rediswq/scripts.py), else EVALSHA with its SHA (redis-py's Script)."""
    if isinstance(script, Function):
        return command("FCALL", script.function)
    return command("EVALSHA", script.sha)


def sealing(queue: WorkQueue, by: str = "FCALL") -> Matcher:
    """Matches a seal that publishes staged items (by FCALL, or by EVALSHA), not the seed's first
    call of the same script, which only asks whether the queue is sealed for its run."""
    script = queue.scripts.seal
    is_call = called(script) if by == "FCALL" else command("EVALSHA", script.sha)

    def matches(args: Command) -> bool:
        # FCALL name numkeys KEYS... ARGV...: the staged count is the seal's 4th argument.
        return is_call(args) and args[3 + int(args[2]) + 3] != b"0"

    return matches


@dataclass
class Fault:
    """A pending `lose_reply`; `fired` is set once the reply has been dropped."""

    matching: Matcher
    nth: int
    seen: int = 0
    fired: threading.Event = field(default_factory=threading.Event)


class FaultProxy(Started):
    """Listens on 127.0.0.1 (a free port) and forwards to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._pairs: set[_Pair] = set()
        self._stalled_until = 0.0
        self._new_stalled_until = 0.0
        self._refusing_until = 0.0
        self._closed = False
        self.accepted = 0  # connections made through the proxy so far
        threading.Thread(target=self._accept, name="fault-proxy", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def lose_reply(self, matching: Matcher, nth: int = 1) -> Fault:
        """Let the `nth` matching command run, then cut its connection instead of replying."""
        fault = Fault(matching, nth)
        with self._lock:
            self._faults.append(fault)
        return fault

    def forget_faults(self) -> None:
        """Drop the `lose_reply` faults that have not fired."""
        with self._lock:
            self._faults.clear()

    def cut(self) -> None:
        """Close every open connection at once, as a network failure or a server restart would."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.close()

    def stall(self, seconds: float) -> None:
        """Forward nothing, either way, for `seconds` (returns at once); nothing is dropped."""
        with self._lock:
            self._stalled_until = time.monotonic() + seconds

    def stall_new_connections(self, seconds: float) -> None:
        """Forward nothing, either way, for `seconds` from now (returns at once), on connections
        made from now on; those already open go on as before."""
        with self._lock:
            self._new_stalled_until = time.monotonic() + seconds

    def outage(self, seconds: float) -> None:
        """Cut every connection, and close new ones at once for `seconds` (returns at once)."""
        with self._lock:
            self._refusing_until = time.monotonic() + seconds
        self.cut()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            if time.monotonic() < self._refusing_until:
                downstream.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                downstream.close()
                continue
            pair = _Pair(self, downstream, upstream)
            with self._lock:
                pair.stalled_until = self._new_stalled_until
                self._pairs.add(pair)
                self.accepted += 1
            pair.start()

    def _wait_while_stalled(self, pair: _Pair) -> None:
        while not pair.closed and time.monotonic() < max(self._stalled_until, pair.stalled_until):
            time.sleep(0.01)

    def _match(self, args: Command) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matching(args):
                    fault.seen += 1
                    if fault.seen == fault.nth:
                        self._faults.remove(fault)
                        return fault
        return None

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)


class _Pair:
    """One client connection and its connection to the server."""

    def __init__(self, proxy: FaultProxy, downstream: socket.socket, upstream: socket.socket):
        self.proxy = proxy
        self.downstream = downstream
        self.upstream = upstream
        self.commands = 0  # commands forwarded to the server
        self.drop_at: dict[int, Fault] = {}  # command index -> the fault that loses its reply
        self.stalled_until = 0.0  # this connection's own stall (stall_new_connections)
        self.closed = False

    def start(self) -> None:
        for target in (self._to_server, self._to_client):
            threading.Thread(target=target, daemon=True).start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for sock in (self.downstream, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.proxy._forget(self)

    def _to_server(self) -> None:
        buffer = b""
        while (chunk := self._recv(self.downstream)) is not None:
            buffer += chunk
            start = 0
            while (parsed := _command_at(buffer, start)) is not None:
                args, start = parsed
                fault = self.proxy._match(args)
                if fault is not None:  # registered before the command can reach the server
                    self.drop_at[self.commands] = fault
                self.commands += 1
            self.proxy._wait_while_stalled(self)
            if not self._send(self.upstream, buffer[:start]):
                return
            buffer = buffer[start:]

    def _to_client(self) -> None:
        buffer = b""
        replies = 0
        while (chunk := self._recv(self.upstream)) is not None:
            buffer += chunk
            start = 0
            while (end := _value_end(buffer, start)) is not None:
                if _answers_a_command(buffer[start:end]):
                    fault = self.drop_at.pop(replies, None)
                    replies += 1
                    if fault is not None:
                        self.proxy._wait_while_stalled(self)
                        self._send(self.downstream, buffer[:start])
                        fault.fired.set()  # before the client can see the cut
                        self.close()
                        return
                start = end
            self.proxy._wait_while_stalled(self)
            if not self._send(self.downstream, buffer[:start]):
                return
            buffer = buffer[start:]

    def _recv(self, sock: socket.socket) -> bytes | None:
        try:
            chunk = sock.recv(65536)
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return None
        return chunk

    def _send(self, sock: socket.socket, data: bytes) -> bool:
        try:
            sock.sendall(data)
        except OSError:
            self.close()
            return False
        return True


# The push by which RESP3 confirms a (P/S)SUBSCRIBE or (P/S)UNSUBSCRIBE of one channel: its kind
# comes first. A command that names several channels gets a push for each, and is not told apart.
_CONFIRMS_SUBSCRIBE = re.compile(rb">\d+\r\n\$\d+\r\n[ps]?(?:un)?subscribe\r\n", re.IGNORECASE)


def _answers_a_command(value: bytes) -> bool:
    """Whether the server's `value` is the reply to a command, not a message pushed on its own."""
    return not value.startswith(b">") or _CONFIRMS_SUBSCRIBE.match(value) is not None


def _command_at(buffer: bytes, pos: int) -> tuple[Command, int] | None:
    """The command (an array of bulk strings, or an inline line) at `pos`, and where it ends."""
    line_end = buffer.find(b"\r\n", pos)
    if line_end < 0:
        return None
    if buffer[pos : pos + 1] != b"*":
        return buffer[pos:line_end].split(), line_end + 2
    args = []
    at = line_end + 2
    for _ in range(int(buffer[pos + 1 : line_end])):
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        end = line_end + 2 + int(buffer[at + 1 : line_end])
        if len(buffer) < end + 2:
            return None
        args.append(buffer[line_end + 2 : end])
        at = end + 2
    return args, at


def _value_end(buffer: bytes, pos: int) -> int | None:
    """Where the RESP2/RESP3 value at `pos` ends, or None if it has not all arrived."""
    line_end = buffer.find(b"\r\n", pos)
    if line_end < 0:
        return None
    kind, at = buffer[pos : pos + 1], line_end + 2
    if kind in (b"$", b"=", b"!"):  # bulk string, verbatim string, bulk error
        size = int(buffer[pos + 1 : line_end])
        end = at + size + 2 if size >= 0 else at
        return end if len(buffer) >= end else None
    if kind in (b"*", b"~", b">", b"%", b"|"):  # array, set, push, map, attribute
        size = int(buffer[pos + 1 : line_end])
        # An attribute's pairs precede the value it describes, which is part of it.
        elements = {b"%": 2 * size, b"|": 2 * size + 1}.get(kind, max(size, 0))
        for _ in range(elements):
            element_end = _value_end(buffer, at)
            if element_end is None:
                return None
            at = element_end
    return at  # past the last element, or a one-line value: + - : _ , # (


def loaded(queue: WorkQueue) -> WorkQueue:
    """`queue`, with its library and scripts already on the server: the first call of each would
    otherwise be answered "Function not found" (or NOSCRIPT), a reply that is not the one a test
    means to lose."""
    for script in queue.scripts._asdict().values():
        queue.client.script_load(script.script)
    assert queue.scripts.lease.library.load(queue.client)
    return queue
