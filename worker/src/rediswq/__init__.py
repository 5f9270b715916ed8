"""A finite Redis work queue with leases, and the worker that drains it.

`WorkQueue` is the protocol; `RedisWQ` is a drop-in for the Kubernetes tutorial's client library.
"""

from rediswq.compat import RedisWQ
from rediswq.errors import ConfigError, QueueError
from rediswq.handlers import Reject
from rediswq.queue import Lease, Released, State, Step, WorkQueue
from rediswq.seeding import SeedResult, seed
from rediswq.status import Status, snapshot

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
