"""One indexer per database and chain: the lease, pure.

Two followers writing the same chain into the same database would index the same ranges twice
(and fail on the primary keys half way) or, worse, roll back each other's reorgs. So a
follower holds a lease: a row next to its checkpoint naming the holder (a random owner id, its
host and pid) and when the lease expires. Every write transaction of the follower renews it
with a compare-and-set on the row's version (`indexer.store.IndexerStore.renew_lease`), in the
same transaction as its outputs: a follower whose lease was taken over cannot commit anything
more, even if it was paused for longer than the lease (that is what makes the lease safe, not
the clocks).

A second follower is refused (`IndexerLeaseHeldError`) while the lease is live, and may take
it when it has expired, when the holder released it on a clean stop, or at once when the
holder ran on this host and its process is gone (a crash or SIGKILL: no need to wait out the
lease to restart). "This host" is the host name: a container that shares it without sharing
the pid namespace would see a live holder as gone; the compare-and-set still keeps the state
right, and the older follower then stops with `IndexerLeaseLostError`.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


def lease_name(chain_id: int) -> str:
    """The `checkpoints` key of the lease of the indexer of `chain_id`."""
    return f"indexer-lease:{chain_id}"


@dataclass(frozen=True)
class Lease:
    """Who holds the indexer of a chain, and until when (unix seconds)."""

    owner: str
    host: str
    pid: int
    expires_at: float

    @classmethod
    def for_this_process(cls) -> Lease:
        """A new holder identity (expiring at once until `renewed`)."""
        return cls(owner=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), expires_at=0)

    def renewed(self, now: float, ttl_s: float) -> Lease:
        """The same holder, expiring `ttl_s` after `now`."""
        return replace(self, expires_at=now + ttl_s)

    def describe(self) -> str:
        """`pid 123 on host-a (owner 9f…), lease until 2024-05-01T12:00:00Z` for errors."""
        until = datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")
        return f"pid {self.pid} on {self.host} (owner {self.owner[:8]}), lease until {until}"

    def to_json(self) -> dict[str, Any]:
        """The JSON document stored in the lease row."""
        return {
            "owner": self.owner,
            "host": self.host,
            "pid": self.pid,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Lease:
        """Inverse of `to_json`."""
        return cls(
            owner=str(document["owner"]),
            host=str(document["host"]),
            pid=int(document["pid"]),
            expires_at=float(document["expires_at"]),
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with `pid` exists on this host (a reused pid counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def may_take(
    held: Lease | None, me: Lease, now: float, alive: Callable[[int], bool] = pid_alive
) -> bool:
    """Whether `me` may take the lease currently `held` (None: nobody holds it)."""
    if held is None or held.owner == me.owner or held.expires_at <= now:
        return True
    # The holder crashed on this host: its process is gone, nothing of it can commit again.
    return held.host == me.host and held.pid != me.pid and not alive(held.pid)
