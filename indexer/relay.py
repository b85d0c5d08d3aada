"""The outbox relay: publish what the follower committed, then forget it.

The follower writes its messages into `chain_outbox` in the transaction that commits the
blocks they describe; the relay publishes them in order and deletes them only once the bus
acknowledged them. A crash after commit and before publication loses nothing (the rows are
still there at restart); a crash after publication and before the delete re-sends identical
messages, which consumers drop as duplicates of `(type, id)`.

`relay_committed` is the fast path of a follower that has just committed messages which were
then the whole of its chain's outbox: it publishes them from memory instead of reading back
what it just wrote (during a backfill, hundreds of bytes per event), with the same
publish-then-delete order. Anything else, e.g. messages left by a crash, goes through
`relay_outbox`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Engine

from indexer import metrics
from indexer.messages import ChainMessage
from indexer.publisher import ChainPublisher
from indexer.store import IndexerStore


def relay_outbox(
    engine: Engine, chain_id: int, publisher: ChainPublisher, batch: int = 5000
) -> int:
    """Publish every queued message of `chain_id`; returns how many were published."""
    published = 0
    while True:
        with engine.connect() as connection:
            queued = IndexerStore(connection, chain_id).outbox_batch(batch)
        if not queued:
            metrics.OUTBOX.set(0)
            return published
        publisher.publish([message for _, message in queued])
        with engine.begin() as connection:
            IndexerStore(connection, chain_id).outbox_delete([outbox_id for outbox_id, _ in queued])
        published += len(queued)


def relay_committed(
    engine: Engine,
    chain_id: int,
    publisher: ChainPublisher,
    messages: Sequence[ChainMessage],
    last_id: int,
    batch: int = 5000,
) -> int:
    """Publish `messages`, the committed outbox of `chain_id` up to id `last_id` (nothing
    else queued, checked in the committing transaction), then delete those rows."""
    for start in range(0, len(messages), batch):
        publisher.publish(messages[start : start + batch])
    with engine.begin() as connection:
        IndexerStore(connection, chain_id).outbox_delete_upto(last_id)
    metrics.OUTBOX.set(0)
    return len(messages)
