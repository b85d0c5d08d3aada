"""A small FastAPI app serving only the HTTP ingest (`royalty metering ingest`).

The full public API will include `create_ingest_router` too; this app lets an operator-facing
ingest run on its own, next to Kafka, with its own durable producer and spool.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.ingest import IngestService, create_ingest_router
from metering.keyfiles import Reloading, load_key_ring, reloading_operators
from metering.metrics import MeteringMetrics
from metering.settings import build_producer, pepper, resolve_paths
from royalty.config import Settings


def create_ingest_app(settings: Settings) -> FastAPI:
    """The ingest app: `POST /v1/usage` and `GET /metrics`; its producer runs in its lifespan.

    The ingest's spool is `<spool_dir>-ingest`, apart from a gateway's on the same node (a
    spool has one owner).
    """
    paths = resolve_paths(settings)
    metrics = MeteringMetrics()
    operators = reloading_operators(paths.operators, pepper(settings.metering))
    ring = Reloading(paths.key_ring, load_key_ring)
    producer = build_producer(
        settings, metrics, spool_dir=paths.spool_dir.with_name(paths.spool_dir.name + "-ingest")
    )
    service = IngestService(operators.get, ring.get, producer, metrics)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        producer.start()
        try:
            yield
        finally:
            producer.close()

    app = FastAPI(title="Royalty usage ingest", lifespan=lifespan)
    app.include_router(create_ingest_router(service))

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.ingest = service
    return app
