"""Triton smoke: real inferences over HTTP and gRPC with tritonclient, and its metrics."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from deploy.local import TritonServer

pytestmark = pytest.mark.triton


def test_http_inference(triton_server: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    assert client.is_server_ready()
    prompt = httpclient.InferInput("prompt", [1, 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[b"hello royalty world"]], dtype=np.object_))
    result = client.infer("echo-lm", [prompt])
    assert result.as_numpy("completion")[0][0] == b"world royalty hello"
    assert int(result.as_numpy("tokens")[0][0]) == 6


def test_grpc_inference(triton_server: TritonServer) -> None:
    client = grpcclient.InferenceServerClient(triton_server.grpc_url)
    assert client.is_model_ready("doubler")
    x = grpcclient.InferInput("x", [2, 3], "FP32")
    x.set_data_from_numpy(np.arange(6, dtype=np.float32).reshape(2, 3))
    result = client.infer("doubler", [x])
    np.testing.assert_array_equal(
        result.as_numpy("y"), np.arange(6, dtype=np.float32).reshape(2, 3) * 2
    )


def test_unknown_model_is_an_error(triton_server: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    x = httpclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.zeros((1, 1), dtype=np.float32))
    with pytest.raises(Exception, match=r"unknown model|not found"):
        client.infer("no-such-model", [x])


def test_metrics_count_inferences(triton_server: TritonServer) -> None:
    client = httpclient.InferenceServerClient(triton_server.http_url)
    x = httpclient.InferInput("x", [1, 1], "FP32")
    x.set_data_from_numpy(np.ones((1, 1), dtype=np.float32))
    client.infer("doubler", [x])
    with urllib.request.urlopen(triton_server.metrics_url, timeout=5) as resp:  # noqa: S310
        text = resp.read().decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("nv_inference_request_success{")]
    assert any('model="doubler"' in ln and float(ln.rsplit(" ", 1)[1]) >= 1 for ln in lines)


@pytest.mark.slow
def test_deep_working_directory_still_serves(tmp_path: Path) -> None:
    """Unix socket paths are limited to 107 bytes: PyTriton's model sockets must not live
    under a deep working directory, or every inference fails with "Event loop is closed"."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = TritonServer(deep).start()  # readiness includes one inference per model
    try:
        client = httpclient.InferenceServerClient(server.http_url)
        x = httpclient.InferInput("x", [1, 2], "FP32")
        x.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
        np.testing.assert_array_equal(client.infer("doubler", [x]).as_numpy("y"), [[2.0, 2.0]])
    finally:
        server.stop()
