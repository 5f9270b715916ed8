"""The work done per item: the default sleeper, or a `module:function` named by the user."""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from rediswq.errors import ConfigError

# What the worker calls: the raw item; a raise means the attempt failed.
Handler = Callable[[bytes], object]


def sleeper(work_seconds: float) -> Callable[[str], None]:
    """The tutorial's stand-in for real work: wait `work_seconds`."""

    def work(item: str) -> None:
        if work_seconds:  # sleep(0) still costs a system call per item
            time.sleep(work_seconds)

    return work


def load(spec: str) -> Callable[[Any], object]:
    """Import `module:function`; the module must be importable (installed or on PYTHONPATH)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"handler {spec!r} is not of the form module:function")
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
