"""Python's `logging` records (a handler's own) printed through the worker's `Lines`, so that one
process has one log format (logs.py)."""

from __future__ import annotations

import logging

from rediswq.logs import Lines


class _Forward(logging.Handler):
    def __init__(self, lines: Lines) -> None:
        super().__init__()
        self._lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            if record.levelno >= self._lines.level:
                self._lines.emit(record.levelno, "log", text, {"logger": record.name})
        except Exception:  # logging's own contract: never raise from emit
            self.handleError(record)


def install(lines: Lines) -> None:
    """Make `lines` the output of Python's `logging` too, at its level."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_Forward(lines))
    root.setLevel(lines.level)
