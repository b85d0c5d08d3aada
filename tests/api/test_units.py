"""Pure parts of the API: token buckets and cursors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.errors import InvalidParameterError
from api.pagination import decode_cursor, encode_cursor
from api.ratelimit import TokenBucketLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_burst_then_rate() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(2.0, 4, clock)
    assert [limiter.acquire("a") for _ in range(4)] == [None] * 4
    wait = limiter.acquire("a")
    assert wait == pytest.approx(0.5)
    assert limiter.acquire("b") is None  # buckets are per key
    clock.now += 0.5
    assert limiter.acquire("a") is None
    assert limiter.acquire("a") is not None
    clock.now += 100
    assert [limiter.acquire("a") for _ in range(4)] == [None] * 4  # refilled to the burst only
    assert limiter.acquire("a") is not None


def test_zero_rate_disables() -> None:
    limiter = TokenBucketLimiter(0, 1)
    assert all(limiter.acquire("a") is None for _ in range(100))


keys = st.lists(st.one_of(st.integers(), st.text(max_size=20)), min_size=1, max_size=3)


@given(keys)
def test_cursor_round_trip(key: list[int | str]) -> None:
    assert decode_cursor(encode_cursor(key), len(key)) == tuple(key)


@pytest.mark.parametrize("cursor", ["", "!!", "e30", encode_cursor([1, 2]), "WzEuNV0"])
def test_foreign_cursors_are_refused(cursor: str) -> None:
    with pytest.raises(InvalidParameterError):
        decode_cursor(cursor, 1)
