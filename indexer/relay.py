"""The outbox relay: publish what the follower committed, then forget it.

The follower writes its messages into `chain_outbox` in the transaction that commits the
blocks they describe; the relay publishes them in order and deletes them only once the bus
acknowledged them. A crash after commit and before publication loses nothing (the rows are
still there at restart); a crash after publication and before the delete re-sends identical
messages, which consumers drop as duplicates of `(type, id)`.

The messages of a block range's events are queued as one `EventRange` entry, not one row per
message: they are the stored events' messages, rebuilt byte for byte from `chain_events` when
the relay reads the outbox back (a rollback first expands every entry reaching the blocks it
deletes into the messages themselves, see `IndexerStore.expand_outbox_above`).

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
from indexer.store import EventRange, IndexerStore


def relay_outbox(
    engine: Engine, chain_id: int, publisher: ChainPublisher, batch: int = 5000
) -> int:
    """Publish every queued message of `chain_id`; returns how many were published.

    Entries are read in order until they hold `batch` messages (an `EventRange` is read back
    from the stored events as the messages it stands for); they are published, then deleted.
    """
    published = 0
    while True:
        ids: list[int] = []
        messages: list[ChainMessage] = []
        with engine.connect() as connection:
            store = IndexerStore(connection, chain_id)
            for outbox_id, entry in store.outbox_batch(batch):
                if isinstance(entry, EventRange):
                    messages.extend(store.range_messages(entry))
                else:
                    messages.append(entry)
                ids.append(outbox_id)
                if len(messages) >= batch:
                    break
        if not ids:
            metrics.OUTBOX.set(0)
            return published
        for start in range(0, len(messages), batch):
            publisher.publish(messages[start : start + batch])
        with engine.begin() as connection:
            store = IndexerStore(connection, chain_id)
            store.relax_durability()  # lost in a crash: re-sent, as if it crashed before
            store.outbox_delete(ids)
        published += len(messages)


def relay_committed(
    engine: Engine,
    chain_id: int,
    publisher: ChainPublisher,
    messages: Sequence[ChainMessage],
    last_id: int,
    batch: int = 5000,
) -> int:
    """Publish `messages`, the committed outbox of `chain_id` up to id `last_id` (nothing
    else queued, checked in the committing transaction; an `EventRange` entry among them given
    as the messages it stands for), then delete those rows."""
    for start in range(0, len(messages), batch):
        publisher.publish(messages[start : start + batch])
    with engine.begin() as connection:
        store = IndexerStore(connection, chain_id)
        store.relax_durability()  # lost in a crash: re-sent, as if it crashed before
        store.outbox_delete_upto(last_id)
    metrics.OUTBOX.set(0)
    return len(messages)
