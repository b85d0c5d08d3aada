"""Billing rules: how many units one inference of a model is worth.

Each metered Triton model has an on-chain model id (its `ModelRegistry` id, which is what a
license names) and a billing metric:

- `requests`: 1 unit per successful inference request;
- `batch_items`: the request's batch size (first dimension of the batch input);
- `tokens`: the sum of an integer output tensor the model computes (e.g. `tokens`).

Pure: it reads already-parsed KServe bodies (`metering.kserve`) and returns integers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from metering.errors import BillingError, UnknownModel
from metering.kserve import InferenceBody

BillingMetric = Literal["requests", "batch_items", "tokens"]


@dataclass(frozen=True)
class ModelBilling:
    """How one Triton model (`name`) is billed against licenses for `model_id`."""

    name: str
    model_id: int
    metric: BillingMetric = "requests"
    units_output: str | None = None
    batch_input: str | None = None

    def __post_init__(self) -> None:
        if self.metric == "tokens" and not self.units_output:
            raise ValueError(f"{self.name}: metric 'tokens' needs units_output")
        if self.model_id < 0:
            raise ValueError(f"{self.name}: model_id must not be negative")

    @property
    def reads_request(self) -> bool:
        """Whether the request body must be parsed (batch size, or outputs asked for)."""
        return self.metric != "requests"

    @property
    def reads_response(self) -> bool:
        """Whether the response body must be parsed (the units tensor)."""
        return self.metric == "tokens"

    def check_request(self, request: InferenceBody) -> None:
        """Refuse, before any inference, a request whose units could not be read afterwards:
        one that asks for outputs but not the units tensor."""
        if self.metric == "tokens":
            wanted = request.requested_outputs()
            if wanted is not None and self.units_output not in wanted:
                raise BillingError(
                    f"model {self.name!r} is billed by its {self.units_output!r} output: "
                    f"ask for it too (or ask for no particular outputs)"
                )
        elif self.metric == "batch_items":
            request.batch_size(self.batch_input)

    def units(self, request: InferenceBody | None, response: InferenceBody | None) -> int:
        """The units of one successful inference (may be 0: nothing to bill)."""
        if self.metric == "requests":
            return 1
        if self.metric == "batch_items":
            if request is None:
                raise BillingError(f"{self.name}: batch_items needs the request body")
            return request.batch_size(self.batch_input)
        if response is None:
            raise BillingError(f"{self.name}: tokens needs the response body")
        assert self.units_output is not None  # checked in __post_init__
        total = response.output_sum(self.units_output)
        if total < 0:
            raise BillingError(f"{self.name}: output {self.units_output!r} sums to {total} < 0")
        return total


class BillingTable(Mapping[str, ModelBilling]):
    """The metered models by Triton model name; a model not in it is refused (404)."""

    def __init__(self, models: Mapping[str, ModelBilling]) -> None:
        for name, billing in models.items():
            if billing.name != name:
                raise ValueError(f"billing entry {name!r} describes model {billing.name!r}")
        self._models = dict(models)

    def __getitem__(self, name: str) -> ModelBilling:
        return self._models[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._models)

    def __len__(self) -> int:
        return len(self._models)

    def require(self, name: str) -> ModelBilling:
        """The billing of model `name`, or `UnknownModel`."""
        billing = self._models.get(name)
        if billing is None:
            raise UnknownModel(f"model {name!r} is not served through this metering gateway")
        return billing

    def by_model_id(self, model_id: int) -> list[ModelBilling]:
        """Every Triton model billed against on-chain `model_id`."""
        return [b for b in self._models.values() if b.model_id == model_id]
