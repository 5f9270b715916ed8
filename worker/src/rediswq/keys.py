"""The Redis keys of one queue. The pending list is the bare queue name, as in the tutorial.

On a Redis Cluster every key of a queue must be in one hash slot: its scripts touch them all in
one call. There the other keys start with the name as a hash tag, `{job2}:leases`: Redis hashes
only what is inside the braces, `job2`, which is also all it hashes of the bare `job2`, so the
pending list keeps its name. On one server the keys keep the names they always had.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.crc import key_slot

from rediswq.errors import ConfigError

# Attribute, suffix after the queue name, and Redis type of every key, in the order the Lua
# scripts take them as KEYS (see scripts/common.lua).
_LAYOUT = (
    ("pending", "", "list"),
    ("leases", ":leases", "hash"),
    ("deadlines", ":deadlines", "zset"),
    ("retries", ":retries", "hash"),
    ("failed", ":failed", "list"),
    ("stats", ":stats", "hash"),
    ("sealed", ":sealed", "string"),
    ("seq", ":seq", "string"),
    ("delayed", ":delayed", "zset"),
    ("failures", ":failed:info", "hash"),
    ("results", ":results", "hash"),
    ("replies", ":replies", "hash"),
    ("history", ":history", "stream"),
)

# The pub/sub channel of waiting workers (events.py) is the pending list's name and this; the
# steps publish on it (notify() in common.lua, given the suffix by the key binding).
EVENTS_SUFFIX = ":events"

# What a run keeps under its record's name (runs.py), in the order seal.lua and restore.lua take
# them as KEYS: the record, what the run left undone and their attempt counts, then its counters
# and lists, moved there when it ends.
_RUN_PARTS = ("", ":pending", ":retries", ":stats", ":failed", ":failed:info", ":results")


@dataclass(frozen=True)
class QueueKeys:
    name: str
    cluster: bool = False  # the keys of a queue on a Redis Cluster: one hash slot
    prefix: str = field(init=False)  # what every key but the pending list starts with
    pending: str = field(init=False)
    leases: str = field(init=False)
    deadlines: str = field(init=False)
    retries: str = field(init=False)
    failed: str = field(init=False)
    stats: str = field(init=False)
    sealed: str = field(init=False)
    seq: str = field(init=False)
    delayed: str = field(init=False)  # failed items waiting for their retry, by due time
    failures: str = field(init=False)  # each dead letter's last error, by item
    results: str = field(init=False)  # handlers' return values, by item (--results)
    replies: str = field(init=False)
    history: str = field(init=False)  # each attempt's outcome, capped (`rediswq history`)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ConfigError("queue name is empty; set --queue or QUEUE_NAME")
        prefix = self.name
        if self.cluster and not _tagged(self.name):
            prefix = f"{{{self.name}}}"
        object.__setattr__(self, "prefix", prefix)
        for attribute, suffix, _ in _LAYOUT:
            object.__setattr__(self, attribute, self.name if not suffix else prefix + suffix)
        if self.cluster and key_slot(self.pending.encode()) != key_slot(self.leases.encode()):
            # A name with braces that are not a tag of their own ("a}b"): `{a}b}` hashes `a`.
            raise ConfigError(
                f"queue name {self.name!r} cannot keep its keys in one hash slot of a Redis "
                "Cluster; use a name without braces, or with a {tag} of its own"
            )

    @property
    def slot(self) -> int:
        """The hash slot of every key of the queue, on a Redis Cluster."""
        return int(key_slot(self.pending.encode()))

    def staging(self, token: str) -> str:
        return f"{self.prefix}:staging:{token}"

    def run(self, run: str, part: str = "") -> str:
        """The record of run `run` (see runs.py), or its `part`: ":stats", ":failed", ":pending"
        (what it left undone), ":retries" (their attempt counts)."""
        return f"{self.prefix}:run:{run}{part}"

    def run_keys(self, run: str, parts: int = len(_RUN_PARTS)) -> list[str]:
        """The first `parts` keys of run `run`'s record, in the order the scripts take them."""
        return [self.run(run, part) for part in _RUN_PARTS[:parts]]

    @property
    def ended_runs(self) -> str:
        """Sorted set of the runs that ended, scored by when (ms)."""
        return f"{self.prefix}:runs"

    def all(self) -> list[str]:
        """Every key, in the order the Lua scripts expect them."""
        return [getattr(self, attribute) for attribute, _, _ in _LAYOUT]

    def expected_types(self) -> dict[str, str]:
        """Redis type of each key that exists; 'none' is fine for all of them."""
        return {getattr(self, attribute): kind for attribute, _, kind in _LAYOUT}


def _tagged(name: str) -> bool:
    """Whether Redis Cluster hashes only part of `name`: its first `{` is followed, later, by a
    `}` with something between them (the rule of the Cluster specification)."""
    start = name.find("{")
    return start >= 0 and name.find("}", start + 1) > start + 1


# Lua constants: OWN, where a script's own keys start in KEYS (the staging list, a run's record),
# after the layout's. Every key a script touches is in KEYS, none made from another's name
# (docs/high-availability.md); the events channel is not a key. EVENTS_SUFFIX, as above.
_LUA_CONSTANTS = f"local OWN = {len(_LAYOUT) + 1}\nlocal EVENTS_SUFFIX = '{EVENTS_SUFFIX}'\n"


def _lua_kinds() -> str:
    kinds = " else".join(f"if key == {name} then return '{kind}'\n" for name, _, kind in _LAYOUT)
    return f"local function layout_kind(key)\n{kinds}end end\n"


def lua_binding() -> str:
    """The Lua lines that bind each key to its name, `layout_kind(key)` to its Redis type, and
    `kind_of`, where a script adds the types of keys of its own (see scripts.py). A function,
    not a table, for the layout: a table of it would be built on every call (~0.5 us a step)."""
    names = ", ".join(attribute for attribute, _, _ in _LAYOUT)
    return (
        f"local {names} = unpack(KEYS, 1, {len(_LAYOUT)})\n{_LUA_CONSTANTS}{_lua_kinds()}"
        "local kind_of = {}\n"
    )


def lua_library_binding() -> tuple[str, str]:
    """The same names for the function library (see scripts.py): the lines that declare them
    once, when the library loads, and the lines each function runs first to bind them."""
    names = ", ".join(attribute for attribute, _, _ in _LAYOUT)
    declare = f"local {names}, KEYS, ARGV, kind_of\n{_LUA_CONSTANTS}{_lua_kinds()}"
    bind = f"{names} = unpack(keys, 1, {len(_LAYOUT)})\nKEYS, ARGV, kind_of = keys, args, {{}}\n"
    return declare, bind
