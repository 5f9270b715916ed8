"""A log line reaches its stream whole and in its place: encoded as the stream says, after text
written past the sink, and to its end when a raw file takes it in parts."""

from __future__ import annotations

import io
from typing import Any, cast

from rediswq.linesink import LineSink


class Taking(io.RawIOBase):
    """A raw file that takes at most `most` bytes a write (a pipe's write cut by a signal), or
    none at all (None: a non-blocking pipe that is full)."""

    def __init__(self, most: int | None) -> None:
        self.most = most
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int | None:
        if self.most is None:
            return None
        taken = bytes(data[: self.most])
        self.data += taken
        return len(taken)


def unbuffered(raw: Taking) -> io.TextIOWrapper:
    """A text layer that writes through, over `raw`: sys.stdout under PYTHONUNBUFFERED."""
    return io.TextIOWrapper(cast(io.FileIO, raw), encoding="utf-8", write_through=True)


def test_a_line_a_raw_file_takes_in_parts_is_written_to_its_end() -> None:
    raw = Taking(most=7)
    LineSink(unbuffered(raw)).put("Working on apple\n")
    assert raw.data == b"Working on apple\n"


def test_a_line_a_raw_file_cannot_take_is_dropped_rather_than_retried_forever() -> None:
    raw = Taking(most=None)
    LineSink(unbuffered(raw)).put("Working on apple\n")
    assert raw.data == b""


def test_text_written_to_the_stream_before_a_line_comes_out_before_it() -> None:
    # A handler's print() goes through the text layer, which holds it unless it writes through.
    binary = io.BytesIO()
    out = io.TextIOWrapper(binary, encoding="utf-8")
    out.write("printed by a handler\n")
    LineSink(out).put("Done apple\n")
    assert binary.getvalue() == b"printed by a handler\nDone apple\n"


def test_a_line_is_encoded_as_the_stream_says() -> None:
    binary = io.BytesIO()
    out = io.TextIOWrapper(binary, encoding="ascii", errors="backslashreplace")
    LineSink(out).put("Working on café\n")
    assert binary.getvalue() == b"Working on caf\\xe9\n"


def test_a_stream_of_text_alone_is_written_as_text() -> None:
    out = io.StringIO()
    LineSink(out).put("Working on apple\n")
    assert out.getvalue() == "Working on apple\n"


def test_a_wrapper_that_names_no_encoding_gets_utf8() -> None:
    class Wrapper:  # a stream's wrapper that passes its binary layer on, and no more
        def __init__(self) -> None:
            self.buffer = io.BytesIO()

    wrapper = Wrapper()
    LineSink(cast(io.TextIOWrapper, wrapper)).put("Working on café\n")
    assert wrapper.buffer.getvalue() == "Working on café\n".encode()
