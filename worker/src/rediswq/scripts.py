"""The queue's Lua scripts, each one atomic step, registered once per client and called by SHA."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import redis
from redis.commands.core import Script

_PRELUDE = "common.lua"


def _source(name: str) -> str:
    folder = files("rediswq") / "scripts"
    # Redis scripts cannot include one another; prepending the shared functions keeps each
    # script a single atomic call without copying the record format into every file.
    return (folder / _PRELUDE).read_text() + (folder / f"{name}.lua").read_text()


@dataclass(frozen=True)
class Scripts:
    """redis-py's Script calls EVALSHA and loads the script again after NOSCRIPT (a restart)."""

    lease: Script
    complete: Script
    extend: Script
    release: Script
    reclaim: Script
    seal: Script

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls(
            **{name: client.register_script(_source(name)) for name in cls.__dataclass_fields__}
        )
