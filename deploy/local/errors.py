"""Errors of the local service stack."""


class LocalStackError(RuntimeError):
    """Base class of local stack failures."""


class ToolMissingError(LocalStackError):
    """A program the stack needs is not installed; the message says how to install it."""


class ServiceStartError(LocalStackError):
    """A service was started but did not become ready; the message carries the end of its log."""
