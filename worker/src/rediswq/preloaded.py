"""What the worker command loads before its handler (redis-py and the rest, some 34,000 objects)
lives as long as the process: frozen for the collector at start, and left to the operating system
at exit.

Python's exit clears every module in `sys.modules` and frees its objects one by one: 6.3 ms of
each worker process here, 4.1 ms without these (docs/benchmarks.md, "The exit"). Nothing in those
modules needs it: the worker closes its connections and hands in its leases itself, and the
interpreter flushes the standard streams. So an `atexit` function takes them out of
`sys.modules`; frozen, the collector leaves them too, and their memory goes with the process.

What goes are the modules loaded from source by the command itself (with the `rediswq` package and
its command line, and then for the worker) before the freeze, except one that a module loaded after
the freeze (the handler's) holds in its globals (`import json`, `from os import path`): what the
handler puts on that one is finalized too. A submodule of it still goes (`json.decoder`, after
`import json`), and so does what the handler leaves only in a module it never holds (a listener
added to one of redis-py's): that is not finalized, as with `os._exit`. The modules loaded after
the freeze are not frozen: Python clears them as it always does, so what the handler keeps there
(an open file, say) is flushed and closed.

The modules the program loaded (Python's own at start, a sitecustomize, the program that runs the
command and what it imports before it, as a handler's module may be) are frozen too, and Python
clears them at exit only if they are still alive after its first pass: one that only `sys.modules`
held would go then, and leave its globals to the collector, which never collects frozen objects. So
the same function holds them until that later pass, which clears their globals: a file a
sitecustomize opened is flushed.

The function runs after the `atexit` functions registered since the freeze (the handler's), which
can still use these modules, and before those registered earlier (`logging`'s shutdown): one of
those that imports a module gone by then gets a second copy of it.
"""

from __future__ import annotations

import atexit
import gc
import sys
from collections.abc import Collection, Mapping
from types import ModuleType

# The program's modules, held from the exit on (see above). Never freed itself: this
# module is one of those that go, and its globals are frozen.
_held_to_the_end: list[ModuleType] = []


def freeze(before: Collection[str]) -> None:
    """Freeze what is loaded now for the collector; at exit, leave the modules loaded now but not
    named in `before` (the program's) to the operating system."""
    gc.freeze()
    atexit.register(_leave, frozenset(before), frozenset(sys.modules))


def left_at_exit(
    before: Collection[str], frozen: Collection[str], modules: Mapping[str, object]
) -> list[str]:
    """The names in `frozen` but not in `before` that Python's exit need not clear: modules loaded
    from source that no module loaded since the freeze (not in `frozen`) holds in its globals."""
    held = {
        id(value)
        for name, module in modules.items()
        if name not in frozen and isinstance(module, ModuleType)
        for value in vars(module).values()
        if isinstance(value, ModuleType)
    }
    return [
        name
        for name, module in modules.items()
        if name in frozen
        and name not in before
        and isinstance(module, ModuleType)
        and str(getattr(module, "__file__", None) or "").endswith(".py")
        and id(module) not in held
    ]


def _leave(before: frozenset[str], frozen: frozenset[str]) -> None:
    modules = dict(sys.modules)
    _held_to_the_end.extend(
        module
        for name, module in modules.items()
        if name in before and isinstance(module, ModuleType)
    )
    for name in left_at_exit(before, frozen, modules):
        del sys.modules[name]
