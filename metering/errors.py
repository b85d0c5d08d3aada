"""Errors raised by the metering package.

Three families, as everywhere in the engine:

- the caller's fault (`InvalidInput`): bad or missing credentials, a malformed KServe body, a
  license used for another model. Answered with a 4xx, never retried, never billed;
- the world's fault (`Retryable`): Kafka unreachable, the spool full. The gateway answers 503
  and the client may retry later;
- our own bug or a broken installation (`InvariantViolation`): a corrupt spool cursor, a
  missing signing key. Stop and alert.

The gateway maps these to HTTP status codes in one place (`gateway._error_response`).
"""

from __future__ import annotations


class MeteringError(Exception):
    """Base class of every error raised by the metering package."""


class InvalidInput(MeteringError):  # noqa: N818 - a family name, like ValueError's callers
    """The caller sent something we refuse; the message says what and is safe to show."""

    status = 400


class AuthenticationFailed(InvalidInput):
    """No credentials, or credentials we do not recognise (unknown, revoked, forged): 401."""

    status = 401


class Forbidden(InvalidInput):
    """Valid credentials that do not cover the request (license for another model): 403."""

    status = 403


class UnknownModel(InvalidInput):
    """A model this gateway does not meter: refused before any inference, 404."""

    status = 404


class PayloadTooLarge(InvalidInput):
    """A request body above the configured limit: 413, nothing forwarded."""

    status = 413


class BillingError(InvalidInput):
    """The units of an inference cannot be read (a request or response without the tensor the
    model's billing metric needs). Raised before forwarding whenever it can be."""


class BadSignature(InvalidInput):
    """A usage event or a wallet-signed request whose signature does not verify, is missing,
    or names a key id the key ring does not hold."""

    status = 401


class Retryable(MeteringError):  # noqa: N818 - a family name
    """The world failed us (Kafka down, spool full); trying again later may succeed."""

    status = 503


class PublishFailed(Retryable):
    """Kafka did not acknowledge an event (unreachable, timed out, or refused it)."""


class SpoolFull(Retryable):
    """The local spool reached its capacity: no new inference is accepted until it drains,
    because an inference we could not record would be usage lost."""


class SpoolClosed(Retryable):
    """The spool was closed (shutdown in progress): nothing more can be made durable here."""


class UsageNotRecorded(Retryable):
    """A served inference's usage event could not be made durable: its response is withheld
    (nothing unbilled leaves the gateway); the client may retry."""


class UnitsUnreadable(MeteringError):  # noqa: N818 - reads as the fact it reports
    """A served inference's units could not be read from Triton's answer: its response is
    withheld (502), and the billing error is counted and logged."""

    status = 502


class InvariantViolation(MeteringError):  # noqa: N818 - a family name
    """Our own rule broke (corrupt cursor, misconfiguration found at run time): a bug."""

    status = 500


class SpoolLocked(InvariantViolation):
    """Another process holds the spool directory; a spool has exactly one writer."""


class SpoolCorrupt(InvariantViolation):
    """Durable spool data (before its end, not a torn tail) fails to decode."""


class ConfigurationError(InvariantViolation):
    """The metering configuration is incomplete or inconsistent (caught at startup)."""
