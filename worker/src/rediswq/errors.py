"""Errors that end a command with a one-line message and a non-zero exit."""


class QueueError(Exception):
    """A problem the user can fix: bad settings or input, an unreachable or misconfigured Redis."""
