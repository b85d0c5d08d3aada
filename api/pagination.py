"""Keyset pagination: `limit` plus an opaque `cursor`; pages are `{items, next_cursor}`.

A cursor is the sort key of the last item of the previous page, as base64url JSON. Clients
treat it as opaque; the server validates its shape (a list of ints and strings) and answers 400
to anything else. Keyset pages stay correct while rows are appended, unlike offsets.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Query, Request
from pydantic import BaseModel

from api.errors import InvalidParameterError

T = TypeVar("T")
CursorKey = tuple[int | str, ...]


class Page(BaseModel, Generic[T]):
    """One page of a list endpoint."""

    items: list[T]
    next_cursor: str | None = None


def encode_cursor(key: Sequence[int | str]) -> str:
    """The opaque cursor of a sort key."""
    text = json.dumps(list(key), separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> CursorKey:
    """The sort key in `cursor`; InvalidParameterError when it is not one of ours."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error) as exc:
        raise InvalidParameterError("malformed cursor") from exc
    if (
        not isinstance(key, list)
        or len(key) != arity
        or not all(isinstance(k, int | str) and not isinstance(k, bool) for k in key)
    ):
        raise InvalidParameterError("malformed cursor")
    return tuple(key)


@dataclass(frozen=True)
class PageRequest:
    """`limit` and the decoded position after which the page starts."""

    limit: int
    cursor: str | None

    def after(self, arity: int) -> CursorKey | None:
        """The sort key the page starts after, or None for the first page."""
        return None if self.cursor is None else decode_cursor(self.cursor, arity)


def page_request(
    request: Request,
    limit: Annotated[int | None, Query(ge=1, description="Page size.")] = None,
    cursor: Annotated[
        str | None, Query(max_length=512, description="`next_cursor` of the previous page.")
    ] = None,
) -> PageRequest:
    """The dependency of list endpoints: limit within the configured maximum."""
    settings = request.app.state.api_settings
    if limit is None:
        limit = min(settings.page_size_default, settings.page_size_max)
    if limit > settings.page_size_max:
        raise InvalidParameterError(
            f"limit must be at most {settings.page_size_max}", {"max": settings.page_size_max}
        )
    return PageRequest(limit, cursor)


def page_of(
    rows: Sequence[T], limit: int, key: Callable[[T], Sequence[int | str]]
) -> tuple[list[T], str | None]:
    """Cut `rows` (fetched with limit + 1) to a page and its next cursor."""
    if len(rows) > limit:
        kept = list(rows[:limit])
        return kept, encode_cursor(key(kept[-1]))
    return list(rows), None


def keyset_page(
    items: Sequence[T], page: PageRequest, key: Callable[[T], CursorKey], arity: int
) -> tuple[list[T], str | None]:
    """Page an in-memory list sorted by `key` (for aggregates computed in Python)."""
    after = page.after(arity)
    start = 0
    if after is not None:
        start = len(items)
        for position, item in enumerate(items):
            if _greater(key(item), after):
                start = position
                break
    return page_of(items[start : start + page.limit + 1], page.limit, key)


def _greater(a: CursorKey, b: CursorKey) -> bool:
    # Keys compare element by element; a str/int mix (a forged cursor) compares as strings.
    for x, y in zip(a, b, strict=True):
        if x == y:
            continue
        if type(x) is type(y):
            return x > y  # type: ignore[operator]
        return str(x) > str(y)
    return False
