"""The settings table: every option that an environment variable can set, declared once.

Each command's parser gets only its own rows. The environment is read after parsing, and only for
the command being run, so a bad value is named by its variable (`LEASE_SECONDS=abc: ...`) and a
worker's setting cannot break `rediswq seed --help`.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple, TypeAlias

from rediswq.errors import ConfigError
from rediswq.logs import FORMATS, level_named
from rediswq.replicas import replica_count
from rediswq.retry import Backoff
from rediswq.sentinels import DEFAULT_MASTER, addresses
from rediswq.sources import sha256_digest

Parse = Callable[[str], Any]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

# Commands that talk to a Redis server given by the connection settings.
CONNECTED = frozenset(
    {"worker", "seed", "status", "failed", "history", "results", "runs", "exporter"}
)
# Commands that run workers: the worker itself, and `local`, which passes these on to its own.
WORKING = frozenset({"worker", "local"})
# Commands a person runs and waits for: they give up on an unreachable Redis after seconds.
INTERACTIVE = CONNECTED - {"worker", "exporter"}
# Commands that wait for Redis at start; the exporter serves at once (see cli/exporter.py).
WAITING = CONNECTED - {"exporter"}
INTERACTIVE_WAIT = "5"
WORKER = frozenset({"worker"})
RUNS = frozenset({"worker", "seed"})  # the commands that name a run
SERVING = frozenset({"worker", "exporter"})  # the commands that may serve metrics
DURABLE = frozenset({"worker", "seed", "runs"})  # the commands that may wait for replicas


def _number(kind: Callable[[str], float], *, minimum: float, strict: bool) -> Parse:
    noun = "a whole number" if kind is int else "a number"
    bound = f"greater than {minimum:g}" if strict else f"at least {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"expected {noun} {bound}") from None
        # NaN compares false with everything, so it would pass the bounds and wait forever.
        if not math.isfinite(value) or value < minimum or (strict and value == minimum):
            raise ValueError(f"expected {noun} {bound}")
        return value

    return parse


positive = _number(float, minimum=0, strict=True)
non_negative = _number(float, minimum=0, strict=False)
at_least_one = _number(int, minimum=1, strict=False)

# One Lua call unpacks two values per item; this keeps well inside Lua's stack.
MAX_PREFETCH = 1000


def prefetch_count(text: str) -> float:
    value: float = at_least_one(text)
    if value > MAX_PREFETCH:
        raise ValueError(f"expected a whole number from 1 to {MAX_PREFETCH}")
    return value


def backoff(text: str) -> Backoff:
    return Backoff.parse(text)


def argument(parse: Parse) -> Parse:
    """`parse` as an argparse type, for an option no variable sets: its message, exit 2."""

    def typed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc}, got {text!r}") from None

    return typed


def boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def digest(text: str) -> str:
    """A SHA-256 digest as 64 lowercase hex digits, or "" for none."""
    return sha256_digest(text) if text else ""


def text(value: str) -> str:
    return value


def listen_address(text: str) -> tuple[str, int]:
    """(host, port) of "PORT" (all interfaces) or "HOST:PORT"; port 0 means off."""
    host, _, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ValueError("expected PORT or HOST:PORT with a port from 0 to 65535")
    return host.strip("[]") or "0.0.0.0", number  # noqa: S104 - a pod is scraped from outside


def log_format(value: str) -> str:
    if value not in FORMATS:
        raise ValueError(f"expected {' or '.join(FORMATS)}")
    return value


class Setting(NamedTuple):  # not a dataclass: see execution.Failure
    """One option: its flag (None: environment only), variable, default as the variable would
    spell it, parser, the commands that take it, and its help.

    `switch` makes the flag a switch that sets the variable's value it names (`--no-seal` sets
    REQUIRE_SEAL to false); `defaults` overrides the default for some commands.
    """

    flag: str | None
    env: str
    default: str
    parse: Parse
    commands: frozenset[str]
    help: str
    switch: str | None = None
    defaults: Mapping[str, str] = MappingProxyType({})

    @property
    def dest(self) -> str:
        return self.env.lower()

    def default_for(self, command: str) -> str:
        return self.defaults.get(command, self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting("--redis-url", "REDIS_URL", "redis://redis:6379/0", text, CONNECTED,
       "redis:// or rediss:// URL; the password may also come from REDIS_PASSWORD"),
    Setting(None, "REDIS_PASSWORD", "", text, CONNECTED, "used when the URL has none"),
    Setting("--redis-wait-timeout", "REDIS_WAIT_TIMEOUT", "120", non_negative, WAITING,
       "seconds to wait for Redis to answer at start",
       defaults=dict.fromkeys(INTERACTIVE, INTERACTIVE_WAIT)),
    Setting("--redis-outage-timeout", "REDIS_OUTAGE_TIMEOUT", "300", positive, CONNECTED,
       "seconds to keep retrying once Redis is lost mid-run"),
    Setting("--redis-sentinels", "REDIS_SENTINELS", "", addresses, CONNECTED,
       "HOST:PORT,... of Redis Sentinels: they name the primary, followed through a failover; "
       "REDIS_URL then gives only the credentials, database and TLS"),
    Setting("--redis-sentinel-master", "REDIS_SENTINEL_MASTER", DEFAULT_MASTER, text, CONNECTED,
       "the name the Sentinels know the primary by"),
    Setting(None, "REDIS_SENTINEL_PASSWORD", "", text, CONNECTED,
       "the Sentinels' own password (their requirepass), if they have one"),
    Setting("--redis-min-replicas", "REDIS_MIN_REPLICAS", "auto", replica_count, DURABLE,
       "replicas that must hold a seal, a supersede or a restore before the command returns "
       "(WAIT); auto: 1 if the primary has a replica, else 0"),
    Setting("--queue", "QUEUE_NAME", "job2", text, CONNECTED | {"local"}, "the queue's name"),
    Setting("--lease-seconds", "LEASE_SECONDS", "60", positive, WORKER,
       "how long a lease lasts unless renewed"),
    Setting("--max-attempts", "MAX_ATTEMPTS", "5", at_least_one, WORKING,
       "attempts before an item goes to <queue>:failed"),
    Setting("--work-seconds", "WORK_SECONDS", "10", non_negative, WORKING,
       "how long the default handler works on an item", defaults={"local": "0.5"}),
    Setting("--handler", "HANDLER", "", text, WORKING,
       "module:function called with each item instead of sleeping"),
    Setting("--bytes", "HANDLER_BYTES", "false", boolean, WORKING,
       "pass items to the handler as bytes, not str", switch="true"),
    Setting("--prefetch", "PREFETCH", "1", prefetch_count, WORKING,
       f"items leased per round trip, up to {MAX_PREFETCH}"),
    Setting("--item-timeout", "ITEM_TIMEOUT", "0", non_negative, WORKING,
       "seconds one item may take, then its attempt fails (0: no limit; a limit runs the "
       "handler in a child process)"),
    Setting("--retry-backoff", "RETRY_BACKOFF", "1,60", backoff, WORKING,
       "seconds before a failed item's next attempt: BASE[,MAX], doubled per attempt, with "
       "jitter; off to retry at once"),
    Setting("--results", "RESULTS", "false", boolean, WORKING,
       "keep handlers' return values in <queue>:results", switch="true"),
    Setting("--results-max-bytes", "RESULTS_MAX_BYTES", "65536", at_least_one, WORKING,
       "larger results are not kept (and are logged)"),
    Setting("--results-ttl", "RESULTS_TTL", "604800", at_least_one, WORKING,
       "seconds the results are kept after the last one"),
    Setting("--replicated-handins", "REPLICATED_HANDINS", "false", boolean, WORKER,
       "a worker's hand-in also waits for REDIS_MIN_REPLICAS replicas: fewer repeats after a "
       "failover, one more wait per step", switch="true"),
    Setting("--seal-timeout", "SEAL_TIMEOUT", "600", non_negative, WORKER,
       "seconds to wait for the seed to seal the queue"),
    Setting("--no-seal", "REQUIRE_SEAL", "true", boolean, WORKER,
       "end when the queue is empty, sealed or not: the tutorial's manual flow", switch="false"),
    Setting("--run-items", "RUN_ITEMS", "", text, WORKER,
       "the items file of this worker's run: it waits for the seal of that run"),
    Setting("--run-label", "RUN_LABEL", "", text, RUNS,
       "part of the run id: bump it to run the same items again"),
    Setting("--items-sha256", "ITEMS_SHA256", "", digest, RUNS,
       "the digest of the run's items (`rediswq digest`): it names the run, the seed checks it"),
    Setting("--run-id", "RUN_ID", "", text, RUNS,
       "the run id itself, instead of one from the items"),
    Setting("--log-format", "LOG_FORMAT", "text", log_format, WORKER,
       "text (a time, a level, the tutorial's words) or json (one object a line)"),
    Setting("--log-level", "LOG_LEVEL", "info", level_named, WORKER,
       "debug (also a line per item done, with its duration), info, warning or error"),
    Setting("--metrics-port", "METRICS_PORT", "0", listen_address, SERVING,
       "serve Prometheus metrics on [HOST:]PORT, all interfaces by default; 0: off"),
)  # fmt: skip


def settings_of(command: str) -> list[Setting]:
    return [setting for setting in SETTINGS if command in setting.commands]


def add_settings(
    parser: argparse.ArgumentParser, command: str, *, run: Callable[[argparse.Namespace], int]
) -> None:
    """Make `parser` the one of `command`, run by `run`: give it the flags of `command`'s
    settings; their values are read by `resolve`."""
    parser.set_defaults(command_name=command, run=run)
    for setting in settings_of(command):
        if setting.flag is None:
            continue
        default = setting.default_for(command)
        if setting.switch is not None:
            parser.add_argument(
                setting.flag, dest=setting.dest, action="store_const", const=setting.switch,
                help=f"{setting.help} (env {setting.env}={setting.switch})",
            )  # fmt: skip
        else:
            shown = f"; default {default}" if default else ""
            parser.add_argument(
                setting.flag, dest=setting.dest, metavar=setting.env,
                help=f"{setting.help} (env {setting.env}{shown})",
            )  # fmt: skip


def resolve(args: argparse.Namespace) -> None:
    """Set each of the command's settings on `args`: the flag, else the variable, else the
    default, parsed; a refused value is a ConfigError that names where it came from.

    A ConfigError (exit 3), not a usage error: in a Job the values come from the settings, and
    another pod would refuse them the same way.
    """
    command = args.command_name
    for setting in settings_of(command):
        given = getattr(args, setting.dest, None) if setting.flag else None
        if given is not None:
            source = setting.env if setting.switch else f"{setting.flag} {shlex.quote(given)}"
            raw = given
        elif (env := os.environ.get(setting.env)) is not None:
            source, raw = f"{setting.env}={shlex.quote(env)}", env
        else:
            source, raw = (
                f"the default of {setting.flag or setting.env}",
                setting.default_for(command),
            )
        try:
            value = setting.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{source}: {exc}") from None
        setattr(args, setting.dest, value)
