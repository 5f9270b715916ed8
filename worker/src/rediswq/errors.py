"""Errors that end a command with a one-line message, and the exit code each one means.

A Job's `podFailurePolicy` reads the code: EXIT_CONFIG fails the Job at once, since another pod
with the same settings would fail the same way; EXIT_FAILURE spends one of its retries.
"""

EXIT_FAILURE = 1  # a runtime failure (Redis unreachable, the queue lost): worth a retry
EXIT_USAGE = 2  # argparse's code for a command line it cannot parse
EXIT_CONFIG = 3  # a configuration error that no retry can fix


def signal_exit(signum: int) -> int:
    """The shell's code for a process ended by signal `signum`."""
    return 128 + signum


class QueueError(Exception):
    """A problem the user can fix: bad settings or input, an unreachable or misconfigured Redis."""

    exit_code = EXIT_FAILURE


class ConfigError(QueueError):
    """A setting, credential, key type or handler that is wrong, whatever the retry."""

    exit_code = EXIT_CONFIG


class Stopped(BaseException):
    """A stopping worker gave up on a call to Redis that did not end in time (stops.py).

    A BaseException, as the worker's Shutdown: redis-py and the worker's waits catch RedisError
    and retry or poll on, where this must end the process."""


def first_line(exc: BaseException) -> str:
    """The first line of what `exc` says, or its type's name if it says nothing."""
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
