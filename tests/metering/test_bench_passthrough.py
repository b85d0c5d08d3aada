"""The metering benchmark's floor, `bench/passthrough_proxy.py`, in front of the real Triton:
it must answer exactly what Triton answers (bodies, status codes, the headers the gateway
passes), or the gateway's distance from it would measure something else than metering."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from deploy.local import TritonServer
from deploy.local.process import free_port

REPO = Path(__file__).resolve().parents[2]
ECHO = {"inputs": [{"name": "prompt", "shape": [1, 1], "datatype": "BYTES", "data": ["a b c"]}]}


def _proxy_module() -> ModuleType:
    path = REPO / "bench" / "passthrough_proxy.py"
    spec = importlib.util.spec_from_file_location("passthrough_proxy", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def passthrough(triton_server: TritonServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = _proxy_module().start(triton_server.http_url, port, tmp_path / "passthrough.log")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(30)


def test_answers_what_triton_answers(triton_server: TritonServer, passthrough: str) -> None:
    direct = f"http://{triton_server.http_url}"
    bad = {"inputs": [{"name": "nope", "shape": [1, 1], "datatype": "BYTES", "data": ["x"]}]}
    with httpx.Client(timeout=30) as client:
        for path, body in (
            ("/v2/models/echo-lm/infer", ECHO),
            ("/v2/models/echo-lm/infer", bad),
            ("/v2/models/ghost/infer", ECHO),
        ):
            want = client.post(direct + path, json=body)
            got = client.post(passthrough + path, json=body)
            assert got.status_code == want.status_code
            assert got.json() == want.json()
            assert got.headers["content-type"] == want.headers["content-type"]
        ok = client.post(passthrough + "/v2/models/echo-lm/infer", json=ECHO)
    assert ok.status_code == 200
    # No metering on this path: nothing of the gateway's in its answer.
    assert not any(name.startswith("x-royalty") for name in ok.headers)
