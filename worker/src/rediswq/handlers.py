"""The work done per item: the default sleeper, or a `module:function` named by the user.

The contract: the worker calls the function with each item (`str`, or `bytes` with `--bytes`).
Returning completes the item, and a returned value is its result (kept with `--results`); raising
fails the attempt, which is retried with backoff; raising `Reject` sends the item straight to the
dead letters.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from rediswq.errors import ConfigError

# What the worker calls: the raw item; a raise means the attempt failed.
Handler = Callable[[bytes], object]


class Reject(Exception):
    """Raised by a handler for an item that no retry can fix: it goes to the dead letters at
    once, with this exception's message as the reason."""


def sleeper(work_seconds: float) -> Callable[[str], None]:
    """The tutorial's stand-in for real work: wait `work_seconds`."""

    def work(item: str) -> None:
        if work_seconds:  # sleep(0) still costs a system call per item
            time.sleep(work_seconds)

    return work


def load(spec: str) -> Callable[[Any], object]:
    """Import `module:function`, from the working directory, PYTHONPATH or what is installed."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"handler {spec!r} is not of the form module:function")
    # `python -m rediswq` has the working directory on the path, the `rediswq` script does not;
    # both find a handler next to the items file, as RQ's and Celery's workers do.
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"handler {spec!r}: cannot import {module_name!r} ({exc})") from None
    except Exception as exc:  # the module itself raised, or does not compile
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise ConfigError(
            f"handler {spec!r}: importing {module_name!r} failed ({reason})"
        ) from None
    func = getattr(module, attr, None)
    if not callable(func):
        raise ConfigError(f"handler {spec!r}: {module_name} has no function {attr!r}")
    return func  # type: ignore[no-any-return]


def taking_bytes(func: Callable[[Any], object], *, as_bytes: bool) -> Handler:
    """Adapt a handler of str (strict UTF-8: a malformed item fails its attempt) or of bytes."""
    if as_bytes:
        return func

    def call(item: bytes) -> object:
        return func(item.decode("utf-8"))

    return call


class HandlerSpec(NamedTuple):  # not a dataclass: see execution.Failure
    """What to call per item, as settings: a child process loads the same handler from it."""

    spec: str = ""  # module:function; empty for the sleeper
    as_bytes: bool = False
    work_seconds: float = 0.0

    def load(self) -> Handler:
        func = load(self.spec) if self.spec else sleeper(self.work_seconds)
        return taking_bytes(func, as_bytes=self.as_bytes)
