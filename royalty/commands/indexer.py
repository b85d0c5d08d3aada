"""`royalty indexer run`: follow the chain into the database and the `chain` topic.

Configuration comes from the settings (`[chain]`, `[db]`, `[kafka]`, `[engine] bus`); the
options override the few that are handy on the command line. Progress (blocks/s, events/s,
lag to the head, finalized watermark) is logged as structured lines; Prometheus metrics are
served with `--metrics-port`. SIGTERM and Ctrl-C stop after the current step (every step is
committed atomically, so SIGKILL is safe too: the next run resumes from the checkpoint).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Annotated, Any

import structlog
import typer
from sqlalchemy.pool import NullPool

from indexer import metrics
from indexer.errors import IndexerConfigError, IndexerLeaseHeldError, IndexerLeaseLostError
from indexer.follower import StepResult
from indexer.publisher import (
    ChainPublisher,
    KafkaChainConfig,
    KafkaChainPublisher,
    MemoryChainPublisher,
)
from indexer.service import build_follower, check_database
from royalty.config import Settings, load_settings
from royalty.logging import configure_logging
from schemas.engine import create_engine
from settlement.chain.errors import ManifestError
from settlement.chain.manifest import DeploymentManifest

app = typer.Typer(help="Chain indexer.", no_args_is_help=True)
log = structlog.get_logger("royalty.indexer")


@app.callback()
def indexer() -> None:
    """Chain indexer: follow the deployment's contracts into the database and Kafka."""


class Progress:
    """Rates and lag for the progress log, at most one line per `interval_s`."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.started = self.last = time.monotonic()
        self.blocks = self.events = 0
        self.window_blocks = self.window_events = 0

    def __call__(self, result: StepResult) -> None:
        self.blocks += result.blocks
        self.events += result.events
        self.window_blocks += result.blocks
        self.window_events += result.events
        now = time.monotonic()
        if result.kind == "reorg" or now - self.last >= self.interval_s:
            elapsed = max(now - self.last, 1e-9)
            finalized = result.finalized
            log.info(
                "indexer progress",
                step=result.kind,
                indexed=result.indexed_to,
                head=result.head,
                lag=max(0, result.head - result.indexed_to),
                blocks_per_s=round(self.window_blocks / elapsed, 1),
                events_per_s=round(self.window_events / elapsed, 1),
                finalized_block=finalized.block_number if finalized else None,
                finalized_time=finalized.block_timestamp if finalized else None,
                retracted=result.retracted,
            )
            self.last, self.window_blocks, self.window_events = now, 0, 0


def _publisher(settings: Settings) -> ChainPublisher:
    if settings.engine.bus == "kafka":
        kafka = settings.kafka
        return KafkaChainPublisher(
            KafkaChainConfig(
                bootstrap_servers=kafka.bootstrap_servers,
                topic=kafka.chain_topic,
                partitions=kafka.partitions,
                client_id=f"{kafka.client_id}-indexer",
            )
        )
    return MemoryChainPublisher()


@app.command("run")
def run(
    confirmations: Annotated[
        int | None, typer.Option(help="Finality depth. Default: chain.confirmations.")
    ] = None,
    max_block_range: Annotated[
        int | None, typer.Option(help="Largest eth_getLogs range. Default: chain.max_block_range.")
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")
    ] = 0,
    progress_interval: Annotated[float, typer.Option(help="Seconds between progress lines.")] = 5.0,
    stop_at_head: Annotated[
        bool, typer.Option(help="Exit once caught up with the head and everything is published.")
    ] = False,
) -> None:
    """Follow the chain into the database and the `chain` topic."""
    settings = load_settings()
    configure_logging(settings.engine)
    url = settings.database_url
    try:
        check_database(url)
        manifest = DeploymentManifest.load(settings.manifest_path)
    except (IndexerConfigError, ManifestError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    chain = settings.chain
    engine = create_engine(url, echo=settings.db.echo, poolclass=NullPool)
    publisher = _publisher(settings)
    follower = build_follower(
        manifest,
        chain.rpc_urls,
        engine,
        confirmations=chain.confirmations if confirmations is None else confirmations,
        max_block_range=max_block_range or chain.max_block_range,
        poll_interval_s=chain.poll_interval_s,
        publisher=publisher,
    )
    if metrics_port:
        metrics.serve(metrics_port)
    stop = threading.Event()

    def _stop(signum: int, _frame: Any) -> None:
        log.info("stopping", signal=signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log.info(
        "indexer starting",
        chain_id=manifest.chain_id,
        from_block=follower.checkpoint().block_number + 1,
        confirmations=follower.config.confirmations,
        bus=settings.engine.bus,
    )
    try:
        follower.run(stop, stop_at_head=stop_at_head, on_step=Progress(progress_interval))
    except (IndexerLeaseHeldError, IndexerLeaseLostError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    finally:
        publisher.close()
        engine.dispose()


if __name__ == "__main__":
    app()
