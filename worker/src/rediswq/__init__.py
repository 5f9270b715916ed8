"""A finite Redis work queue with leases, and the worker that drains it.

`WorkQueue` is the protocol; `RedisWQ` is a drop-in for the Kubernetes tutorial's client library.
"""

from __future__ import annotations

import importlib
import sys

# What was loaded before this package (Python's own start, a sitecustomize, a program that imports
# it): the worker command leaves only what it loads itself to the OS at exit (preloaded.py). Read
# before `typing`, which loads `re`, `enum` and more, 0.7 ms of a worker's exit to clear.
_loaded_before = frozenset(sys.modules)

from typing import TYPE_CHECKING  # noqa: E402 - see _loaded_before

if TYPE_CHECKING:
    from rediswq.compat import RedisWQ
    from rediswq.errors import ConfigError, QueueError
    from rediswq.handlers import Reject
    from rediswq.queue import Lease, Released, State, Step, WorkQueue
    from rediswq.seeding import SeedResult, seed
    from rediswq.status import Status, snapshot

# Each name is imported from its module on first use (PEP 562): importing any part of the
# package runs this file first, and `rediswq worker` must not pay here for what it never uses
# (the tutorial's client, the seed, the status).
_HOMES = {
    "ConfigError": "rediswq.errors",
    "Lease": "rediswq.queue",
    "QueueError": "rediswq.errors",
    "RedisWQ": "rediswq.compat",
    "Reject": "rediswq.handlers",
    "Released": "rediswq.queue",
    "SeedResult": "rediswq.seeding",
    "State": "rediswq.queue",
    "Status": "rediswq.status",
    "Step": "rediswq.queue",
    "WorkQueue": "rediswq.queue",
    "seed": "rediswq.seeding",
    "snapshot": "rediswq.status",
}

__all__ = [
    "ConfigError",
    "Lease",
    "QueueError",
    "RedisWQ",
    "Reject",
    "Released",
    "SeedResult",
    "State",
    "Status",
    "Step",
    "WorkQueue",
    "seed",
    "snapshot",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'rediswq' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # the next use finds it without this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
