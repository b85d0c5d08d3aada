"""Small demo models served by the local Triton server (CPU only, no weights to download).

`echo-lm` stands in for a language model: it returns its prompt reversed and reports how many
whitespace-separated tokens it read and wrote, which is what metering bills for models whose
billing metric is tokens. `doubler` is a plain numeric model billed per batch item.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton

ECHO_LM = "echo-lm"
DOUBLER = "doubler"


@batch  # type: ignore[untyped-decorator]
def _echo_lm(prompt: NDArray[Any]) -> dict[str, NDArray[Any]]:
    texts = [bytes(p[0]).decode("utf-8", errors="replace") for p in prompt]
    outputs = [" ".join(reversed(t.split())) for t in texts]
    tokens = [len(t.split()) + len(o.split()) for t, o in zip(texts, outputs, strict=True)]
    return {
        "completion": np.array([[o.encode()] for o in outputs], dtype=np.object_),
        "tokens": np.array([[n] for n in tokens], dtype=np.int64),
    }


@batch  # type: ignore[untyped-decorator]
def _doubler(x: NDArray[Any]) -> dict[str, NDArray[Any]]:
    return {"y": (x * 2).astype(np.float32)}


def bind_demo_models(triton: Triton, **bind_kwargs: Any) -> None:
    """Bind the demo models to a PyTriton server."""
    triton.bind(
        model_name=ECHO_LM,
        infer_func=_echo_lm,
        inputs=[Tensor(name="prompt", dtype=np.bytes_, shape=(1,))],
        outputs=[
            Tensor(name="completion", dtype=np.bytes_, shape=(1,)),
            Tensor(name="tokens", dtype=np.int64, shape=(1,)),
        ],
        config=ModelConfig(max_batch_size=16),
        **bind_kwargs,
    )
    triton.bind(
        model_name=DOUBLER,
        infer_func=_doubler,
        inputs=[Tensor(name="x", dtype=np.float32, shape=(-1,))],
        outputs=[Tensor(name="y", dtype=np.float32, shape=(-1,))],
        config=ModelConfig(max_batch_size=16),
        **bind_kwargs,
    )
