"""The outbox relay: publish what the follower committed, then forget it.

The follower writes its messages into `chain_outbox` in the transaction that commits the
blocks they describe; the relay publishes them in order and deletes them only once the bus
acknowledged them. A crash after commit and before publication loses nothing (the rows are
still there at restart); a crash after publication and before the delete re-sends identical
messages, which consumers drop as duplicates of `(type, id)`.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from indexer import metrics
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
