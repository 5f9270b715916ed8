"""Where a seed's items come from: a file, stdin, or an HTTP(S) URL, streamed and checked against
the digest committed with it.

A list too big for a ConfigMap lives in object storage or on any HTTP server the seed can reach;
Git holds its URL and its items' digest (`rediswq digest`: the SHA-256 of the items joined by
newlines, the very hash their run id is cut from). The digest pins the content: an object replaced
under the same URL fails the seed instead of queuing another list. And it names the run, so the
workers need neither the list nor its URL, and the same items keep their run whether they come
from a ConfigMap or a URL, compressed or not.

Items are handed out as they are read, gzip-compressed or not, so memory stays bounded whatever the
list's size. The digest is checked when the stream ends, before the seed seals (seeding.py): a list
that does not match is never published, and its staged copy is dropped.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import re
import sys
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO, cast

from rediswq.errors import ConfigError, QueueError

# An item longer than this is a broken list (a file with no newlines), not work: refusing it keeps
# the seed's memory bounded. Redis itself would take items up to 512 MB.
MAX_ITEM_BYTES = 1 << 20
_CHUNK = 1 << 16
_GZIP = b"\x1f\x8b"
# Seconds a connect or a read may stall; a stalled download fails the seed, and the Job retries it.
_TIMEOUT = 60.0
# A download must also keep a pace, at least this many bytes in every _TIMEOUT seconds: a server
# that trickles a byte a second never stalls a read, and would hold the seed forever.
_PACE = 1 << 10
_DIGEST = re.compile(r"(?:sha256:)?([0-9a-fA-F]{64})")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def sha256_digest(text: str) -> str:
    """The 64 lowercase hex digits of a SHA-256 digest given bare or as `sha256:<hex>`; a
    ValueError for anything else."""
    found = _DIGEST.fullmatch(text.strip())
    if not found:
        raise ValueError("expected a SHA-256 digest, 64 hex digits as `rediswq digest` prints")
    return found.group(1).lower()


def checked_digest(text: str) -> str:
    """`sha256_digest(text)`, or a ConfigError naming ITEMS_SHA256."""
    try:
        return sha256_digest(text)
    except ValueError as exc:
        raise ConfigError(f"ITEMS_SHA256={text!r}: {exc}") from None


def checked_items(lines: Iterable[bytes], name: str) -> Iterator[bytes]:
    """The items among `lines`: each checked to be UTF-8 (the line is named if not), blank ones
    skipped."""
    for number, line in enumerate(lines, start=1):
        if number == 1:
            # Windows editors start a UTF-8 file with a byte order mark: no part of the item.
            line = line.removeprefix(codecs.BOM_UTF8)  # noqa: PLW2901
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{name}, line {number}: not valid UTF-8 ({exc.reason})") from None
        if line.strip():
            yield line


def source_name(source: str) -> str:
    """How messages name `source`."""
    if is_url(source):
        return f"items at {source}"
    return "stdin" if source in ("", "-") else f"items file {source}"


def streamed_items(source: str, digest: str | None = None) -> Iterator[bytes]:
    """The items of `source` (a path, "-" for stdin, or an http(s):// URL), read as a stream.

    Raises ConfigError, after the last item, when their digest is not `digest` (if given) or there
    are none; at once for a bad line or bad gzip data; QueueError when a download fails in a way a
    retry may mend. Nothing is opened until the first item is asked for.
    """
    name = source_name(source)
    sha256 = hashlib.sha256()
    count = 0
    with ExitStack() as stack:
        opened = stack.enter_context(_opened(source, name))
        # A download has no peek; files and stdin are buffered already.
        raw = (
            opened
            if isinstance(opened, io.BufferedReader)
            else io.BufferedReader(_Paced(opened), _CHUNK)
        )
        with _reading(name, opened):
            # The peek reads the first 64 KiB, which a download may already fail in.
            text: io.BufferedIOBase = raw
            if raw.peek(len(_GZIP))[: len(_GZIP)] == _GZIP:
                import gzip  # noqa: PLC0415 - see _reading

                text = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            for item in checked_items(_lines(text, name), name):
                if count:
                    sha256.update(b"\n")
                sha256.update(item)
                count += 1
                yield item
        if _short(opened):
            raise _cut(name, opened)
    if not count:
        raise ConfigError(f"{name} has no items (only blank lines or nothing)")
    if digest is not None and sha256.hexdigest() != digest:
        raise ConfigError(
            f"{name}: the items' digest is {sha256.hexdigest()}, not the committed {digest}; "
            "the list changed (commit its new `rediswq digest`) or the URL is wrong; "
            "nothing was queued"
        )


def _lines(stream: io.BufferedIOBase, name: str) -> Iterator[bytes]:
    """The lines of `stream` as bytes.splitlines() cuts the whole (at \\n, \\r\\n or \\r)."""
    number = 0
    while chunk := stream.readline(MAX_ITEM_BYTES + 2):
        if len(chunk) > MAX_ITEM_BYTES + 1:
            raise ConfigError(
                f"{name}, line {number + 1}: longer than {MAX_ITEM_BYTES} bytes (no newlines?)"
            )
        parts = chunk.splitlines()
        number += len(parts)
        yield from parts


def _opened(source: str, name: str) -> BinaryIO:
    if source in ("", "-"):
        return sys.stdin.buffer
    if not is_url(source):
        try:
            return Path(source).open("rb")
        except FileNotFoundError:
            raise ConfigError(f"{name} not found") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {name}: {exc.strerror or exc}") from None
    # The standard library's urllib: one streamed GET needs no new dependency in the image, and it
    # honours HTTPS_PROXY and SSL_CERT_FILE as users expect. Imported here, as in _reading: the
    # worker imports this module for its digests, and these took 5-8 ms of its start.
    import http.client  # noqa: PLC0415
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    try:
        return urllib.request.urlopen(source, timeout=_TIMEOUT)  # type: ignore[no-any-return]  # noqa: S310 - is_url checked the scheme
    except urllib.error.HTTPError as exc:
        # 5xx and 429 may pass; any other answer (404; 403, say an expired signed URL) will not.
        kind = QueueError if exc.code >= 500 or exc.code == 429 else ConfigError
        raise kind(f"{name}: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        raise QueueError(f"cannot fetch {name}: {getattr(exc, 'reason', exc)}") from None


class _Paced(io.RawIOBase):
    """A download that fails (TimeoutError) once it gets less than _PACE bytes in _TIMEOUT s."""

    def __init__(self, response: BinaryIO) -> None:
        self._response = response
        self._since = time.monotonic()
        self._got = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        # read1, not readinto: the response's readinto waits until the whole buffer is filled.
        data = cast(io.BufferedIOBase, self._response).read1(len(buffer))
        n = len(data)
        buffer[:n] = data
        self._got += n
        now = time.monotonic()
        if now - self._since >= _TIMEOUT:
            if n and self._got < _PACE:
                raise TimeoutError(f"less than {_PACE} bytes in {_TIMEOUT:g}s")
            self._since, self._got = now, 0
        return n


def _short(opened: BinaryIO) -> int:
    """How many bytes of its Content-Length a download did not get: http.client ends a body cut
    short like a complete one (only a chunked one raises)."""
    return getattr(opened, "length", None) or 0


def _cut(name: str, opened: BinaryIO) -> QueueError:
    return QueueError(
        f"reading {name} failed mid-way (the connection closed {_short(opened)} bytes short); "
        "nothing was queued"
    )


@contextmanager
def _reading(name: str, opened: BinaryIO) -> Iterator[None]:
    """Errors while reading, in one line: a broken download may pass on a retry, bad gzip not."""
    import gzip  # noqa: PLC0415 - only a seed reads; see _opened
    import http.client  # noqa: PLC0415

    try:
        yield
    except (gzip.BadGzipFile, zlib.error, EOFError) as exc:  # BadGzipFile is an OSError
        if _short(opened):  # gzip data cut short by the download, not by its maker
            raise _cut(name, opened) from None
        raise ConfigError(f"{name}: not valid gzip data ({exc})") from None
    except (OSError, http.client.HTTPException) as exc:
        raise QueueError(f"reading {name} failed mid-way ({exc}); nothing was queued") from None
