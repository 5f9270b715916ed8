"""A `rediswq` command on a pseudo-terminal of its own, as in a terminal window: it is the
command's controlling terminal, so Ctrl-C (b"\\x03") reaches its whole process group."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time


class Terminal:
    """Runs `rediswq *args`; collects what it writes to the terminal."""

    def __init__(self, *args: str, env: dict[str, str], columns: int = 160) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))

        def controlling_terminal() -> None:
            # A shell's background job ignores SIGINT, and its children inherit that.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        # The terminal's size, as a window gives it, not one inherited from the test's runner.
        sized = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "rediswq", *args],
            stdin=slave, stdout=slave, stderr=slave, env=sized,
            start_new_session=True, preexec_fn=controlling_terminal,  # noqa: PLW1509
        )  # fmt: skip
        os.close(slave)
        self._master = master
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every process holding the terminal is gone
                return
            if not chunk:
                return
            with self._lock:
                self._output += chunk

    @property
    def output(self) -> bytes:
        with self._lock:
            return bytes(self._output)

    def wait_for(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None or text in self.output, self.output[-2000:]
            assert time.monotonic() < deadline, f"no {text!r} in {self.output[-2000:]!r}"
            time.sleep(0.05)

    def type(self, keys: bytes) -> None:
        os.write(self._master, keys)

    def finish(self, timeout: float = 60) -> tuple[int, bytes]:
        """The exit code and everything written, once the command has ended."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        os.close(self._master)
        return code, self.output
