"""An HTTP server on loopback that serves item lists to the seed, and misbehaves on request."""

from __future__ import annotations

import contextlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def text(items: list[str]) -> bytes:
    """An items file's bytes: a line an item."""
    return "".join(f"{item}\n" for item in items).encode()


def encoded(items: list[str]) -> list[bytes]:
    return [item.encode() for item in items]


class ItemServer:
    """Serves `files` by path. A path in `cut` sends its Content-Length but only half the body,
    then closes: a download broken mid-way. A path in `chunked_cut` is sent chunked (no length),
    and the connection closed after that many bytes of the body, before the last chunk. A path in
    `trickle` sends its body a byte at a time, that many seconds apart. A path in `hold` sends
    that many bytes of its body, then the rest once `released` is set (closing after 60 s
    without). `status` maps a path to an error it answers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: set[str] = set()
        self.chunked_cut: dict[str, int] = {}
        self.trickle: dict[str, float] = {}
        self.hold: dict[str, int] = {}
        self.released = threading.Event()
        self.status: dict[str, int] = {}
        self.requests: list[str] = []
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests.append(self.path)
                if self.path in served.status:
                    self.send_error(served.status[self.path])
                    return
                body = served.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if self.path in served.chunked_cut:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    sent = body[: served.chunked_cut[self.path]]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(sent), sent))
                    self.close_connection = True  # and never the last, empty chunk
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in served.trickle:
                    for byte in body:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(served.trickle[self.path])
                    return
                if self.path in served.hold:
                    held = served.hold[self.path]
                    # The reader may be gone by the release (a seed killed mid-way).
                    with contextlib.suppress(ConnectionError):
                        self.wfile.write(body[:held])
                        self.wfile.flush()
                        if served.released.wait(60):  # else a cut, as the test ended
                            self.wfile.write(body[held:])
                    return
                self.wfile.write(body[: len(body) // 2] if self.path in served.cut else body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.released.set()
        self._httpd.shutdown()
        self._httpd.server_close()
