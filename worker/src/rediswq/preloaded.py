"""What the worker loads before its handler (redis-py and the rest, some 34,000 objects) lives as
long as the process: frozen for the collector at start, and left to the operating system at exit.

Python's exit clears every module in `sys.modules` and frees its objects one by one: 3 ms of each
worker process here, a third of its CPU after its last item at prefetch 64. Nothing in those
modules needs it: the worker closes its connections and hands in its leases itself, the standard
streams are flushed by the interpreter, and `atexit` functions (logging's shutdown among them)
still run. So the last `atexit` function takes them out of `sys.modules`; frozen, the collector
leaves them too, and their memory goes with the process.

A handler's own modules, and every module loaded after these, are not touched: Python clears
them as it always does, so what the handler keeps there (an open file, say) is flushed and closed.
Nor is a preloaded module that one of them imports by name (`import json`): what the handler
puts in it is finalized too. Only what it leaves in a module it never names (a listener added to
one of redis-py's) goes unfinalized, as it would with `os._exit`.
"""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Collection, Mapping
from types import ModuleType


def freeze() -> None:
    """Freeze what is loaded now for the collector, and leave its modules to the OS at exit."""
    gc.freeze()
    # Registered now, so it runs after the atexit functions of what loads later (the handler's):
    # they may still import by name.
    atexit.register(_leave, frozenset(sys.modules))


def left_at_exit(preloaded: Collection[str], modules: Mapping[str, object]) -> list[str]:
    """The names among `preloaded` that Python's exit need not clear: modules loaded from source
    (not `__main__`, not built in), that no module loaded since (not in `preloaded`) refers to."""
    named = {
        id(value)
        for name, module in modules.items()
        if name not in preloaded and isinstance(module, ModuleType)
        for value in vars(module).values()
        if isinstance(value, ModuleType)
    }
    return [
        name
        for name, module in modules.items()
        if name in preloaded
        and name != "__main__"
        and isinstance(module, ModuleType)
        and str(getattr(module, "__file__", None) or "").endswith(".py")
        and id(module) not in named
    ]


def _leave(preloaded: frozenset[str]) -> None:
    for name in left_at_exit(preloaded, dict(sys.modules)):
        del sys.modules[name]
