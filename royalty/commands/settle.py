"""`royalty settle`: close epochs, compute their distributions and commit them on-chain.

Configuration comes from the settings (`[db]`, `[chain]` RPC URL, deployment manifest and
`settler_private_key`, `[epochs]`); the options override them. `--once` runs one step (every
move that is due, once) and exits; otherwise it steps every `--interval` seconds until SIGTERM
or Ctrl-C. Every move is a compare-and-set and every transaction is recorded before it is
sent, so SIGKILL is safe: the next run resumes where the database and the chain are.
Without a settler key the settler computes epochs but commits nothing.

Test hook: `ROYALTY_SETTLER_CRASH_AT=before_send|after_send|after_record` (see
`settlement.committer`) makes the process SIGKILL itself around the commit transaction.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from prometheus_client import start_http_server
from sqlalchemy.pool import NullPool

from royalty.config import Settings, load_settings
from royalty.logging import configure_logging
from schemas.engine import create_engine
from settlement.chain.client import ChainClient, account_from_key
from settlement.chain.distributor import SETTLER_ROLE, RoyaltyDistributor
from settlement.chain.errors import ChainError
from settlement.chain.manifest import DeploymentManifest
from settlement.committer import Committer
from settlement.settler import REGISTRY, Compute, LoadInputs, Settler, SettlerConfig
from stream.epochs import EpochClock

log = structlog.get_logger("royalty.settler")


class SettlerConfigError(Exception):
    """The settler cannot start: no manifest, no chain, or a chain that is not the manifest's."""


def build_settler(
    settings: Settings,
    *,
    db_url: str | None = None,
    rpc_url: str | None = None,
    manifest: Path | None = None,
    epoch_length: int | None = None,
    genesis: int | None = None,
    allowed_lateness: int | None = None,
    wall_clock_watermark: bool | None = None,
    load_inputs: LoadInputs | None = None,
    compute: Compute | None = None,
) -> Settler:
    """The settler of `settings`, with the given overrides (None: the setting)."""
    epochs = settings.epochs
    try:
        deployment = DeploymentManifest.load(manifest or settings.manifest_path)
        client = ChainClient.connect(rpc_url or settings.chain.rpc_urls[0])
    except ChainError as exc:
        raise SettlerConfigError(str(exc)) from exc
    if client.chain_id != deployment.chain_id:
        raise SettlerConfigError(
            f"the RPC serves chain {client.chain_id}, the manifest is for {deployment.chain_id}"
        )
    engine = create_engine(db_url or settings.database_url, poolclass=NullPool)
    distributor = RoyaltyDistributor(client, deployment.address("royalty_distributor"))
    key = settings.chain.settler_private_key
    committer = None
    if key is not None:
        account = account_from_key(key.get_secret_value())
        if not distributor.has_role(SETTLER_ROLE, account.address):
            log.warning("the settler key lacks SETTLER_ROLE", account=account.address)
        committer = Committer(
            engine,
            distributor,
            account,
            receipt_timeout_s=epochs.receipt_timeout_s,
            confirmations=settings.chain.confirmations,
        )
    else:
        log.warning("no chain.settler_private_key: epochs are computed but not committed")
    clock = EpochClock(
        epoch_length or epochs.length_s, epochs.genesis_s if genesis is None else genesis
    )
    lateness = epochs.allowed_lateness_s if allowed_lateness is None else allowed_lateness
    wall_clock = (
        epochs.wall_clock_watermark if wall_clock_watermark is None else wall_clock_watermark
    )
    config = SettlerConfig(
        chain_id=deployment.chain_id,
        distributor=distributor.address,
        clock=clock,
        allowed_lateness_s=lateness,
        wall_clock_watermark=wall_clock,
    )
    return Settler(engine, config, committer, load_inputs=load_inputs, compute=compute)


def settle(
    once: Annotated[bool, typer.Option(help="Run one step and exit.")] = False,
    db_url: Annotated[str | None, typer.Option(help="Database URL. Default: db.url.")] = None,
    rpc_url: Annotated[
        str | None, typer.Option(help="JSON-RPC URL. Default: the first chain.rpc_urls.")
    ] = None,
    manifest: Annotated[
        Path | None, typer.Option(help="Deployment manifest. Default: chain.manifest_path.")
    ] = None,
    epoch_length: Annotated[
        int | None, typer.Option(help="Epoch length, seconds. Default: epochs.length_s.")
    ] = None,
    genesis: Annotated[
        int | None, typer.Option(help="Start of epoch 0, unix seconds. Default: epochs.genesis_s.")
    ] = None,
    allowed_lateness: Annotated[
        int | None,
        typer.Option(help="Usage watermark lateness, seconds. Default: epochs.allowed_lateness_s."),
    ] = None,
    wall_clock_watermark: Annotated[
        bool | None,
        typer.Option(help="Close idle epochs on wall-clock time. Default: epochs setting."),
    ] = None,
    interval: Annotated[
        float | None, typer.Option(help="Seconds between steps. Default: epochs.settle_interval_s.")
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")
    ] = 0,
) -> None:
    """Close epochs, compute distributions and commit them on-chain."""
    settings = load_settings()
    configure_logging(settings.engine)
    try:
        settler = build_settler(
            settings,
            db_url=db_url,
            rpc_url=rpc_url,
            manifest=manifest,
            epoch_length=epoch_length,
            genesis=genesis,
            allowed_lateness=allowed_lateness,
            wall_clock_watermark=wall_clock_watermark,
        )
    except SettlerConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    try:
        if once:
            settler.step()
            return
        if metrics_port:
            start_http_server(metrics_port, registry=REGISTRY)
        stop = threading.Event()

        def _stop(signum: int, _frame: Any) -> None:
            log.info("stopping", signal=signum)
            stop.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        settler.run(stop, interval or settings.epochs.settle_interval_s)
    finally:
        settler.engine.dispose()
