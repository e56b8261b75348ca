"""Errors of the Python layer."""


class UsageError(Exception):
    """A user mistake (bad argument, unreadable file): the CLI prints the message
    on one line and exits 2."""
