"""What every route needs: the app's context, a database connection, parsed path values."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from sqlalchemy.engine import Connection, Engine

from api.errors import InvalidParameterError, NotFoundError, UnavailableError
from api.pagination import PageRequest, page_request
from api.proofs import TreeCache
from api.ratelimit import TokenBucketLimiter
from royalty.config import ApiSettings
from schemas.evm import checksum_address
from schemas.money import UINT256_MAX

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"
UINT_PATTERN = r"^[0-9]{1,78}$"
BIGINT_MAX = 2**63 - 1


@dataclass
class ApiContext:
    """The app's long-lived parts, built by `create_app` and shared by every request."""

    engine: Engine
    settings: ApiSettings
    chain_id: int | None
    distributor: str | None
    trees: TreeCache
    public_limiter: TokenBucketLimiter
    admin_limiter: TokenBucketLimiter
    pepper: bytes | None
    clock: Callable[[], float] = field(default=time.time)
    cache: dict[str, Any] = field(default_factory=dict)
    """Short-lived shared reads (see `epoch_snapshot`)."""

    def now(self) -> int:
        """Unix seconds now (whole)."""
        return int(self.clock())

    def require_chain(self) -> tuple[int, str]:
        """The chain id and distributor address; 503 when no deployment is configured."""
        if self.chain_id is None or self.distributor is None:
            raise UnavailableError(
                "no deployment manifest configured: chain and distributor unknown"
            )
        return self.chain_id, self.distributor


async def context(request: Request) -> ApiContext:
    """The app's context (async: FastAPI would run a plain function in a worker thread)."""
    ctx: ApiContext = request.app.state.context
    return ctx


Context = Annotated[ApiContext, Depends(context)]


def connection(ctx: Context) -> Iterator[Connection]:
    """A connection for the request, read-only in spirit (routes that write commit)."""
    with ctx.engine.connect() as conn:
        yield conn


Db = Annotated[Connection, Depends(connection)]


def checksummed(address: str) -> str:
    """An address in any case (validated by the route's pattern) in EIP-55 form."""
    return checksum_address("0x" + address[2:].lower())


AddressPath = Annotated[
    str,
    Path(pattern=ADDRESS_PATTERN, description="0x address, any case", examples=["0x" + "ab" * 20]),
]
EpochPath = Annotated[int, Path(ge=0, le=BIGINT_MAX, description="Epoch id.")]
UintPath = Annotated[str, Path(pattern=UINT_PATTERN, description="uint256, decimal.")]


def parse_uint(value: str, what: str) -> int:
    """A decimal uint256 path value; 404 above 2^256 - 1 (no such id can exist)."""
    number = int(value)
    if number > UINT256_MAX:
        raise NotFoundError(f"{what} {value} does not exist")
    return number


def hex_or_none(value: str | None) -> str | None:
    """A stored hex string, lower-cased (stored values are already lower-case)."""
    return None if value is None else value.lower()


PageDep = Annotated[PageRequest, Depends(page_request)]


def int_cursor(page: PageRequest, maximum: int = BIGINT_MAX) -> int | None:
    """The single integer key (0..maximum) a page starts after, for lists keyed by one id."""
    after = page.after(1)
    if after is None:
        return None
    key = after[0]
    if not isinstance(key, int) or not 0 <= key <= maximum:
        raise InvalidParameterError("malformed cursor")
    return key


def int_pair_cursor(page: PageRequest) -> tuple[int, int] | None:
    """A `(block number, log index)` key a page starts after."""
    after = page.after(2)
    if after is None:
        return None
    first, second = after
    if not (isinstance(first, int) and isinstance(second, int)):
        raise InvalidParameterError("malformed cursor")
    if not (0 <= first <= BIGINT_MAX and 0 <= second <= BIGINT_MAX):
        raise InvalidParameterError("malformed cursor")
    return first, second
