"""A real Triton Inference Server (CPU) from `nvidia-pytriton`, serving the demo models."""

from __future__ import annotations

import os
import sys
import sysconfig
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.process import ManagedProcess, free_port
from deploy.local.tools import REPO_ROOT
from deploy.local.triton_models import DOUBLER, ECHO_LM

DEMO_MODELS = (ECHO_LM, DOUBLER)


def triton_env() -> dict[str, str]:
    """Environment for a process that starts Triton.

    Triton's Python backend stub links the system libpython: without the running
    interpreter's LIBDIR on LD_LIBRARY_PATH the models fail to load.
    """
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _get_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URL
        return int(resp.status) == 200


@dataclass
class TritonServer:
    """Triton on free loopback ports (HTTP, gRPC, metrics) serving `DEMO_MODELS`."""

    workdir: Path
    http_port: int = field(default_factory=free_port)
    grpc_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    start_timeout: float = 120.0
    _process: ManagedProcess | None = None
    startup_seconds: float = 0.0

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> TritonServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "deploy.local.triton_server",
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--workspace",
            str(self.workdir / "workspace"),
        ]
        self._process = ManagedProcess(
            "triton", argv, self.workdir / "triton.log", env=triton_env()
        )
        self._process.start()

        def ready() -> bool:
            base = f"http://{self.http_url}"
            return (
                _get_ok(f"{base}/v2/health/ready")
                and all(_get_ok(f"{base}/v2/models/{m}/ready") for m in DEMO_MODELS)
                and self._warm_up()
            )

        self.startup_seconds = self._process.wait_ready(ready, self.start_timeout, interval=0.25)
        return self

    def _warm_up(self) -> bool:
        """One real inference per demo model: "ready" must mean it answers, not only that the
        model is loaded (PyTriton's proxy can still be wiring itself up at that point)."""
        import numpy as np
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.http_url)
        try:
            prompt = httpclient.InferInput("prompt", [1, 1], "BYTES")
            prompt.set_data_from_numpy(np.array([[b"warm up"]], dtype=np.object_))
            client.infer(ECHO_LM, [prompt])
            x = httpclient.InferInput("x", [1, 1], "FP32")
            x.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
            client.infer(DOUBLER, [x])
        finally:
            client.close()
        return True

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=20)

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def running(self) -> bool:
        return self._process is not None and self._process.running()
