"""Errors of the Python layer."""


class UsageError(Exception):
    """A user mistake (bad argument, unreadable file): the CLI prints the message
    on one line and exits 2."""


class ConfigurationError(ValueError):
    """Options that cannot work together or need something this installation lacks;
    raised when the middleware is set up, so the app fails at start-up, not per request."""
