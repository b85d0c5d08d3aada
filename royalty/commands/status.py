"""`royalty status`: lag of each component, watermarks, epochs, spool depth, dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from metering.settings import resolve_paths
from royalty.config import load_settings
from royalty.ops.status import StatusReport, gather_status, kafka_end_offsets, rpc_head
from schemas.engine import create_engine


def status(
    db_url: Annotated[str | None, typer.Option(help="Database URL (default: settings).")] = None,
    live: Annotated[
        bool, typer.Option(help="Ask the chain node and Kafka for head and end offsets.")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Lag, watermarks, open epochs, spool depth and dead letters of every component.

    Exits 0 when nothing is wrong, 1 when a problem is listed (a service unreachable, events in
    the spool, settlement transactions not mined).
    """
    settings = load_settings()
    engine = create_engine(db_url or settings.database_url)
    head = {}
    end_offsets = None
    if live:
        with engine.connect() as connection:
            chain_ids = [
                int(str(c).split(":", 1)[1])
                for (c,) in connection.exec_driver_sql(
                    "SELECT component FROM checkpoints WHERE component LIKE 'indexer:%'"
                )
                if str(c).count(":") == 1
            ]
        if settings.chain.rpc_urls:
            head = {chain_id: rpc_head(settings.chain.rpc_urls[0]) for chain_id in chain_ids}
        if settings.engine.bus == "kafka":
            end_offsets = kafka_end_offsets(settings.kafka.bootstrap_servers)
    try:
        with engine.connect() as connection:
            report = gather_status(
                connection,
                head=head,
                end_offsets=end_offsets,
                spool_dir=resolve_paths(settings).spool_dir,
            )
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, default=str))
    else:
        render(report, Console())
    raise typer.Exit(code=0 if report.healthy else 1)


def _time(unix: int | None) -> str:
    if unix is None:
        return "-"
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%d %H:%M:%S")


def render(report: StatusReport, console: Console) -> None:
    """Print the report as tables."""
    indexers = Table(title="Indexer", title_justify="left")
    for column in ("chain", "indexed", "finalized", "finalized at", "head", "lag (blocks)"):
        indexers.add_column(column)
    for i in report.indexers:
        indexers.add_row(
            str(i.chain_id),
            str(i.indexed_block),
            str(i.finalized_block),
            _time(i.finalized_time),
            "-" if i.head_block is None else str(i.head_block),
            i.error or ("-" if i.lag_blocks is None else str(i.lag_blocks)),
        )
    console.print(indexers)
    stream = Table(title="Stream join", title_justify="left")
    for column in ("component", "offset", "held", "end", "lag", "updated"):
        stream.add_column(column)
    for p in report.stream:
        stream.add_row(
            p.component,
            str(p.offset),
            str(p.held),
            "-" if p.end_offset is None else str(p.end_offset),
            "-" if p.lag is None else str(p.lag),
            p.updated_at[:19],
        )
    console.print(stream)
    console.print(
        f"accruals: {report.accruals}   usage watermark: {_time(report.usage_watermark)}   "
        f"dead letters: {sum(report.dead_letters.values())} "
        + (
            "(" + ", ".join(f"{k} {v}" for k, v in sorted(report.dead_letters.items())) + ")"
            if report.dead_letters
            else ""
        )
    )
    epochs = Table(title="Epochs", title_justify="left")
    for column in ("epoch", "status", "window", "total", "tx", "claimable at"):
        epochs.add_column(column)
    for e in report.epochs:
        epochs.add_row(
            str(e.id),
            e.status,
            f"{_time(e.start_time)} → {_time(e.end_time)}",
            e.total or "-",
            (e.tx_hash or "-")[:18],
            _time(e.claimable_at),
        )
    console.print(epochs)
    if report.spool is not None:
        console.print(
            f"metering spool: {report.spool.pending_records} events, "
            f"{report.spool.pending_bytes} bytes pending in {report.spool.segments} segment(s)"
        )
    if report.pending_settlement_txs:
        console.print(f"settlement transactions not mined: {report.pending_settlement_txs}")
    for problem in report.problems:
        console.print(f"[red]problem:[/red] {problem}")
    if report.healthy:
        console.print("[green]healthy[/green]")
