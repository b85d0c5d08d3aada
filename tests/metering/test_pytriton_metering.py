"""In-model metering: a real PyTriton model authenticating forwarded headers into Kafka."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from deploy.local.process import ManagedProcess, free_port
from deploy.local.triton import triton_env
from metering.billing import ModelBilling
from metering.errors import AuthenticationFailed, BillingError, Forbidden
from metering.pytriton_metering import PythonBackendMeter, units_of
from tests.metering.harness import MeteringNode, consume_events, echo_body

SERVER = Path(__file__).with_name("pytriton_metered_server.py")


@pytest.fixture
def metered_triton(node: MeteringNode) -> Iterator[str]:
    """A PyTriton server whose echo-lm meters itself; yields its HTTP base URL."""
    ports = [free_port() for _ in range(3)]
    env = {**triton_env(), **node.environment()}
    # Short path: PyTriton binds Unix sockets in its workspace (107-byte limit).
    scratch = Path(tempfile.mkdtemp(prefix="rt-"))
    process = ManagedProcess(
        "pytriton-metered",
        [
            sys.executable,
            str(SERVER),
            "--http-port", str(ports[0]),
            "--grpc-port", str(ports[1]),
            "--metrics-port", str(ports[2]),
            "--workspace", str(scratch / "ws"),
            "--spool-dir", str(node.root / "spool-model"),
        ],
        node.root / "pytriton.log",
        env=env,
    )  # fmt: skip
    process.start()
    url = f"http://127.0.0.1:{ports[0]}"

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/v2/models/echo-lm/ready", timeout=2) as r:  # noqa: S310
            return int(r.status) == 200

    process.wait_ready(ready, timeout=120, interval=0.25)
    try:
        yield url
    finally:
        process.stop(timeout=30)
        shutil.rmtree(scratch, ignore_errors=True)


@pytest.mark.kafka
@pytest.mark.triton
def test_pytriton_model_meters_forwarded_api_keys(node: MeteringNode, metered_triton: str) -> None:
    with httpx.Client(base_url=metered_triton, timeout=30) as client:
        infer = "/v2/models/echo-lm/infer"
        ok = [
            client.post(
                infer,
                json=echo_body("a b c" if i % 2 else "a"),
                headers={"x-royalty-api-key": node.key(101 + i % 3)},
            )
            for i in range(9)
        ]
        missing = client.post(infer, json=echo_body("x"))
        forged = client.post(infer, json=echo_body("x"), headers={"x-royalty-api-key": "rk_a_b"})
        wrong_model = client.post(
            infer, json=echo_body("x"), headers={"x-royalty-api-key": node.key(201)}
        )
    for response in ok:
        assert response.status_code == 200, response.text
    for response, words in ((missing, "missing credentials"), (forged, "invalid")):
        assert response.status_code >= 400
        assert words in response.text
    assert wrong_model.status_code >= 400
    events = consume_events(node.bootstrap, node.topic, 9, timeout_s=60, settle_s=2.0)
    assert len(events) == 9
    assert sorted(e.data.license_id for e in events) == sorted(101 + i % 3 for i in range(9))
    assert sorted(e.data.units for e in events) == sorted(6 if i % 2 else 2 for i in range(9))
    for event in events:
        node.ring.verify(event)


def test_units_of_each_metric() -> None:
    inputs = {"x": np.zeros((4, 3), dtype=np.float32)}
    outputs = {"tokens": np.array([[3], [4]], dtype=np.int64), "y": np.zeros(2)}
    assert units_of(ModelBilling("m", 1, "requests"), inputs, outputs) == 1
    assert units_of(ModelBilling("m", 1, "batch_items"), inputs, outputs) == 4
    assert units_of(ModelBilling("m", 1, "tokens", "tokens"), inputs, outputs) == 7
    with pytest.raises(BillingError):
        units_of(ModelBilling("m", 1, "tokens", "missing"), inputs, outputs)
    with pytest.raises(BillingError):
        units_of(ModelBilling("m", 1, "tokens", "y"), inputs, outputs)


def test_python_backend_helper_answers_per_request(node: MeteringNode) -> None:
    """The Python-backend helper turns bad credentials into a per-request error value."""
    from metering.pytriton_metering import build_in_model_meter

    meter = build_in_model_meter(node.settings(), spool_dir=node.root / "spool-pb")
    try:
        helper = PythonBackendMeter(meter, "echo-lm")
        good = helper.authenticate(json.dumps({"x-royalty-api-key": node.key(102)}))
        assert not isinstance(good, Exception)
        assert good.license_id == 102
        assert isinstance(helper.authenticate(None), AuthenticationFailed)
        assert isinstance(helper.authenticate("{nope"), AuthenticationFailed)
        assert isinstance(helper.authenticate('"str"'), AuthenticationFailed)
        other = helper.authenticate(json.dumps({"x-royalty-api-key": node.key(201)}))
        assert isinstance(other, Forbidden)
        helper.record(good, {"prompt": np.zeros((1, 1))}, {"tokens": np.array([[5]])})
    finally:
        meter.producer.close()
    (event,) = consume_events(node.bootstrap, node.topic, 1, timeout_s=60)
    assert event.data.units == 5
    assert event.data.license_id == 102
