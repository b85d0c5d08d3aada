"""Errors of the stream package, in the engine's three families.

- `InvalidInput`: the input's fault. Usage events never raise it: a bad event becomes a
  dead letter with a reason code instead;
- `InvariantViolation`: our bug or a broken deployment (no royalty policy at all): stop;
- `Retryable`: the world's fault (database unreachable, hold buffer full): try again later.
"""

from __future__ import annotations


class StreamError(Exception):
    """Base class of every error raised by the stream package."""


class InvalidInput(StreamError):  # noqa: N818 - a family name
    """The caller passed something the stream refuses (bad settings, a bad position)."""


class InvariantViolation(StreamError):  # noqa: N818 - a family name
    """A rule the join relies on does not hold; retrying cannot help."""


class MissingPolicy(InvariantViolation):
    """A registered model has no royalty policy, not even the default one (set at deploy)."""


class Retryable(StreamError):  # noqa: N818 - a family name
    """The world failed us; the same input may succeed later."""


class HoldBufferFull(Retryable):
    """Too many usage events wait for the finalized-chain watermark; stop consuming until it
    advances (back-pressure, never dropping)."""


class CheckpointConflict(Retryable):
    """Another runner moved the join's checkpoint since this batch read it: this batch's
    outputs are rolled back (they would double-decide its input), and it starts over."""


class BrokerUnavailable(Retryable):
    """No Kafka broker answered before the deadline (the worker retried with backoff until
    then); restarting later, once the broker is back, is the remedy."""


class OutputsNotAcknowledged(Retryable):
    """Kafka did not acknowledge every output of a batch (a broker down or restarting): the
    batch is rolled back and read again from its checkpoint."""
