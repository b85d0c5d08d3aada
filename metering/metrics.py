"""Prometheus metrics of the metering gateway, producer, ingest and reconciler.

Each gateway builds its own `CollectorRegistry` rather than using the global one, so several
gateways (tests, the benchmark) can live in one process without clashing names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.0002,
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class MeteringMetrics:
    """Every metric the metering package exports, in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "royalty_gateway_requests",
            "Requests answered by the gateway, by route and status code.",
            ["route", "code"],
            registry=r,
        )
        self.inferences = Counter(
            "royalty_gateway_inferences",
            "Successful inferences forwarded through the gateway, by Triton model.",
            ["model"],
            registry=r,
        )
        self.latency = Histogram(
            "royalty_gateway_request_seconds",
            "Time from request received to response sent (inference route).",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_latency = Histogram(
            "royalty_gateway_upstream_seconds",
            "Time Triton took to answer a forwarded inference.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.durable_latency = Histogram(
            "royalty_metering_durable_seconds",
            "Time from a served inference's event handed to the producer to that event durable "
            "(acked by Kafka, or fsync'd in the spool), by where it went.",
            ["delivery"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "royalty_gateway_auth_failures",
            "Requests refused for credentials (401) or license scope (403).",
            ["code"],
            registry=r,
        )
        self.events = Counter(
            "royalty_metering_events",
            "Usage events acknowledged, by Triton model and where they were made durable "
            "(kafka or spool).",
            ["model", "delivery"],
            registry=r,
        )
        self.zero_units = Counter(
            "royalty_metering_zero_unit_inferences",
            "Successful inferences worth 0 units (no event: nothing to bill).",
            ["model"],
            registry=r,
        )
        self.billing_errors = Counter(
            "royalty_metering_billing_errors",
            "Successful inferences whose units could not be read (response withheld).",
            ["model"],
            registry=r,
        )
        self.kafka_errors = Counter(
            "royalty_metering_kafka_errors",
            "Events Kafka failed to acknowledge (each one went to the spool).",
            registry=r,
        )
        self.replayed = Counter(
            "royalty_metering_spool_replayed",
            "Spooled events acknowledged by Kafka after a replay.",
            registry=r,
        )
        self.spool_records = Gauge(
            "royalty_metering_spool_depth",
            "Events in the spool not yet acknowledged by Kafka.",
            registry=r,
        )
        self.spool_bytes = Gauge(
            "royalty_metering_spool_bytes",
            "Bytes in the spool not yet acknowledged by Kafka.",
            registry=r,
        )
        self.spool_usage = Gauge(
            "royalty_metering_spool_usage_ratio",
            "Spool fill ratio (pending bytes over capacity).",
            registry=r,
        )
        self.spool_alarm = Gauge(
            "royalty_metering_spool_alarm",
            "1 while the spool is filled above its alarm ratio.",
            registry=r,
        )
        self.spooling = Gauge(
            "royalty_metering_spooling",
            "1 while events go to the spool instead of straight to Kafka.",
            registry=r,
        )
        self.refused = Counter(
            "royalty_gateway_refused_spool_full",
            "Inference requests refused with 503 because the spool is full.",
            registry=r,
        )
        self.ingested = Counter(
            "royalty_ingest_events",
            "Events received by the HTTP ingest, by operator and outcome.",
            ["operator", "outcome"],
            registry=r,
        )
        self.drift = Gauge(
            "royalty_reconciler_drift",
            "Triton successes minus metered events in the last window (positive: traffic "
            "bypassed metering).",
            ["model"],
            registry=r,
        )
        self.drift_total = Counter(
            "royalty_reconciler_unmetered",
            "Inferences Triton served that no usage event accounts for, summed over windows.",
            ["model"],
            registry=r,
        )
