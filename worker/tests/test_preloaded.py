"""What the worker leaves to the operating system at exit (preloaded.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import ModuleType

from rediswq.preloaded import left_at_exit


def _module(name: str, file: str | None, **names: object) -> ModuleType:
    module = ModuleType(name)
    module.__file__ = file
    vars(module).update(names)
    return module


def test_only_preloaded_source_modules_that_nothing_later_names_are_left() -> None:
    named = _module("named", "/lib/named.py")
    modules = {
        "builtins": _module("builtins", None),
        "__main__": _module("__main__", "/app/main.py"),
        "_speedups": _module("_speedups", "/lib/_speedups.cpython-311-x86_64-linux-gnu.so"),
        "unnamed": _module("unnamed", "/lib/unnamed.py"),
        "named": named,
        "handler": _module("handler", "/app/handler.py", helper=named),
    }
    preloaded = {"builtins", "__main__", "_speedups", "unnamed", "named"}
    assert left_at_exit(preloaded, modules) == ["unnamed"]


def test_the_last_atexit_function_takes_them_out_after_the_later_ones_ran() -> None:
    # The check registered first runs last; the handler's, registered after the freeze, runs
    # while the modules are still there.
    program = textwrap.dedent(
        """
        import atexit, sys
        atexit.register(lambda: print(sorted({"json", "rediswq.keys", "shlex"} & set(sys.modules))))
        import json, rediswq.keys
        from rediswq import preloaded
        preloaded.freeze()
        import shlex
        atexit.register(lambda: print("handler's", "rediswq.keys" in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", program], check=True, capture_output=True, text=True
    ).stdout
    assert out.splitlines() == ["handler's True", "['shlex']"]
