"""A block range's logs into everything the follower writes and publishes, in one pass.

`RangeBuilder.build` turns the logs of a range into a `RangeBatch`: the events' messages (in
chain order), the undecoded logs, and every row of `chain_events`, the projections and
`chain_raw_logs`, ready for `IndexerStore.insert_prepared`. It needs no database and no
headers when the logs carry their block timestamps, so the follower builds the next range's
batch while it writes the current one.

The backfill's hot path: on a `COPY` connection, an event that the decoder builds without
validation (`LogDecoder.trusted_plans`: every argument a static word whose checks are its
field's validator) is written straight from its words, without building the `ChainEvent`:
its payload JSON, its message and its rows come from `%` templates compiled once per event
kind and contract from the same definitions as the full path (`messages.payload_plan` and
`messages.event_template` for the JSON, `projections.COLUMNS` for the rows, the COPY text
rules of `indexer.bulk`). The checks, the words read and the values are the decoder's
(`decoding.trusted_shape`, the same `Slot`s), so the output is the full path's, byte for
byte; `tests/indexer/test_batch.py` compares both on every event kind. Any other log, and
any log a check refuses, goes through `LogDecoder.decode` and the full path.
"""

from __future__ import annotations

import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from indexer.blocks import RawLog
from indexer.bulk import PreparedInsert, copy_text_type, escape_copy_text, prepare_insert
from indexer.decoding import HASH_WORDS, HEX_TEXT, LogDecoder, TrustedPlan, Undecoded, trusted_shape
from indexer.messages import (
    CHAIN_EVENT_TYPE,
    ChainMessage,
    encoded_event,
    event_template,
    message_time,
    payload_plan,
    plain_form,
)
from indexer.projections import COLUMNS, POSITION_COLUMNS, Const, Envelope, project_all
from indexer.store import EVENT_COLUMNS, event_rows, raw_log_rows
from schemas.chain import PAYLOAD_MODELS, ChainEvent
from schemas.money import UINT64_MAX
from schemas.tables import metadata

_events = metadata.tables["chain_events"]
_raw_logs = metadata.tables["chain_raw_logs"]


@dataclass
class RangeBatch:
    """A range's logs decoded, with their messages and rows."""

    events: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    messages: list[ChainMessage] = field(default_factory=list)
    """The events' messages, in chain order."""
    undecoded: list[Undecoded] = field(default_factory=list)
    inserts: list[PreparedInsert] = field(default_factory=list)


# Per event, the values its templates take, by name: the envelope's variable parts, the payload
# JSON, then the payload fields (in the plan's slot order).
_ENVELOPE_VARIABLES = (
    "block_number",
    "log_index",
    "block_hash",
    "block_timestamp",
    "tx_hash",
    "event_id",
    "payload",
)
_VARIABLE_TYPES: dict[str, type] = {
    "block_number": int,
    "log_index": int,
    "block_hash": str,
    "block_timestamp": int,
    "tx_hash": str,
    "event_id": str,
}


@dataclass(frozen=True)
class _Template:
    """A `%` template and the values it takes, picked from an event's variables."""

    text: str
    pick: Callable[[Sequence[Any]], tuple[Any, ...]]


def _picker(indices: Sequence[int]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    if not indices:
        return lambda values: ()
    if len(indices) == 1:
        index = indices[0]
        return lambda values: (values[index],)
    return operator.itemgetter(*indices)


class _NoFastPathError(Exception):
    """An event kind whose rows the templates cannot write exactly as the full path does."""


@dataclass(frozen=True)
class _FastEvent:
    """The compiled fast path of one event kind of one contract."""

    plan: TrustedPlan
    chain_id: int
    reads: tuple[tuple[int, int, int, Callable[[str], Any]], ...]  # (topic, start, end, read)
    payload: _Template
    message: str
    event_line: _Template
    projections: tuple[tuple[str, _Template], ...]  # (table, line)


def _line(
    table: sa.Table,
    columns: Sequence[tuple[str, Any]],
    variables: Mapping[str, tuple[int, type]],
) -> _Template:
    """A COPY text line of `table`: each column a constant (`Const`) or a variable by name.

    A variable must have the Python type the column's COPY text is written from (as
    `indexer.bulk` checks per row); a constant is formatted once, as the full path would.
    """
    parts: list[str] = []
    picks: list[int] = []
    for column, source in columns:
        expected = copy_text_type(table.c[column])
        if isinstance(source, Const):
            if source.value is None:
                parts.append(r"\N")
            elif type(source.value) is expected and expected in (str, int, bool):
                parts.append(escape_copy_text(str(source.value)).replace("%", "%%"))
            else:
                raise _NoFastPathError(f"{table.name}.{column}: constant {source.value!r}")
            continue
        index, value_type = variables[source]
        if value_type is not expected:
            raise _NoFastPathError(f"{table.name}.{column}: {value_type} is not {expected}")
        parts.append("%s")
        picks.append(index)
    return _Template("\t".join(parts), _picker(picks))


def _compile(plan: TrustedPlan, chain_id: int) -> _FastEvent:
    """The fast path of `plan`'s events (`_NoFastPathError` when one is not exact)."""
    model = PAYLOAD_MODELS[plan.kind]
    # Payload fields: each read by a slot into the one type its JSON is `str()` of (a bool is
    # written differently in JSON and in COPY text: an event with one takes the full path).
    forms: dict[str, tuple[type, bool]] = {}
    for slot in plan.slots:
        form = plain_form(model.model_fields[slot.field])
        if form is None:
            raise _NoFastPathError(f"{plan.kind}.{slot.field}: no plain JSON form")
        forms[slot.field] = form
    if set(forms) != set(model.model_fields) - {"kind"}:
        raise _NoFastPathError(f"{plan.kind}: fields without a slot")
    variables: dict[str, tuple[int, type]] = {
        name: (i, _VARIABLE_TYPES.get(name, str)) for i, name in enumerate(_ENVELOPE_VARIABLES)
    }
    for i, slot in enumerate(plan.slots):
        variables[slot.field] = (len(_ENVELOPE_VARIABLES) + i, forms[slot.field][0])

    # The payload's JSON, as `messages.payload_json` writes it (no field is None here).
    plan_fields = payload_plan(model)
    if plan_fields is None:
        raise _NoFastPathError(f"{plan.kind}: no payload plan")
    parts, picks = [], []
    for name, writer in plan_fields:
        if name == "kind":
            parts.append(f'"kind":{writer(plan.kind)}'.replace("%", "%%"))
            continue
        parts.append(f'"{name}":"%s"' if forms[name][1] else f'"{name}":%s')
        picks.append(variables[name][0])
    payload = _Template("{" + ",".join(parts) + "}", _picker(picks))

    # The `chain_events` row (`store.event_rows`), constants folded in.
    constants: dict[str, Any] = {
        "chain_id": chain_id,
        "contract": plan.contract,
        "kind": plan.kind,
        "removed": False,
    }
    event_columns = [
        (name, Const(constants[name]) if name in constants else name) for name in EVENT_COLUMNS
    ]
    event_variables = {**variables, "payload": (variables["payload"][0], _json_type())}
    event_line = _line(_events, event_columns, event_variables)

    # The projection rows (`projections.project`): declared columns, then the position, in
    # the column order of the table's COPY (`projection_columns`).
    projections = []
    envelope_constants = {"contract": plan.contract, "chain_id": chain_id}
    for table_name, declared in COLUMNS[model]:
        sources: dict[str, Any] = {}
        for column, source in declared:
            if isinstance(source, Envelope):
                if source.field not in envelope_constants:
                    raise _NoFastPathError(f"{table_name}.{column}: envelope {source.field}")
                sources[column] = Const(envelope_constants[source.field])
            else:
                sources[column] = source
        for column in POSITION_COLUMNS:
            sources[column] = Const(chain_id) if column == "chain_id" else column
        order = projection_columns(table_name)
        if order is None or set(order) != set(sources):
            raise _NoFastPathError(f"{table_name}: columns differ between event kinds")
        columns = [(column, sources[column]) for column in order]
        projections.append((table_name, _line(metadata.tables[table_name], columns, variables)))

    reads = tuple(
        (slot.topic, 2 + 64 * slot.word, 66 + 64 * slot.word, slot.read) for slot in plan.slots
    )
    return _FastEvent(
        plan=plan,
        chain_id=chain_id,
        reads=reads,
        payload=payload,
        message=event_template(chain_id, plan.contract, plan.kind, False),
        event_line=event_line,
        projections=tuple(projections),
    )


def _json_type() -> type:
    json_type = copy_text_type(_events.c["payload"])
    if json_type is None:
        raise _NoFastPathError("chain_events.payload: no COPY text form")
    return json_type


class RangeBuilder:
    """Builds the `RangeBatch` of a range's logs for one decoder (and database dialect)."""

    def __init__(self, decoder: LogDecoder, *, copy: bool) -> None:
        """`copy`: the rows are for a `COPY` connection (`indexer.bulk.dialect_uses_copy`);
        only then is there a fast path (its rows are COPY text)."""
        self.decoder = decoder
        self.copy = copy
        self._fast: dict[tuple[str, str], _FastEvent] = {}
        if copy:
            for key, plan in decoder.trusted_plans().items():
                try:
                    self._fast[key] = _compile(plan, decoder.chain_id)
                except _NoFastPathError:
                    continue

    @property
    def fast_kinds(self) -> set[str]:
        """The event kinds written by the fast path."""
        return {fast.plan.kind for fast in self._fast.values()}

    def build(self, logs: Sequence[RawLog], timestamps: Mapping[int, int]) -> RangeBatch:
        """The batch of `logs` (block timestamps from the logs, else from `timestamps`)."""
        batch = RangeBatch()
        messages = batch.messages
        event_lines: list[str] = []
        projection_lines: defaultdict[str, list[str]] = defaultdict(list)
        valid_blocks: set[str] = set()  # block hashes that passed the envelope check
        events: list[ChainEvent] = []
        payloads: list[str] = []
        fast_paths = self._fast
        for log in logs:
            stamp = log.block_timestamp
            if stamp is None:
                stamp = timestamps[log.block_number]
            fast = fast_paths.get((log.address, log.topics[0])) if log.topics else None
            if fast is not None and _write_fast(
                fast, log, stamp, messages, event_lines, projection_lines, valid_blocks
            ):
                batch.kinds[fast.plan.kind] += 1
                continue
            result = self.decoder.decode(log, stamp)
            if isinstance(result, ChainEvent):
                message, payload = encoded_event(result)
                messages.append(message)
                events.append(result)
                payloads.append(payload)
                batch.kinds[result.kind] += 1
            else:
                batch.undecoded.append(result)
        batch.events = len(messages)
        batch.inserts.append(
            prepare_insert(
                _events,
                event_rows(events, payloads),
                copy=self.copy,
                columns=EVENT_COLUMNS,
                lines=event_lines,
            )
        )
        grouped = project_all(events)
        for table_name in sorted(set(grouped) | set(projection_lines)):
            rows = grouped.get(table_name, [])
            lines = projection_lines.get(table_name, [])
            columns = projection_columns(table_name) or (tuple(rows[0]) if rows else ())
            batch.inserts.append(
                prepare_insert(
                    metadata.tables[table_name], rows, copy=self.copy, columns=columns, lines=lines
                )
            )
        raw_rows = raw_log_rows(self.decoder.chain_id, batch.undecoded)
        batch.inserts.append(prepare_insert(_raw_logs, raw_rows, copy=self.copy))
        return batch


def projection_columns(table_name: str) -> tuple[str, ...] | None:
    """The columns of a declared projection table (`projections.COLUMNS`), in the order its
    fast path writes them; None for a table no declaration writes."""
    for declared in COLUMNS.values():
        for name, columns in declared:
            if name == table_name:
                return (*(column for column, _ in columns), *POSITION_COLUMNS)
    return None


def _write_fast(
    fast: _FastEvent,
    log: RawLog,
    stamp: int,
    messages: list[ChainMessage],
    event_lines: list[str],
    projection_lines: defaultdict[str, list[str]],
    valid_blocks: set[str],
) -> bool:
    """Append the message and rows of `log` (False, nothing appended, when a check fails)."""
    plan = fast.plan
    topics, data = log.topics, log.data
    block_hash, block_number, log_index = log.block_hash, log.block_number, log.log_index
    # `decoding.trusted_shape`, with the block hash checked once per block (`valid_blocks`).
    if block_hash in valid_blocks:
        if not (
            len(topics) == plan.topics
            and len(data) == 2 + 64 * plan.data_words
            and type(block_number) is int
            and type(log_index) is int
            and type(stamp) is int
            and 0 <= block_number <= UINT64_MAX
            and 0 <= log_index <= UINT64_MAX
            and 0 <= stamp <= UINT64_MAX
            and HASH_WORDS.fullmatch(" ".join((log.tx_hash, *topics))) is not None
            and HEX_TEXT.fullmatch(data) is not None
        ):
            return False
    elif trusted_shape(log, stamp, plan.topics, plan.data_words):
        valid_blocks.add(block_hash)
    else:
        return False
    event_id = f"{fast.chain_id}:{block_hash}:{log_index}"
    values: list[Any] = [block_number, log_index, block_hash, stamp, log.tx_hash, event_id, ""]
    try:
        for topic, start, end, read in fast.reads:
            values.append(read(topics[topic][2:] if topic else data[start:end]))
    except ValueError:
        return False
    payload = fast.payload.text % fast.payload.pick(values)
    values[6] = payload
    value = fast.message % (
        block_hash,
        block_number,
        stamp,
        event_id,
        log_index,
        payload,
        log.tx_hash,
        event_id,
        message_time(stamp),
    )
    messages.append(ChainMessage(fast.chain_id, CHAIN_EVENT_TYPE, event_id, value.encode("utf-8")))
    event_lines.append(fast.event_line.text % fast.event_line.pick(values))
    for table_name, line in fast.projections:
        projection_lines[table_name].append(line.text % line.pick(values))
    return True
