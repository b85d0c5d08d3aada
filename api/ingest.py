"""HTTP ingest of usage events for operators without Kafka access: `POST /v1/usage`.

The body is a CloudEvents JSON batch (`application/cloudevents-batch+json`): an array of usage
events, each already signed by the operator's metering node. The operator authenticates with
its token (`Authorization: Bearer ro_...`). Every event is validated like the stream processor
will (schema, signature under the key ring) and must carry one of the operator's own key ids.

All or nothing: when any event is invalid the answer is 422 with one error per bad event
(`index`, `id`, `reason`, `detail`) and nothing is published, so a client fixes the batch and
sends it again; ids make re-sending safe. A valid batch goes through the same durable producer
as the gateway, and the answer (202) comes once every event is durable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from metering.auth import api_key_from_headers
from metering.durable import DurableProducer
from metering.errors import (
    AuthenticationFailed,
    BadSignature,
    MeteringError,
    PayloadTooLarge,
    SpoolFull,
)
from metering.metrics import MeteringMetrics
from metering.operators import OperatorRecord, OperatorStore
from metering.signing import KeyRing
from schemas.codec import canonical_json, strict_json_loads
from schemas.errors import MalformedEvent
from schemas.usage import UsageEvent, encode_usage_event, kafka_key, parse_usage_event

CLOUDEVENTS_BATCH = "application/cloudevents-batch+json"
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class EventError:
    """Why one event of a batch was refused (`reason` uses the dead-letter codes)."""

    index: int
    id: str | None
    reason: str
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The error's JSON form."""
        return {"index": self.index, "id": self.id, "reason": self.reason, "detail": self.detail}


@dataclass
class IngestService:
    """Validates batches and publishes them (what the route calls)."""

    operators: Callable[[], OperatorStore]
    key_ring: Callable[[], KeyRing]
    producer: DurableProducer
    metrics: MeteringMetrics | None = None

    def authenticate(self, headers: dict[str, str]) -> OperatorRecord:
        """The operator of a request, or `AuthenticationFailed`."""
        token = api_key_from_headers(headers)
        if token is None:
            raise AuthenticationFailed(
                "missing operator token: send `Authorization: Bearer ro_...`"
            )
        return self.operators().authenticate(token)

    def validate(
        self, operator: OperatorRecord, body: bytes
    ) -> tuple[list[UsageEvent], list[EventError]]:
        """The batch's events, and an error for each one that is not acceptable."""
        items = _parse_batch(body)
        ring = self.key_ring()
        events: list[UsageEvent] = []
        errors: list[EventError] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            raw_id = item.get("id") if isinstance(item, dict) else None
            shown_id = raw_id if isinstance(raw_id, str) else None
            if not isinstance(item, dict):
                errors.append(EventError(index, None, "malformed", "event must be a JSON object"))
                continue
            try:
                # Re-encoded so the very decoder of the `usage` topic judges it.
                event = parse_usage_event(canonical_json(item))
            except MalformedEvent as exc:
                errors.append(EventError(index, shown_id, "malformed", exc.reason))
                continue
            if event.keyid is None or event.keyid not in operator.keyids:
                errors.append(
                    EventError(
                        index,
                        event.id,
                        "bad_signature",
                        f"key id {event.keyid!r} is not one of operator {operator.operator!r}'s",
                    )
                )
                continue
            try:
                ring.verify(event)
            except BadSignature as exc:
                errors.append(EventError(index, event.id, "bad_signature", str(exc)))
                continue
            if event.id in seen:
                errors.append(EventError(index, event.id, "duplicate", "id repeated in batch"))
                continue
            seen.add(event.id)
            events.append(event)
        return events, errors

    async def publish(self, events: list[UsageEvent]) -> None:
        """Make every event durable (Kafka or spool); raises `MeteringError` if one is not."""
        await self.producer.publish_many([(kafka_key(e), encode_usage_event(e)) for e in events])


def _parse_batch(body: bytes) -> list[Any]:
    if len(body) > MAX_BATCH_BYTES:
        raise PayloadTooLarge(f"batch of {len(body)} bytes exceeds {MAX_BATCH_BYTES}")
    try:
        items = strict_json_loads(body)
    except (ValueError, RecursionError) as exc:
        raise BatchMalformed(f"body is not valid JSON: {exc}") from exc
    if not isinstance(items, list):
        raise BatchMalformed("a CloudEvents batch is a JSON array of events")
    if len(items) > MAX_BATCH_EVENTS:
        raise PayloadTooLarge(f"batch of {len(items)} events exceeds {MAX_BATCH_EVENTS}")
    return items


class BatchMalformed(MeteringError):  # noqa: N818 - reads as the fact it reports
    """The body is not a JSON array of objects at all (400)."""

    status = 400


def error_response(exc: MeteringError) -> JSONResponse:
    """The one mapping of metering errors to HTTP answers of the ingest API."""
    status = int(getattr(exc, "status", 500))
    headers = {"retry-after": "5"} if status == 503 else None
    return JSONResponse({"error": str(exc)}, status_code=status, headers=headers)


def create_ingest_router(service: IngestService) -> APIRouter:
    """The `POST /v1/usage` route over `service`."""
    router = APIRouter()

    @router.post("/v1/usage", status_code=202, tags=["ingest"])
    async def ingest_usage(request: Request) -> JSONResponse:
        """Ingest a signed CloudEvents batch of usage events."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        operator_name = "unknown"
        try:
            operator = service.authenticate(headers)
            operator_name = operator.operator
            content_type = headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type != CLOUDEVENTS_BATCH:
                return JSONResponse(
                    {"error": f"content type must be {CLOUDEVENTS_BATCH}"}, status_code=415
                )
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_BATCH_BYTES:
                raise PayloadTooLarge(f"batch of {declared} bytes exceeds {MAX_BATCH_BYTES}")
            body = await request.body()
            events, errors = service.validate(operator, body)
            if errors:
                _count(service, operator_name, "rejected", len(errors))
                return JSONResponse(
                    {"accepted": 0, "errors": [e.to_json() for e in errors]}, status_code=422
                )
            if not service.producer.has_room(len(events)):
                raise SpoolFull("usage spool full: retry later")
            await service.publish(events)
        except MeteringError as exc:
            _count(service, operator_name, f"http_{getattr(exc, 'status', 500)}", 1)
            return error_response(exc)
        _count(service, operator_name, "accepted", len(events))
        return JSONResponse({"accepted": len(events), "ids": [e.id for e in events]}, 202)

    return router


def _count(service: IngestService, operator: str, outcome: str, n: int) -> None:
    if service.metrics is not None and n:
        service.metrics.ingested.labels(operator, outcome).inc(n)
