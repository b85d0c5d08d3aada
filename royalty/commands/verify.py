"""`royalty verify EPOCH`: recompute an epoch from public inputs and check it against the
database and the chain (`settlement.verify`).

Exit codes: 0 every check passes, 1 a check fails, 2 a usage error (the epoch is not computed,
the manifest or the RPC endpoint is unusable).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.pool import NullPool

from royalty.config import load_settings
from schemas.engine import create_engine
from settlement.chain.client import ChainClient
from settlement.chain.distributor import RoyaltyDistributor
from settlement.chain.errors import ChainError
from settlement.chain.manifest import DeploymentManifest
from settlement.verify import EpochNotReadyError, VerifyReport, verify_epoch


def verify(
    epoch: Annotated[int, typer.Argument(help="The epoch to verify.", min=0, metavar="EPOCH")],
    db_url: Annotated[str | None, typer.Option(help="Database URL. Default: db.url.")] = None,
    rpc_url: Annotated[
        str | None, typer.Option(help="JSON-RPC URL. Default: the first chain.rpc_urls.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Deployment manifest. Default: chain.manifest_path.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Recompute an epoch from public inputs and check it against the chain."""
    settings = load_settings()
    try:
        deployment = DeploymentManifest.load(manifest or settings.manifest_path)
        client = ChainClient.connect(rpc_url or settings.chain.rpc_urls[0])
        if client.chain_id != deployment.chain_id:
            raise ChainError(
                f"the RPC serves chain {client.chain_id}, the manifest is for {deployment.chain_id}"
            )
    except (ChainError, IndexError) as exc:
        _usage_error(str(exc) or "no chain.rpc_urls configured")
    distributor = RoyaltyDistributor(client, deployment.address("royalty_distributor"))
    engine = create_engine(db_url or settings.database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            report = verify_epoch(
                connection,
                chain_id=deployment.chain_id,
                distributor=distributor.address,
                epoch=epoch,
                read_chain=distributor.epoch_info,
            )
    except EpochNotReadyError as exc:
        _usage_error(str(exc))
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        render(report, Console())
    raise typer.Exit(code=0 if report.ok else 1)


def render(report: VerifyReport, console: Console) -> None:
    """The report as a table: one row per check."""
    table = Table(title=f"epoch {report.epoch} ({report.status})")
    table.add_column("check")
    table.add_column("expected (recomputed)", overflow="fold")
    table.add_column("actual (recorded)", overflow="fold")
    table.add_column("ok")
    for check in report.checks:
        mark = "[green]ok[/green]" if check.ok else "[red]MISMATCH[/red]"
        table.add_row(check.name, check.expected, check.actual, mark)
    console.print(table)
    for note in report.notes:
        console.print(f"note: {note}")
    if report.ok:
        console.print(f"[green]epoch {report.epoch} verifies[/green]")
    else:
        names = ", ".join(check.name for check in report.failures)
        console.print(f"[red]epoch {report.epoch} does NOT verify: {names}[/red]")


def _usage_error(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)
