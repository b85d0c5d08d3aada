"""Entry point of the local Triton server process: `python -m deploy.local.triton_server`.

PyTriton starts the real Triton server binary bundled in the `nvidia-pytriton` wheel and serves
the demo models from this process. Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from pytriton.triton import Triton, TritonConfig

from deploy.local.triton_models import bind_demo_models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--workspace", type=Path, default=None)
    parser.add_argument("--header-forward-pattern", default="x-royalty-.*")
    args = parser.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    config = TritonConfig(
        http_address="127.0.0.1",
        grpc_address="127.0.0.1",
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        exit_timeout_secs=5,
        http_header_forward_pattern=args.header_forward_pattern,
        grpc_header_forward_pattern=args.header_forward_pattern,
    )
    with Triton(config=config, workspace=args.workspace) as triton:
        bind_demo_models(triton)
        triton.run()
        print("triton ready", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
