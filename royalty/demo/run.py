"""The demo run: real services, a scripted community, real inference traffic, indexed chain.

Today it runs the slice of the flow that exists end to end, on the real components:

    anvil ─ contracts deployed, 2 models, 5 licenses, 4 stakes ─▶ indexer ─▶ SQLite projections
    licensee ─ API key ─▶ metering gateway ─▶ Triton (CPU)        │
                              └─ signed usage events ─▶ Kafka `usage`
    Kafka `usage` ─▶ signature check against the key ring ─▶ SQLite usage_events + chDB

Pricing, the stream join, epochs and claims join this run as their components land.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import tritonclient.http as httpclient
import uvicorn
from rich.console import Console
from rich.table import Table

from deploy.local import Anvil, KafkaBroker, TritonServer
from deploy.local.process import free_port, port_open
from indexer.publisher import KafkaChainConfig, KafkaChainPublisher
from indexer.service import build_follower
from metering.auth import issue_key
from metering.errors import BadSignature
from metering.keyfiles import save_api_key_records, write_json_atomic
from metering.server import build_gateway
from metering.signing import KeyRing, SigningKey
from royalty.config import Settings, load_settings
from royalty.demo.world import DemoLicense, DemoWorld, build_world
from schemas import migrate
from schemas.engine import create_engine
from schemas.tables import UsageEventRow
from schemas.usage import UsageEvent, parse_usage_event
from settlement.chain import ChainClient

PROMPTS = (
    "the community owns this model",
    "royalties flow to every contributor who staked",
    "nothing lost nothing counted twice",
)


@dataclass
class DemoReport:
    """What the run did, for the closing summary."""

    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[str, float]] = field(default_factory=list)
    inferences: Counter[int] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    events: list[UsageEvent] = field(default_factory=list)
    bad_signatures: int = 0
    indexed: dict[str, int] = field(default_factory=dict)

    def step(self, name: str, since: float) -> None:
        self.steps.append((name, time.monotonic() - since))


def _write_config(workdir: Path, world: DemoWorld, rpc_url: str, kafka: str, triton: str) -> Path:
    """The demo's royalty.toml: what an operator would write for this deployment."""
    models = "\n".join(
        f'[metering.models.{m.name}]\nmodel_id = "{m.model_id}"\nmetric = "{m.billing_metric}"\n'
        + ('units_output = "tokens"\n' if m.billing_metric == "tokens" else "")
        for m in world.models
    )
    path = workdir / "royalty.toml"
    path.write_text(
        f'[engine]\ndata_dir = "{workdir}"\nbus = "kafka"\n\n'
        f'[chain]\nrpc_urls = ["{rpc_url}"]\nconfirmations = 0\n\n'
        f'[kafka]\nbootstrap_servers = "{kafka}"\n\n'
        f'[triton]\nhttp_url = "{triton}"\n\n'
        f'[metering]\nnode_id = "demo-node"\nport = {free_port()}\n'
        f'api_key_pepper = "demo-pepper-not-for-production"\n\n{models}'
    )
    return path


def _issue_api_keys(settings: Settings, world: DemoWorld) -> dict[int, str]:
    """One API key per license, stored hashed where the gateway reads them."""
    from metering.settings import pepper, resolve_paths

    paths = resolve_paths(settings)
    plain: dict[int, str] = {}
    records = []
    for lic in world.licenses:
        key, record = issue_key(pepper(settings.metering), lic.license_id, lic.model.model_id)
        plain[lic.license_id] = key
        records.append(record)
    save_api_key_records(paths.api_keys, records)
    signing = SigningKey.generate("ed25519", prefix=settings.metering.node_id)
    write_json_atomic(paths.signing_key, signing.to_json())
    ring = KeyRing([signing.verification_key()])
    write_json_atomic(paths.key_ring, ring.to_json(), mode=0o644)
    return plain


class _GatewayThread:
    """The metering gateway served by uvicorn in a background thread of this process."""

    def __init__(self, settings: Settings) -> None:
        app = build_gateway(settings)
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=settings.metering.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"127.0.0.1:{settings.metering.port}"

    def __enter__(self) -> _GatewayThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not port_open(int(self.url.rsplit(":", 1)[1])):
            if time.monotonic() > deadline:
                raise RuntimeError("the metering gateway did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _infer(gateway: str, lic: DemoLicense, api_key: str, prompt: str) -> None:
    client = httpclient.InferenceServerClient(gateway)
    headers = {"Authorization": f"Bearer {api_key}"}
    if lic.model.name == "echo-lm":
        x = httpclient.InferInput("prompt", [1, 1], "BYTES")
        x.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
    else:
        x = httpclient.InferInput("x", [3, 4], "FP32")
        x.set_data_from_numpy(np.ones((3, 4), dtype=np.float32))
    client.infer(lic.model.name, [x], headers=headers)
    client.close()


def _drive_traffic(
    gateway: str, world: DemoWorld, keys: dict[int, str], rounds: int, report: DemoReport
) -> None:
    for r in range(rounds):
        for lic in world.licenses:
            _infer(gateway, lic, keys[lic.license_id], PROMPTS[r % len(PROMPTS)])
            report.inferences[lic.license_id] += 1
    # Hostile callers: refused by the gateway, no inference, no event.
    echo = world.licenses[0]
    for label, key in (("no key", None), ("forged key", "rk_0000_forged"), ("wrong model", None)):
        client = httpclient.InferenceServerClient(gateway)
        x = httpclient.InferInput("prompt", [1, 1], "BYTES")
        x.set_data_from_numpy(np.array([[b"free ride"]], dtype=np.object_))
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        model = echo.model.name
        if label == "wrong model":  # carol's doubler license used on echo-lm
            headers = {"Authorization": f"Bearer {keys[world.licenses[2].license_id]}"}
        try:
            client.infer(model, [x], headers=headers)
        except Exception as exc:  # the refusal is what we show
            report.refused[f"{label}: {str(exc)[:40]}"] += 1
        client.close()


def _collect_usage(settings: Settings, expected: int, report: DemoReport) -> None:
    """Consume the `usage` topic, check every signature, store what is good."""
    from kafka import KafkaConsumer

    from metering.keyfiles import load_key_ring
    from metering.settings import resolve_paths

    ring = load_key_ring(resolve_paths(settings).key_ring)
    consumer = KafkaConsumer(
        settings.kafka.usage_topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
        group_id="demo-collector",
    )
    engine = create_engine(settings.database_url)
    with engine.begin() as conn:
        for message in consumer:
            event = parse_usage_event(message.value)
            try:
                ring.verify(event)
            except BadSignature:
                report.bad_signatures += 1
                continue
            report.events.append(event)
            conn.execute(
                sa.insert(UsageEventRow).values(
                    usage_id=event.id,
                    source=event.source,
                    event_time=event.unix_time,
                    model_id=event.data.model_id,
                    license_id=event.data.license_id,
                    units=event.data.units,
                    keyid=event.keyid,
                    payload=message.value.decode(),
                    received_at=datetime.now(UTC),
                )
            )
            if len(report.events) >= expected:
                break
    consumer.close()
    engine.dispose()


def _analytics(settings: Settings, report: DemoReport) -> list[tuple[Any, ...]]:
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=settings.analytics_url)
    db = settings.analytics.database
    client.command(f"CREATE DATABASE IF NOT EXISTS {db}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {db}.usage_raw (usage_id String, model_id UInt256, "
        "license_id UInt256, units UInt64, time DateTime('UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY usage_id"
    )
    rows = [
        [e.id, e.data.model_id, e.data.license_id, e.data.units, e.unix_time] for e in report.events
    ]
    client.insert(
        f"{db}.usage_raw",
        rows,
        column_names=["usage_id", "model_id", "license_id", "units", "time"],
    )
    return [
        tuple(row)
        for row in client.query(
            # `db` comes from validated settings, not from a caller.
            f"SELECT model_id, license_id, count() AS inferences, sum(units) AS units "  # noqa: S608
            f"FROM {db}.usage_raw FINAL GROUP BY model_id, license_id ORDER BY license_id"
        ).result_rows
    ]


def _load_settings_from(config: Path) -> Settings:
    """Settings from the demo's own config file (environment variables still win)."""
    previous = os.environ.get("ROYALTY_CONFIG_FILE")
    os.environ["ROYALTY_CONFIG_FILE"] = str(config)
    try:
        return load_settings()
    finally:
        if previous is None:
            del os.environ["ROYALTY_CONFIG_FILE"]
        else:
            os.environ["ROYALTY_CONFIG_FILE"] = previous


def run_demo(workdir: Path, rounds: int, console: Console) -> DemoReport:
    """Run the demo in `workdir` (wiped first); return what happened."""
    report = DemoReport()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    services: list[Any] = []
    try:
        t = time.monotonic()
        with console.status("starting anvil, Kafka and Triton on free loopback ports"):
            chain = Anvil(workdir / "anvil").start()
            services.append(chain)
            kafka = KafkaBroker(workdir / "kafka").start()
            services.append(kafka)
            triton = TritonServer(workdir / "triton").start()
            services.append(triton)
        report.step("services up (anvil, Kafka, Triton)", t)

        t = time.monotonic()
        with console.status("deploying contracts and scripting the community on-chain"):
            world = build_world(ChainClient.connect(chain.rpc_url))
        report.step("contracts deployed; models, licenses, stakes", t)

        config = _write_config(
            workdir, world, chain.rpc_url, kafka.bootstrap_servers, triton.http_url
        )
        settings = _load_settings_from(config)
        world.manifest.write(settings.manifest_path)

        t = time.monotonic()
        with console.status("indexing the chain into the database and Kafka `chain`"):
            migrate.upgrade(settings.database_url)
            engine = create_engine(settings.database_url)
            follower = build_follower(
                world.manifest,
                settings.chain.rpc_urls,
                engine,
                confirmations=0,
                publisher=KafkaChainPublisher(KafkaChainConfig(kafka.bootstrap_servers)),
            )
            follower.run(stop_at_head=True)
            with engine.connect() as conn:
                for table in (
                    "chain_models",
                    "chain_license_terms",
                    "chain_license_owners",
                    "chain_stakes",
                    "chain_policies",
                    "chain_events",
                ):
                    if sa.inspect(conn).has_table(table):
                        report.indexed[table] = conn.execute(
                            sa.text(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
                        ).scalar_one()
            engine.dispose()
        report.step("chain indexed", t)

        t = time.monotonic()
        keys = _issue_api_keys(settings, world)
        with (
            console.status("inference traffic through the metering gateway"),
            _GatewayThread(settings) as gateway,
        ):
            _drive_traffic(gateway.url, world, keys, rounds, report)
        report.step(f"{sum(report.inferences.values())} inferences metered", t)

        t = time.monotonic()
        with console.status("consuming `usage`, verifying signatures, storing"):
            _collect_usage(settings, sum(report.inferences.values()), report)
            analytics = _analytics(settings, report)
        report.step("usage verified and stored (SQLite + chDB)", t)
        _print_summary(console, world, report, analytics, settings)
        return report
    finally:
        for service in reversed(services):
            service.stop()


def _print_summary(
    console: Console,
    world: DemoWorld,
    report: DemoReport,
    analytics: list[tuple[Any, ...]],
    settings: Settings,
) -> None:
    steps = Table(title="Steps", show_header=True)
    steps.add_column("step")
    steps.add_column("seconds", justify="right")
    for name, seconds in report.steps:
        steps.add_row(name, f"{seconds:.1f}")
    console.print(steps)

    usage = Table(title="Metered usage per license (from the `usage` topic, signatures checked)")
    for col in ("license", "terms", "inferences", "events", "units"):
        usage.add_column(col)
    by_license = Counter(e.data.license_id for e in report.events)
    units: Counter[int] = Counter()
    for e in report.events:
        units[e.data.license_id] += e.data.units
    for lic in world.licenses:
        usage.add_row(
            str(lic.license_id),
            lic.label,
            str(report.inferences[lic.license_id]),
            str(by_license[lic.license_id]),
            str(units[lic.license_id]),
        )
    console.print(usage)

    refused = Table(title="Refused by the gateway (no inference, no event)")
    refused.add_column("caller")
    refused.add_column("count", justify="right")
    for label, count in report.refused.items():
        refused.add_row(label, str(count))
    console.print(refused)

    chdb = Table(title=f"chDB ({settings.analytics_url}): usage by model and license")
    for col in ("model", "license", "inferences", "units"):
        chdb.add_column(col)
    for row in analytics:
        chdb.add_row(*(str(v) for v in row))
    console.print(chdb)

    total = sum(report.inferences.values())
    ok = len(report.events) == total and report.bad_signatures == 0
    console.print(
        f"indexed: {json.dumps(report.indexed)}\n"
        f"inferences {total}, usage events {len(report.events)}, bad signatures "
        f"{report.bad_signatures}: [{'green' if ok else 'red'}]"
        f"{'every inference metered exactly once' if ok else 'MISMATCH'}[/]\n"
        f"contracts: {settings.manifest_path}\ndatabase: {settings.database_url}\n"
        "[yellow]Not in this run yet:[/] pricing and the stream join, epochs, Merkle commit and "
        "claims (they join the demo as their components land)."
    )
    if not ok:
        raise SystemExit(1)
