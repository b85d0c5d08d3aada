"""Typed contracts between the components: events, records, tables and migrations.

Pure pydantic models (no I/O), one module per concept:

- `money`, `evm`, `timestamps`: value types (`Uint256` as decimal strings in JSON, EIP-55
  `Address`, `Bytes32`, UTC instants).
- `usage`: the CloudEvents usage event, its signing payload and Kafka key.
- `chain`, `chain_payloads`: decoded contract events, their CloudEvents wrapper, the finalized
  watermark.
- `accrual`: priced usage (`Accrual`) and rejected usage (`DeadLetter`, `RejectReason`).
- `epoch`: the epoch lifecycle, allocations (Merkle leaves) and carries.
- `codec`, `cloudevents`: canonical JSON bytes and the defensive decoder; CloudEvents attributes.
- `errors`: `MalformedEvent`, `InvalidTransition`, `SchemaDriftError`.
- `export`: the published JSON Schemas (`schemas/jsonschema/*.json`).

The database side: `tables` (SQLAlchemy models), `migrations` (Alembic scripts), `migrate`
(`upgrade`, `downgrade`, `current`, `check`), `engine` (`create_engine`).
"""
