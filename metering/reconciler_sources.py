"""Adapters of the reconciler's counters: Triton's metrics and statistics, the usage topic.

- `TritonMetricsCounter` scrapes `nv_inference_request_success` from Triton's Prometheus
  endpoint (always available, no credentials);
- `TritonStatisticsCounter` asks the statistics extension (`/v2/models/{m}/stats`) through
  tritonclient; Triton may restrict it (`--http-restricted-api`, as PyTriton does), hence the
  optional access headers;
- `UsageTopicCounter` tails the usage topic and counts distinct event ids per Triton model by
  event time, so replayed duplicates are not counted twice.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence

import structlog
import tritonclient.http as triton_http
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from metering.billing import BillingTable
from schemas.errors import MalformedEvent
from schemas.usage import parse_usage_event

log = structlog.get_logger(__name__)

SUCCESS_METRIC = "nv_inference_request_success"


def parse_success_counts(text: str, models: Sequence[str]) -> dict[str, int]:
    """Successful requests per model (all versions) from Triton's Prometheus text."""
    wanted = set(models)
    counts = dict.fromkeys(models, 0)
    for family in text_string_to_metric_families(text):
        if family.name != SUCCESS_METRIC:
            continue
        for sample in family.samples:
            model = sample.labels.get("model")
            if model in wanted:
                counts[model] += int(sample.value)
    return counts


class TritonMetricsCounter:
    """Triton's cumulative successes from its metrics URL."""

    def __init__(self, metrics_url: str, timeout_s: float = 5.0) -> None:
        self.metrics_url = metrics_url
        self.timeout_s = timeout_s

    def sample(self, models: Sequence[str]) -> dict[str, int]:
        """The counters now."""
        with urllib.request.urlopen(self.metrics_url, timeout=self.timeout_s) as resp:  # noqa: S310 - operator-configured URL
            return parse_success_counts(resp.read().decode(), models)


class TritonStatisticsCounter:
    """Triton's cumulative successes from the statistics extension (tritonclient)."""

    def __init__(self, http_url: str, headers: Mapping[str, str] | None = None) -> None:
        self.client = triton_http.InferenceServerClient(http_url.removeprefix("http://"))
        self.headers = dict(headers or {})

    def sample(self, models: Sequence[str]) -> dict[str, int]:
        """The counters now (a model Triton does not know counts 0)."""
        counts = {}
        for model in models:
            try:
                stats = self.client.get_inference_statistics(model, headers=self.headers)
            except triton_http.InferenceServerException as exc:
                log.warning("triton statistics unavailable", model=model, error=str(exc))
                counts[model] = 0
                continue
            counts[model] = sum(
                int(s["inference_stats"]["success"]["count"]) for s in stats["model_stats"]
            )
        return counts


class UsageTopicCounter:
    """Tails the usage topic from the time it starts; counts distinct events by model and
    event time. Events are attributed to their `subject` (the Triton model name the gateway
    and in-model meters set), else to the only Triton model billed under their model id."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        billing: BillingTable,
        retention_s: float = 3600.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.billing = billing
        self.retention_s = retention_s
        self._events: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="usage-counter", daemon=True)

    def start(self, from_time: float | None = None) -> UsageTopicCounter:
        """Start tailing (from the offsets at `from_time`, default now) and return once
        positioned."""
        self._from = time.time() if from_time is None else from_time
        self._thread.start()
        if not self._ready.wait(30):
            raise KafkaError(f"usage topic {self.topic} not reachable")
        return self

    def stop(self) -> None:
        """Stop tailing."""
        self._stop.set()
        self._thread.join(10)

    def _model_of(self, subject: str | None, model_id: int) -> str:
        if subject is not None and subject in self.billing:
            return subject
        candidates = self.billing.by_model_id(model_id)
        return candidates[0].name if len(candidates) == 1 else f"model:{model_id}"

    def _run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap_servers.split(","),
            enable_auto_commit=False,
            consumer_timeout_ms=200,
        )
        try:
            partitions = [
                TopicPartition(self.topic, p)
                for p in sorted(consumer.partitions_for_topic(self.topic) or ())
            ]
            consumer.assign(partitions)
            # Start a little before `from`: events are dated at completion, written later.
            offsets = consumer.offsets_for_times(
                {tp: int((self._from - 60) * 1000) for tp in partitions}
            )
            for tp in partitions:
                found = offsets.get(tp)
                if found is None:
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found.offset)
            for tp in partitions:
                consumer.position(tp)
            self._ready.set()
            while not self._stop.is_set():
                for message in consumer:
                    self._record(message.value)
                    if self._stop.is_set():
                        break
                self._prune()
        finally:
            consumer.close()

    def _record(self, raw: bytes) -> None:
        try:
            event = parse_usage_event(raw)
        except MalformedEvent:
            return  # not ours to judge: the stream processor dead-letters it
        model = self._model_of(event.subject, event.data.model_id)
        at = event.time.timestamp()
        with self._lock:
            self._events.setdefault(event.id, (model, at))

    def _prune(self) -> None:
        horizon = time.time() - self.retention_s
        with self._lock:
            stale = [i for i, (_, at) in self._events.items() if at < horizon]
            for event_id in stale:
                del self._events[event_id]

    def count_between(self, start: float, end: float) -> dict[str, int]:
        """Distinct events dated in (start, end], by model."""
        counts: dict[str, int] = {}
        with self._lock:
            for model, at in self._events.values():
                if start < at <= end:
                    counts[model] = counts.get(model, 0) + 1
        return counts
