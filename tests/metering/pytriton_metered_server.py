"""A PyTriton server whose `echo-lm` meters itself (run by test_pytriton_metering).

    python tests/metering/pytriton_metered_server.py --http-port ... --spool-dir ...

Settings (Kafka, keys, metered models) come from the ROYALTY_* environment.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pytriton.decorators import batch
from pytriton.model_config import ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

from metering.pytriton_metering import build_in_model_meter
from royalty.config import get_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--spool-dir", type=Path, required=True)
    args = parser.parse_args()

    meter = build_in_model_meter(get_settings(), spool_dir=args.spool_dir)

    @meter.metered("echo-lm")
    @batch  # type: ignore[untyped-decorator]
    def echo(prompt: NDArray[Any]) -> dict[str, NDArray[Any]]:
        texts = [bytes(p[0]).decode() for p in prompt]
        outputs = [" ".join(reversed(t.split())) for t in texts]
        return {
            "completion": np.array([[o.encode()] for o in outputs], dtype=np.object_),
            "tokens": np.array([[2 * len(t.split())] for t in texts], dtype=np.int64),
        }

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    config = TritonConfig(
        http_address="127.0.0.1",
        grpc_address="127.0.0.1",
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_timeout_secs=5,
        http_header_forward_pattern="x-royalty-.*",
        grpc_header_forward_pattern="x-royalty-.*",
    )
    with Triton(config=config, workspace=args.workspace) as triton:
        triton.bind(
            model_name="echo-lm",
            infer_func=echo,
            inputs=[Tensor(name="prompt", dtype=np.bytes_, shape=(1,))],
            outputs=[
                Tensor(name="completion", dtype=np.bytes_, shape=(1,)),
                Tensor(name="tokens", dtype=np.int64, shape=(1,)),
            ],
            config=ModelConfig(max_batch_size=8),
        )
        triton.run()
        stop.wait()
    meter.producer.close()


if __name__ == "__main__":
    main()
