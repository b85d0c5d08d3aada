"""`royalty worker`: the stream processor joining `usage` with the `chain` topic (`stream.app` on
kafka-python, or `stream.faust_app` on faust with `--engine faust`).

Configuration comes from the settings (`[kafka]` brokers and topics, `[db]`, `[epochs]`, the
deployment manifest for the chain id, the metering key ring); options override the few handy
on the command line. SIGTERM and Ctrl-C stop after the current batch; SIGKILL is safe too:
every batch commits its outputs and its input position together, and a restart resumes there.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer
from prometheus_client import start_http_server

from metering.keyfiles import load_key_ring
from metering.settings import resolve_paths
from royalty.config import load_settings
from royalty.logging import configure_logging
from settlement.chain.manifest import DeploymentManifest
from stream.app import REGISTRY, WorkerConfig, serve
from stream.epochs import EpochClock


class Engine(StrEnum):
    """The stream engines: the same join, checkpoints and guarantees, two Kafka clients."""

    KAFKA_PYTHON = "kafka-python"
    FAUST = "faust"


def worker(
    engine: Annotated[
        Engine, typer.Option(help="kafka-python (stream.app) or faust (stream.faust_app).")
    ] = Engine.KAFKA_PYTHON,
    group_id: Annotated[str, typer.Option(help="Kafka consumer group.")] = "royalty-worker",
    instance_id: Annotated[
        str | None, typer.Option(help="Static group membership id (fast restarts).")
    ] = None,
    max_held: Annotated[
        int, typer.Option(help="Usage events held for the chain before pausing.")
    ] = 10_000,
    stall_s: Annotated[
        float,
        typer.Option(
            help="Replace the usage consumer after this many seconds without records while "
            "records wait on its partitions (kafka-python engine)."
        ),
    ] = 30.0,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port.")
    ] = None,
) -> None:
    """Stream processor joining usage with chain state into accruals."""
    settings = load_settings()
    configure_logging(settings.engine)
    manifest = DeploymentManifest.load(settings.manifest_path)
    kafka = settings.kafka
    if metrics_port:
        start_http_server(metrics_port, registry=REGISTRY)
    config = WorkerConfig(
        bootstrap_servers=kafka.bootstrap_servers,
        db_url=settings.database_url,
        chain_id=manifest.chain_id,
        key_ring=load_key_ring(resolve_paths(settings).key_ring),
        clock=EpochClock(settings.epochs.length_s, settings.epochs.genesis_s),
        usage_topic=kafka.usage_topic,
        chain_topic=kafka.chain_topic,
        accruals_topic=kafka.accruals_topic,
        dead_letter_topic=kafka.dead_letter_topic,
        group_id=group_id,
        partitions=kafka.partitions,
        max_held=max_held,
        client_id=f"{kafka.client_id}-worker",
        instance_id=instance_id,
        stall_s=stall_s,
    )
    if engine is Engine.FAUST:
        from stream.faust_app import serve as serve_faust

        raise typer.Exit(serve_faust(config, loglevel="INFO"))
    serve(config)
