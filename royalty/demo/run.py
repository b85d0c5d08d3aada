"""The demo run: real services, a scripted community, real inference traffic, indexed chain.

Today it runs the slice of the flow that exists end to end, on the real components:

    anvil ─ contracts deployed, 2 models, 5 licenses, 4 stakes ─▶ indexer ─▶ SQLite projections
    licensee ─ API key ─▶ metering gateway ─▶ Triton (CPU)        │
                              └─ signed usage events ─▶ Kafka `usage`
    Kafka `usage` ─▶ embedded stream join (signatures, dedupe, finalized chain state as of
                     each event's time) ─▶ SQLite accruals + dead letters; usage into chDB

Epochs, the Merkle commit and claims join this run as their components land.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
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
from royalty.demo.world import (
    DemoLicense,
    DemoWorld,
    PolicyVote,
    build_world,
    execute_policy_vote,
    queue_policy_vote,
)
from schemas import migrate
from schemas.engine import create_engine
from schemas.errors import MalformedEvent
from schemas.usage import UsageEvent, parse_usage_event
from settlement.chain import ChainClient, Split

#: The split governance votes for echo-lm, applied mid-traffic (was 2000 / 1000 / 7000).
NEW_ECHO_SPLIT = Split(1_500, 500, 8_000)

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
    injected: list[str] = field(default_factory=list)
    indexed: dict[str, int] = field(default_factory=dict)
    fees_e6: dict[int, int] = field(default_factory=dict)
    billed: Counter[int] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    held: int = 0
    policy_changed_at: int | None = None

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


def _pin_next_block_to_now(chain: Anvil, world: DemoWorld) -> None:
    """Give the next block the wall-clock time, which usage events are timed by."""
    now = int(time.time())
    if now > world.client.latest_timestamp():
        chain.rpc("evm_setNextBlockTimestamp", [now])


def _drive_traffic(
    gateway: str,
    chain: Anvil,
    world: DemoWorld,
    keys: dict[int, str],
    rounds: int,
    report: DemoReport,
    vote: PolicyVote | None = None,
) -> None:
    revoked = world.licenses[4]
    for r in range(rounds):
        if r == rounds // 2:
            # Mid-traffic, governance's queued vote takes effect (a new split for echo-lm) and
            # the operator revokes bob's doubler license. The gateway still serves that license
            # (its API key is valid); the join bills only the usage before the revocation, and
            # settlement splits echo-lm's usage before and after the vote differently.
            time.sleep(1.0)  # usage before and after the changes in different seconds
            _pin_next_block_to_now(chain, world)
            if vote is not None:
                execute_policy_vote(world, vote)
                report.policy_changed_at = world.client.latest_timestamp()
            world.system.license_nft.revoke(revoked.model.operator, revoked.license_id)
            time.sleep(1.0)
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


def _inject_hostile_events(settings: Settings, report: DemoReport) -> None:
    """What a forged metering node or a broken producer could put on `usage` directly."""
    from kafka import KafkaConsumer, KafkaProducer

    from metering.signing import Signer
    from schemas.usage import encode_usage_event, signing_payload

    topic = settings.kafka.usage_topic
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=5_000,
        max_poll_records=1,
    )
    genuine = parse_usage_event(next(iter(consumer)).value)
    consumer.close()
    # A forger claims the genuine node's key id but can only sign with a key of its own.
    forger = Signer(SigningKey.generate("ed25519", prefix="forger"))
    claimed = genuine.model_copy(update={"id": f"{genuine.id}-forged", "signature": None})
    forged = claimed.with_signature("0x" + forger.sign_bytes(signing_payload(claimed)).hex())
    producer = KafkaProducer(bootstrap_servers=settings.kafka.bootstrap_servers, acks="all")
    for label, value in (
        ("forged signature", encode_usage_event(forged)),
        ("redelivered duplicate", encode_usage_event(genuine)),
        ("malformed JSON", b'{"specversion": "1.0", "id": '),
    ):
        producer.send(topic, key=str(genuine.data.model_id).encode(), value=value)
        report.injected.append(label)
    producer.flush(30)
    producer.close()


def _read_usage(settings: Settings, expected: int, report: DemoReport) -> list[bytes]:
    """Every message of the `usage` topic, in order; count good and bad signatures."""
    from kafka import KafkaConsumer, TopicPartition

    from metering.keyfiles import load_key_ring
    from metering.settings import resolve_paths

    ring = load_key_ring(resolve_paths(settings).key_ring)
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_servers, consumer_timeout_ms=5_000
    )
    partitions = [
        TopicPartition(settings.kafka.usage_topic, p)
        for p in sorted(consumer.partitions_for_topic(settings.kafka.usage_topic) or ())
    ]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    raw = [message.value for message in consumer]
    consumer.close()
    seen: set[str] = set()
    for value in raw:
        try:
            event = parse_usage_event(value)
            ring.verify(event)
        except (BadSignature, MalformedEvent):
            report.bad_signatures += 1
            continue
        if event.id not in seen:
            seen.add(event.id)
            report.events.append(event)
    if len(report.events) < expected:
        raise RuntimeError(f"only {len(report.events)} of {expected} usage events reached Kafka")
    return raw


def _join(settings: Settings, world: DemoWorld, raw: list[bytes], report: DemoReport) -> None:
    """The embedded stream join over the indexed, finalized chain state."""
    from metering.keyfiles import load_key_ring
    from metering.settings import resolve_paths
    from schemas.tables import AccrualRow, DeadLetterRow
    from stream.embedded import EmbeddedJoinRunner, numbered
    from stream.epochs import EpochClock

    engine = create_engine(settings.database_url)
    runner = EmbeddedJoinRunner(
        engine,
        world.manifest.chain_id,
        load_key_ring(resolve_paths(settings).key_ring),
        EpochClock(settings.epochs.length_s, settings.epochs.genesis_s),
    )
    runner.process(numbered(raw))
    report.held = runner.held_count
    with engine.connect() as conn:
        for license_id, fee in conn.execute(sa.select(AccrualRow.license_id, AccrualRow.fee_e6)):
            report.fees_e6[license_id] = report.fees_e6.get(license_id, 0) + fee
            report.billed[license_id] += 1
        for (reason,) in conn.execute(sa.select(DeadLetterRow.reason)):
            report.rejects[str(reason)] += 1
    engine.dispose()


def _analytics(settings: Settings, report: DemoReport) -> list[tuple[Any, ...]]:
    """Usage into chDB through the stream's ClickHouse sink, then an analyst's query."""
    import clickhouse_connect

    from stream.sinks.clickhouse_sink import ClickHouseSink

    client = clickhouse_connect.get_client(dsn=settings.analytics_url)
    sink = ClickHouseSink(client, settings.analytics.database)
    sink.ensure_schema()
    sink.write(report.events, [], [])
    db = settings.analytics.database
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
            # The chain's clock starts in the past, so the world's burst of blocks stays behind
            # the wall clock and chain events can then be pinned to wall-clock times.
            chain = Anvil(workdir / "anvil", genesis_timestamp=int(time.time()) - 600).start()
            services.append(chain)
            kafka = KafkaBroker(workdir / "kafka").start()
            services.append(kafka)
            triton = TritonServer(workdir / "triton").start()
            services.append(triton)
        report.step("services up (anvil, Kafka, Triton)", t)

        t = time.monotonic()
        with console.status("deploying contracts and scripting the community on-chain"):
            world = build_world(ChainClient.connect(chain.rpc_url))
            vote = queue_policy_vote(world, chain, world.models[0], NEW_ECHO_SPLIT)
        report.step("contracts deployed; models, licenses, stakes; a policy vote queued", t)

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
        report.step("chain indexed", t)

        t = time.monotonic()
        keys = _issue_api_keys(settings, world)
        # Carol's second license must be expired before the traffic starts.
        expiring = world.licenses[3].expires_at
        while time.time() < expiring + 1:
            time.sleep(0.2)
        with (
            console.status("inference traffic through the metering gateway"),
            _GatewayThread(settings) as gateway,
        ):
            _drive_traffic(gateway.url, chain, world, keys, rounds, report, vote)
        report.step(f"{sum(report.inferences.values())} inferences metered", t)

        t = time.monotonic()
        with console.status("hostile messages straight onto `usage`; the chain moves on"):
            _inject_hostile_events(settings, report)
            # A block after the last usage, indexed and finalized: the join may now decide
            # every event (it holds those the finalized chain has not passed yet).
            chain.rpc("evm_setNextBlockTimestamp", [int(time.time()) + 2])
            chain.rpc("evm_mine")
            follower.run(stop_at_head=True)
        report.step("hostile messages injected, chain finalized past the traffic", t)

        t = time.monotonic()
        with console.status("stream join: usage x finalized chain state -> accruals"):
            raw = _read_usage(settings, sum(report.inferences.values()), report)
            _join(settings, world, raw, report)
            analytics = _analytics(settings, report)
        report.step("joined, priced and stored (SQLite + chDB)", t)
        _print_summary(console, world, report, analytics, settings)
        return report
    finally:
        for service in reversed(services):
            service.stop()


def _dusd(amount_e6: int) -> str:
    """10^-6 base units of the 6-decimal demo token as an exact decimal string of dUSD."""
    whole, frac = divmod(amount_e6, 10**12)
    return f"{whole}.{frac:012d}".rstrip("0").rstrip(".")


def _print_summary(
    console: Console,
    world: DemoWorld,
    report: DemoReport,
    analytics: list[tuple[Any, ...]],
    settings: Settings,
) -> None:
    steps = Table(title="Steps")
    steps.add_column("step")
    steps.add_column("seconds", justify="right")
    for name, seconds in report.steps:
        steps.add_row(name, f"{seconds:.1f}")
    console.print(steps)

    usage = Table(title="Per license: metered at the gateway, billed by the stream join")
    for col in ("license", "terms", "inferences", "events", "units", "billed", "fees (dUSD)"):
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
            str(report.billed[lic.license_id]),
            _dusd(report.fees_e6.get(lic.license_id, 0)),
        )
    console.print(usage)

    rejected = Table(title="Not billed, with the reason (dead letters)")
    rejected.add_column("reason")
    rejected.add_column("count", justify="right")
    for reason, count in sorted(report.rejects.items()):
        rejected.add_row(reason, str(count))
    console.print(rejected)

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
    decided = sum(report.billed.values()) + report.rejects.total() - len(report.injected)
    ok = (
        len(report.events) == total
        and decided == total
        and report.held == 0
        and report.rejects["bad_signature"] >= 1
        and report.rejects["duplicate"] >= 1
        and report.rejects["malformed"] >= 1
    )
    verdict = (
        "[green]every inference metered once and decided once: billed or rejected with a reason"
        if ok
        else "[red]MISMATCH between inferences, events and decisions"
    )
    console.print(
        f"indexed: {json.dumps(report.indexed)}\n"
        f"inferences {total}, usage events {len(report.events)}, injected "
        f"{len(report.injected)} ({', '.join(report.injected)}), billed "
        f"{sum(report.billed.values())}, rejected {report.rejects.total()}, held {report.held}\n"
        f"{verdict}[/]\n"
        f"contracts: {settings.manifest_path}\ndatabase: {settings.database_url}\n"
        "[yellow]Not in this run yet:[/] epochs closing, the Merkle distribution and its on-chain "
        "commit, and claims through the API (they join the demo as their components land)."
    )
    if not ok:
        raise SystemExit(1)
