"""Errors raised by the settlement core.

Three families, so callers can react without parsing messages: the caller sent something wrong
(`InvalidInputError`), our own code broke a rule it promises (`InvariantViolation`), or the world
failed in a way that may pass (`RetryableError`). Adapters translate driver exceptions into these;
the API maps them to HTTP status codes in one handler.
"""


class SettlementError(Exception):
    """Base class of every error raised by the settlement package."""


class InvalidInputError(SettlementError, ValueError):
    """The caller's input is malformed or violates a documented precondition.

    Retrying with the same input fails again; fix the input. Subclasses `ValueError` so that
    generic validation code (pydantic validators, argument parsers) treats it as such.
    """


class RootMismatchError(InvalidInputError):
    """A published Merkle root does not match the entries it claims to commit to.

    Raised when a payout file or tree dump is internally inconsistent: its leaves rebuild to a
    different root than the one it states.
    """


class InvariantViolation(SettlementError):  # noqa: N818 - name fixed by the design
    """An internal invariant does not hold: a bug in this code base, never the caller's fault.

    Examples: a split that does not conserve its total, a freshly built proof that does not verify.
    Never retry automatically; stop and alert, because any output produced is suspect.
    """


class RetryableError(SettlementError):
    """A transient failure outside our control (network, database, node); retrying may succeed.

    Raised by adapters only; the pure settlement core never raises it.
    """
