"""Token buckets: a sustained rate with a burst allowance, one bucket per client key.

Public reads are limited per client IP, admin calls per API key. The limiter is in memory and
per process (each uvicorn worker limits on its own); the 429 answer carries `Retry-After`, the
whole seconds until the client's next token.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBucketLimiter:
    """`acquire(key)` takes one token of `key`'s bucket, or says how long until one is there.

    A rate of 0 disables the limiter. Buckets of idle clients are dropped once full again, so
    memory stays bounded by the clients active within `burst / rate` seconds.
    """

    def __init__(
        self, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s < 0 or burst < 1:
            raise ValueError("rate must be >= 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def acquire(self, key: str, rate_per_s: float | None = None) -> float | None:
        """None when the request may go ahead, else the seconds to wait before retrying.

        `rate_per_s` overrides the limiter's rate for this key (e.g. an API key's own limit).
        """
        rate = self.rate if rate_per_s is None else rate_per_s
        if rate <= 0:
            return None
        burst = self.burst if rate_per_s is None else max(1, math.ceil(rate))
        now = self._clock()
        with self._lock:
            self._sweep(now)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = _Bucket(float(burst), now)
            else:
                bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
                bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return None
            return (1.0 - bucket.tokens) / rate

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep or self.rate <= 0:
            return
        refill_s = self.burst / self.rate
        self._next_sweep = now + max(refill_s, 1.0)
        idle = [k for k, b in self._buckets.items() if now - b.updated >= refill_s]
        for key in idle:
            del self._buckets[key]


def retry_after_header(wait_s: float) -> dict[str, str]:
    """`Retry-After` in whole seconds (at least 1), as HTTP wants it."""
    return {"Retry-After": str(max(1, math.ceil(wait_s)))}
