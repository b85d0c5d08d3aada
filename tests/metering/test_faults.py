"""Fault injection on the real services: Kafka stopped mid-traffic, the gateway SIGKILLed.

Whatever fails, every acknowledged inference (HTTP 200 with a usage id) ends up in the usage
topic exactly as acknowledged; a replay may add duplicates, never lose one.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from deploy.local import KafkaBroker
from tests.metering.harness import (
    GatewayProcess,
    MeteringNode,
    consume_events,
    echo_body,
    running_gateway,
)

pytestmark = [pytest.mark.kafka, pytest.mark.triton, pytest.mark.slow]


async def _traffic(url: str, key: str, count: int, concurrency: int = 8) -> list[httpx.Response]:
    """`count` inferences with bounded concurrency; transport errors are returned as None."""
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:

        async def one(i: int) -> httpx.Response:
            async with semaphore:
                return await client.post(
                    "/v2/models/echo-lm/infer",
                    json=echo_body(f"request {i} " + "w " * (i % 4)),
                    headers={"x-api-key": key},
                )

        return list(await asyncio.gather(*(one(i) for i in range(count))))


def _acked_ids(responses: list[httpx.Response]) -> list[str]:
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses[:3]]
    return [r.headers["x-royalty-usage-id"] for r in responses]


def _metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"metric {name} not exported")


@pytest.mark.parametrize("outage", ["stop", "kill"])
def test_kafka_stopped_during_traffic_loses_nothing(
    node: MeteringNode, kafka_broker: KafkaBroker, outage: str
) -> None:
    """A clean broker stop, or a SIGKILL (after which kafka-python's idempotent producer can
    time out every batch until it is replaced): the spool drains once the broker is back."""
    key = node.key(101)
    with running_gateway(node) as gw:
        before = _acked_ids(asyncio.run(_traffic(gw.url, key, 40)))
        if outage == "stop":
            kafka_broker.stop()
        else:
            kafka_broker.kill()
        try:
            # Kafka is down: these are acknowledged once fsync'd in the spool.
            during = _acked_ids(asyncio.run(_traffic(gw.url, key, 60)))
            assert _metric(gw.url, "royalty_metering_spooling") == 1.0
            assert _metric(gw.url, "royalty_metering_spool_depth") > 0
        finally:
            kafka_broker.start()
        after = _acked_ids(asyncio.run(_traffic(gw.url, key, 40)))
        deadline = time.monotonic() + 60
        while _metric(gw.url, "royalty_metering_spool_depth") > 0:
            assert time.monotonic() < deadline, "spool did not drain after Kafka came back"
            time.sleep(0.2)
        assert _metric(gw.url, "royalty_metering_kafka_errors_total") > 0
    acked = before + during + after
    assert len(set(acked)) == 140
    events = consume_events(node.bootstrap, node.topic, 140, timeout_s=60)
    ids = {e.id for e in events}
    assert ids == set(acked), f"missing: {sorted(set(acked) - ids)[:5]}"
    for event in events:
        node.ring.verify(event)


def test_gateway_killed_while_spooling_loses_nothing(
    node: MeteringNode, kafka_broker: KafkaBroker
) -> None:
    key = node.key(102)
    kafka_broker.stop()
    gateway = GatewayProcess(node)
    try:
        gateway.start()
        acked = _acked_ids(asyncio.run(_traffic(gateway.url, key, 50)))
        assert _metric(gateway.url, "royalty_metering_spool_depth") == 50
        gateway.kill()  # SIGKILL: no shutdown hook runs
    finally:
        gateway.stop()
        kafka_broker.start()
    restarted = GatewayProcess(node, port=gateway.port).start()
    try:
        deadline = time.monotonic() + 60
        while _metric(restarted.url, "royalty_metering_spool_depth") > 0:
            assert time.monotonic() < deadline, "spool not replayed after restart"
            time.sleep(0.2)
    finally:
        restarted.stop()
    events = consume_events(node.bootstrap, node.topic, 50, timeout_s=60)
    assert {e.id for e in events} == set(acked)


def test_gateway_killed_during_traffic_loses_no_acknowledged_event(
    node: MeteringNode,
) -> None:
    """SIGKILL with requests in flight and Kafka up: whatever was acknowledged is in Kafka
    after a restart (in-flight requests that got no answer may or may not be)."""
    node.overrides["delivery"] = "spool"  # write-ahead: the spool holds events in flight too
    gateway = GatewayProcess(node).start()
    key = node.key(103)
    acked: list[str] = []

    async def run() -> None:
        enough = asyncio.Event()
        semaphore = asyncio.Semaphore(8)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:

            async def one(i: int) -> None:
                async with semaphore:
                    try:
                        r = await client.post(
                            "/v2/models/echo-lm/infer",
                            json=echo_body(f"k {i}"),
                            headers={"x-api-key": key},
                        )
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200:
                        acked.append(r.headers["x-royalty-usage-id"])
                        if len(acked) >= 60:
                            enough.set()

            async def killer() -> None:
                await enough.wait()
                gateway.kill()

            await asyncio.gather(killer(), *(one(i) for i in range(400)))

    try:
        asyncio.run(run())
    finally:
        gateway.stop()
    assert 60 <= len(acked) < 400
    restarted = GatewayProcess(node, port=gateway.port).start()
    try:
        events = consume_events(node.bootstrap, node.topic, len(acked), timeout_s=60)
    finally:
        restarted.stop()
    ids = {e.id for e in events}
    assert set(acked) <= ids, f"lost acknowledged events: {sorted(set(acked) - ids)[:5]}"
