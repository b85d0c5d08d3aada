"""The public and claims API: `create_app(settings | db_url)` builds the FastAPI app.

    app = create_app(get_settings())                      # what `royalty api` serves
    app = create_app("sqlite:///var/royalty.db", manifest=manifest, api=ApiSettings(...))

Reads the settlement database only (epochs, allocations, accruals, dead letters, the indexer's
projections); writes only API keys. Every response is JSON; amounts are decimal strings;
addresses are accepted in any case and returned checksummed. Errors have one shape (see
`api.errors`); `/metrics` serves Prometheus metrics of the requests.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alembic.runtime.migration import MigrationContext
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import COMMON_ERRORS, error_response, install_error_handlers
from api.proofs import RootMismatchError, TreeCache
from api.ratelimit import TokenBucketLimiter, retry_after_header
from api.routes import admin, chain, contributors, epochs, usage
from api.routes.contributors import PROOFS_PREFIX, PROOFS_ROUTE, answer_proof_lookup
from api.routes.deps import ApiContext
from royalty.config import ApiSettings, Settings
from schemas import migrate
from schemas.engine import create_engine
from settlement.chain.manifest import DeploymentManifest

log = logging.getLogger(__name__)

#: Paths outside the public rate limit: probes and scrapes must work under load.
_UNLIMITED = frozenset({"/healthz", "/readyz", "/metrics"})


class ApiMetrics:
    """Request counters and latencies, in a registry of the app's own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "royalty_api_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "royalty_api_request_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(self, route: str, method: str, status: str, seconds: float) -> None:
        """Count one request and its latency (the labelled series are looked up once)."""
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, status),
                self.seconds.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class Health(BaseModel):
    """Liveness or readiness."""

    status: str
    detail: str | None = None


class RequestGate:
    """Pure ASGI middleware: the public rate limit per client IP, request metrics, and proof
    lookups answered from memory before routing (`answer_proof_lookup`).

    Written against ASGI directly (not `BaseHTTPMiddleware`) to stay off the hot path: the
    proof lookups are the API's busiest requests.
    """

    def __init__(self, app: ASGIApp, context: ApiContext, metrics: ApiMetrics) -> None:
        self.app = app
        self.context = context
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        template: str | None = None
        path: str = scope["path"]
        try:
            if (
                self.context.public_limiter.enabled
                and path not in _UNLIMITED
                and not path.startswith("/v1/admin")
            ):
                client = scope.get("client")
                ip = client[0] if client else "unknown"
                wait = self.context.public_limiter.acquire(ip)
                if wait is not None:
                    status = 429
                    response = error_response(
                        429, "rate_limited", "too many requests", headers=retry_after_header(wait)
                    )
                    await response(scope, receive, send)
                    return
            if path.startswith(PROOFS_PREFIX):
                answered = await answer_proof_lookup(self.context, scope, receive, send)
                if answered:
                    status, template = answered, PROOFS_ROUTE
                    return

            async def send_with_status(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app(scope, receive, send_with_status)
        finally:
            if template is None:
                template = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe(
                template, scope["method"], str(status), time.perf_counter() - started
            )


def _document_page_limit(schema: dict[str, Any], maximum: int) -> None:
    """Write the configured page size maximum into every `limit` parameter of the schema."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter.get("name") == "limit" and parameter.get("in") == "query":
                    target = parameter["schema"]
                    for option in target.get("anyOf", [target]):
                        if option.get("type") == "integer":
                            option["maximum"] = maximum


def create_app(
    source: Settings | str,
    *,
    api: ApiSettings | None = None,
    manifest: DeploymentManifest | None = None,
    chain_id: int | None = None,
    distributor: str | None = None,
    engine: Engine | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """The API over the database of `source` (settings, or a database URL).

    `manifest` names the chain and the RoyaltyDistributor (needed by claim-all, and to read
    only this deployment's projections); from settings it is loaded from the manifest path
    when that file exists; `chain_id` and `distributor` name them without a manifest. `api`
    defaults to the settings' `api` section (or `ApiSettings()`).
    """
    if isinstance(source, Settings):
        url = source.database_url
        api = api or source.api
        if manifest is None and Path(source.manifest_path).is_file():
            manifest = DeploymentManifest.load(source.manifest_path)
    else:
        url = source
        api = api or ApiSettings()
    # Enough connections for every thread of the request thread pool (40 by default).
    engine = engine or create_engine(url, pool_size=10, max_overflow=40, pool_timeout=60)
    pepper = api.key_pepper.get_secret_value().encode() if api.key_pepper else None
    context = ApiContext(
        engine=engine,
        settings=api,
        chain_id=manifest.chain_id if manifest else chain_id,
        distributor=manifest.address("royalty_distributor") if manifest else distributor,
        trees=TreeCache(api.tree_cache_epochs),
        public_limiter=TokenBucketLimiter(api.rate_limit_per_s, api.rate_limit_burst),
        admin_limiter=TokenBucketLimiter(
            api.admin_rate_limit_per_s, max(1, math.ceil(api.admin_rate_limit_per_s))
        ),
        pepper=pepper,
        clock=clock,
    )
    metrics = ApiMetrics()
    app = FastAPI(
        title="Royalty engine API",
        version="1",
        summary="Royalties, Merkle proofs and claim transactions; epochs, usage, chain state.",
    )
    app.state.context = context
    app.state.api_settings = api
    app.state.metrics = metrics
    install_error_handlers(app)

    @app.exception_handler(RootMismatchError)
    async def _root_mismatch(_request: Request, exc: RootMismatchError) -> Response:
        log.error("stored allocations disagree with the epoch root: %s", exc)
        return error_response(500, "internal_error", "epoch data is inconsistent")

    app.add_middleware(RequestGate, context=context, metrics=metrics)

    for module in (contributors, epochs, chain, usage, admin):
        app.include_router(module.router)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["ops"],
        responses={503: COMMON_ERRORS[503] | {"model": Health}},
    )
    def readyz() -> Response:
        """The database is reachable and migrated to the head revision."""
        try:
            with engine.connect() as conn:
                revision = MigrationContext.configure(conn).get_current_revision()
        except Exception as exc:
            body = Health(
                status="unavailable", detail=f"database unreachable: {type(exc).__name__}"
            )
            return Response(body.model_dump_json(), status_code=503, media_type="application/json")
        head = migrate.head()
        if revision != head:
            body = Health(status="unavailable", detail=f"database at {revision}, head is {head}")
            return Response(body.model_dump_json(), status_code=503, media_type="application/json")
        return Response(Health(status="ok").model_dump_json(), media_type="application/json")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            _document_page_limit(schema, api.page_size_max)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def app_from_settings() -> FastAPI:
    """The app of this process's settings: uvicorn's factory for `royalty api`."""
    from royalty.config import get_settings

    return create_app(get_settings())
