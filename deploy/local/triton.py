"""A real Triton Inference Server (CPU) from `nvidia-pytriton`, serving the demo models."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local.errors import ServiceStartError
from deploy.local.process import ManagedProcess, free_port
from deploy.local.tools import REPO_ROOT
from deploy.local.triton_models import DOUBLER, ECHO_LM

DEMO_MODELS = (ECHO_LM, DOUBLER)


class BrokenModelError(ServiceStartError):
    """Triton started but a model's request loop is dead (every inference fails with "Event
    loop is closed"); waiting cannot mend it, so readiness fails at once."""


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
    _workspace: Path | None = None
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
        """Start Triton and wait until every demo model answers a real inference."""
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
            str(self._new_workspace()),
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

    def _new_workspace(self) -> Path:
        """A fresh, short PyTriton workspace.

        PyTriton binds its model sockets inside the workspace (`ipc://<workspace>/<model>_0_0-
        server.sock`), and a Unix socket path longer than 107 bytes cannot be bound: under a
        deep `workdir` (pytest's temp tree) the model's request loop then dies at start and
        every inference fails with "Event loop is closed". PyTriton also refuses an existing
        workspace, hence a new one per start.
        """
        self._drop_workspace()
        self._workspace = Path(tempfile.mkdtemp(prefix="rt-"))
        shutil.rmtree(self._workspace)  # PyTriton creates it itself
        return self._workspace

    def _drop_workspace(self) -> None:
        if self._workspace is not None:
            shutil.rmtree(self._workspace, ignore_errors=True)
            self._workspace = None

    def _warm_up(self) -> bool:
        """One real inference per demo model: "ready" must mean it answers, not only that the
        model is loaded (PyTriton's proxy can still be wiring itself up at that point)."""
        import numpy as np
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(self.http_url)
        try:
            prompt = httpclient.InferInput("prompt", [1, 1], "BYTES")
            prompt.set_data_from_numpy(np.array([[b"warm up"]], dtype=np.object_))
            x = httpclient.InferInput("x", [1, 1], "FP32")
            x.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
            for model, inputs in ((ECHO_LM, [prompt]), (DOUBLER, [x])):
                try:
                    client.infer(model, inputs)
                except Exception as exc:
                    if "Event loop is closed" in str(exc):
                        raise BrokenModelError(f"{model} came up broken: {exc}") from exc
                    raise
        finally:
            client.close()
        return True

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop(timeout=20)
        self._drop_workspace()

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def restart(self) -> None:
        """Stop and start again on the same ports (clients keep their URLs)."""
        self.stop()
        self.start()

    def running(self) -> bool:
        return self._process is not None and self._process.running()
