"""In-model metering, for operators who serve Python models without the gateway.

Triton forwards HTTP/gRPC headers matching `--http-header-forward-pattern` /
`--grpc-header-forward-pattern` (e.g. `x-royalty-.*`) to the model as request parameters. The
caller sends its API key as `x-royalty-api-key`; the model authenticates it, runs, counts the
units of its billing metric and makes one signed usage event durable per request *before*
returning the response, exactly like the gateway.

Two entry points over one `InModelMeter`:

- `meter.metered("model")`: a decorator for a PyTriton infer function (outermost, above
  `@batch` if any), which receives the `list[Request]` PyTriton passes;
- `PythonBackendMeter`: for a Triton Python-backend `model.py`, which reads
  `request.parameters()` (a JSON string) and answers per request (a request without valid
  credentials gets its own error response).

PyTriton fails a whole batch when the function raises, so with dynamic batching one caller's
bad key also fails the requests batched with it; the Python backend helper has no such limit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from metering.auth import ApiKeyStore, LicenseGrant
from metering.billing import BillingTable, ModelBilling
from metering.durable import Delivery, DurableProducer
from metering.errors import AuthenticationFailed, BillingError, MeteringError, PublishFailed
from metering.events import Usage, UsageEventFactory
from royalty.config import Settings

API_KEY_PARAMETER = "x-royalty-api-key"
"""The forwarded header (request parameter) carrying the caller's API key."""


class InferRequest(Protocol):
    """What the meter reads of a PyTriton request: its inputs and its parameters."""

    data: Mapping[str, Any]
    parameters: Mapping[str, Any] | None


InferFunc = Callable[[list[Any]], list[dict[str, Any]]]


def units_of(billing: ModelBilling, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> int:
    """The units of one request from its input and output arrays (numpy)."""
    if billing.metric == "requests":
        return 1
    if billing.metric == "batch_items":
        name = billing.batch_input or next(iter(inputs), None)
        if name is None or name not in inputs:
            raise BillingError(f"{billing.name}: no input {billing.batch_input!r} for batch size")
        shape = np.shape(inputs[name])
        if not shape:
            raise BillingError(f"{billing.name}: input {name!r} has no batch dimension")
        return int(shape[0])
    assert billing.units_output is not None
    if billing.units_output not in outputs:
        raise BillingError(f"{billing.name}: the model returned no {billing.units_output!r}")
    array = np.asarray(outputs[billing.units_output])
    if not np.issubdtype(array.dtype, np.integer):
        raise BillingError(f"{billing.name}: {billing.units_output!r} is not an integer tensor")
    total = int(array.sum())
    if total < 0:
        raise BillingError(f"{billing.name}: {billing.units_output!r} sums to {total} < 0")
    return total


class InModelMeter:
    """Authenticates callers from forwarded headers and records their usage (thread-safe)."""

    def __init__(
        self,
        *,
        billing: BillingTable,
        api_keys: Callable[[], ApiKeyStore],
        events: UsageEventFactory,
        producer: DurableProducer,
        durable_timeout_s: float = 30.0,
    ) -> None:
        self.billing = billing
        self.api_keys = api_keys
        self.events = events
        self.producer = producer
        self.durable_timeout_s = durable_timeout_s

    def authenticate(self, parameters: Mapping[str, Any] | None, model: str) -> LicenseGrant:
        """The caller's license for `model`, from the forwarded API key."""
        billing = self.billing.require(model)
        key = (parameters or {}).get(API_KEY_PARAMETER)
        if not isinstance(key, str) or not key.strip():
            raise AuthenticationFailed(
                f"missing credentials: send the API key in the `{API_KEY_PARAMETER}` header"
            )
        grant = self.api_keys().authenticate(key)
        grant.authorize(billing)
        return grant

    def submit(
        self, grant: LicenseGrant, model: str, units: int, latency_ms: int | None = None
    ) -> Future[Delivery] | None:
        """Start making the usage event of one request durable (None when worth 0 units)."""
        if units <= 0:
            return None
        encoded = self.events.encode(
            Usage(
                billing=self.billing.require(model),
                license_id=grant.license_id,
                units=units,
                completed_at=datetime.now(UTC),
                latency_ms=latency_ms,
            )
        )
        return self.producer.submit(encoded.key, encoded.value)

    def wait_durable(self, futures: Sequence[Future[Delivery] | None]) -> None:
        """Block until every event is durable; raise if one is not (the response must then
        not be returned: it would be usage nobody can bill)."""
        pending = [f for f in futures if f is not None]
        done, not_done = wait(pending, timeout=self.durable_timeout_s)
        if not_done:
            raise PublishFailed("usage events not durable in time")
        for future in done:
            future.result()  # raises the producer's error, if any

    def metered(self, model: str) -> Callable[[InferFunc], InferFunc]:
        """Decorator for a PyTriton infer function serving `model` (put it outermost)."""

        def decorate(infer: InferFunc) -> InferFunc:
            def wrapper(requests: list[Any]) -> list[dict[str, Any]]:
                # Authenticate every request before running any: a refused caller gets no
                # inference at all.
                grants = [self.authenticate(r.parameters, model) for r in requests]
                started = time.monotonic()
                outputs = infer(requests)
                latency_ms = int((time.monotonic() - started) * 1000)
                billing = self.billing.require(model)
                futures = [
                    self.submit(grant, model, units_of(billing, request.data, out), latency_ms)
                    for grant, request, out in zip(grants, requests, outputs, strict=True)
                ]
                self.wait_durable(futures)
                return outputs

            wrapper.__name__ = getattr(infer, "__name__", "metered_infer")
            wrapper.__doc__ = infer.__doc__
            return wrapper

        return decorate


class PythonBackendMeter:
    """The meter for a Triton Python-backend model (`model.py`)::

    meter = PythonBackendMeter(in_model_meter, "my-model")
    def execute(self, requests):
        responses = []
        for request in requests:
            grant = meter.authenticate(request.parameters())
            if isinstance(grant, MeteringError):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(grant))))
                continue
            outputs = ...  # run the model
            meter.record(grant, inputs, outputs)  # before returning the response
            responses.append(pb_utils.InferenceResponse(output_tensors=...))
        return responses
    """

    def __init__(self, meter: InModelMeter, model: str) -> None:
        self.meter = meter
        self.model = model
        self.billing = meter.billing.require(model)

    def authenticate(self, parameters_json: str | None) -> LicenseGrant | MeteringError:
        """The caller's grant, or the error to answer this request with (never raises for a
        caller's fault, so one bad request does not fail the others)."""
        try:
            parameters = json.loads(parameters_json) if parameters_json else {}
            if not isinstance(parameters, dict):
                raise AuthenticationFailed("request parameters are not a JSON object")
            return self.meter.authenticate(parameters, self.model)
        except ValueError:
            return AuthenticationFailed("request parameters are not valid JSON")
        except MeteringError as exc:
            return exc

    def record(
        self,
        grant: LicenseGrant,
        inputs: Mapping[str, Any],
        outputs: Mapping[str, Any],
        latency_ms: int | None = None,
    ) -> None:
        """Make the usage event of one served request durable (blocks until it is)."""
        units = units_of(self.billing, inputs, outputs)
        self.meter.wait_durable([self.meter.submit(grant, self.model, units, latency_ms)])


def build_in_model_meter(settings: Settings, spool_dir: Path | None = None) -> InModelMeter:
    """An `InModelMeter` from the engine settings (its producer started).

    Each model process needs its own spool directory (a spool has one owner): pass one per
    model instance, e.g. `<data_dir>/spool/<node_id>-<model>-<instance>`.
    """
    from metering.keyfiles import load_signing_key, reloading_api_keys
    from metering.settings import billing_table, build_producer, pepper, resolve_paths
    from metering.signing import Signer

    paths = resolve_paths(settings)
    m = settings.metering
    producer = build_producer(settings, spool_dir=spool_dir).start()
    return InModelMeter(
        billing=billing_table(m),
        api_keys=reloading_api_keys(paths.api_keys, pepper(m)).get,
        events=UsageEventFactory(m.node_id, Signer(load_signing_key(paths.signing_key))),
        producer=producer,
    )
