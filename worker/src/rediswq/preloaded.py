"""What the worker command loads before its handler (redis-py and the rest, some 34,000 objects)
lives as long as the process: frozen for the collector at start, and left to the operating system
at exit.

Python's exit clears every module in `sys.modules` and frees its objects one by one: 3 ms of each
worker process here, a third of its CPU after its last item at prefetch 64. Nothing in those
modules needs it: the worker closes its connections and hands in its leases itself, and the
interpreter flushes the standard streams. So an `atexit` function takes them out of
`sys.modules`; frozen, the collector leaves them too, and their memory goes with the process.

Only the modules loaded since the `rediswq` package was go: not those loaded before it (Python's
own at start, a sitecustomize's), nor any loaded after the freeze (the handler's), which Python
clears as it always does, so what the handler keeps there (an open file, say) is flushed and
closed. Nor does a module that one of those holds in its globals (`import json`, `from os import
path`): what the handler puts on it is finalized too. A submodule of such a module still goes
(`json.decoder`, after `import json`), and so does what the handler leaves only in a module it
never holds (a listener added to one of redis-py's): that is not finalized, as with `os._exit`.

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


def freeze(before: Collection[str]) -> None:
    """Freeze what is loaded now for the collector, and leave the modules loaded since `before`
    (the names in `sys.modules` then) to the operating system at exit."""
    gc.freeze()
    atexit.register(_leave, frozenset(set(sys.modules) - set(before)), frozenset(sys.modules))


def left_at_exit(
    added: Collection[str], frozen: Collection[str], modules: Mapping[str, object]
) -> list[str]:
    """The names among `added` that Python's exit need not clear: modules loaded from source, that
    no module loaded since the freeze (not in `frozen`) holds in its globals."""
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
        if name in added
        and isinstance(module, ModuleType)
        and str(getattr(module, "__file__", None) or "").endswith(".py")
        and id(module) not in held
    ]


def _leave(added: frozenset[str], frozen: frozenset[str]) -> None:
    for name in left_at_exit(added, frozen, dict(sys.modules)):
        del sys.modules[name]
