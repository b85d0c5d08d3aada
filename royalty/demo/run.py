"""The demo run: the whole flow on the real components, from inference to a claimed payout.

anvil ─ contracts, 2 models, 5 licenses, 4 stakes, a policy vote ─▶ indexer ─▶ SQLite
licensee ─ API key ─▶ metering gateway ─▶ Triton (CPU)        │
                          └─ signed usage events ─▶ Kafka `usage`
Kafka `usage` ─▶ stream join (embedded, or faust workers with `--kafka`): signatures,
                 dedupe, finalized chain state as of each event's time ─▶ accruals
settler ─▶ epochs closed, split, Merkle roots committed and funded on-chain ─▶ verified
contributor ─▶ API: one claim-all transaction ─▶ signed with its wallet ─▶ tokens
analytics tailer ─▶ chDB: usage, accruals, rejects, epochs, payouts
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
import tritonclient.http as httpclient
import uvicorn
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
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
from royalty.demo.payout import (
    ApiServer,
    PayoutReport,
    claim_through_api,
    collect,
    fund_settler,
    settle_epochs,
)
from royalty.demo.world import (
    SETTLER,
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
from schemas.tables import metadata
from schemas.usage import UsageEvent, parse_usage_event
from settlement.chain import ChainClient, Split, dev_account

#: Epoch length of the demo: the traffic spans a few epochs.
EPOCH_S = 10

#: The contributor who claims through the API (staked on both models).
CLAIMANT = 10

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
    payout: PayoutReport = field(default_factory=PayoutReport)

    def step(self, name: str, since: float) -> None:
        self.steps.append((name, time.monotonic() - since))


def _write_config(
    workdir: Path, world: DemoWorld, rpc_url: str, kafka: str, triton: str, genesis: int
) -> Path:
    """The demo's royalty.toml: what an operator would write for this deployment."""
    models = "\n".join(
        f'[metering.models.{m.name}]\nmodel_id = "{m.model_id}"\nmetric = "{m.billing_metric}"\n'
        + ('units_output = "tokens"\n' if m.billing_metric == "tokens" else "")
        for m in world.models
    )
    path = workdir / "royalty.toml"
    path.write_text(
        f'[engine]\ndata_dir = "{workdir}"\nbus = "kafka"\n\n'
        f'[chain]\nrpc_urls = ["{rpc_url}"]\nconfirmations = 0\n'
        # anvil's public development key of the settler role: a local chain only.
        f'settler_private_key = "0x{bytes(dev_account(SETTLER).key).hex()}"\n\n'
        f'[kafka]\nbootstrap_servers = "{kafka}"\n\n'
        f'[triton]\nhttp_url = "{triton}"\n\n'
        f"[epochs]\nlength_s = {EPOCH_S}\ngenesis_s = {genesis}\nallowed_lateness_s = 1\n"
        "wall_clock_watermark = true\n\n"
        f'[api]\nkey_pepper = "demo-api-pepper-not-for-production"\n\n'
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


@dataclass(frozen=True)
class TrafficPlan:
    """How much traffic: `rounds` of one inference per license (times `scale`), or rounds
    until `duration_s` has passed (a soak run)."""

    rounds: int = 4
    duration_s: float | None = None
    scale: int = 1

    @property
    def expected_rounds(self) -> int | None:
        return None if self.duration_s is not None else self.rounds


def _drive_traffic(
    gateway: str,
    chain: Anvil,
    world: DemoWorld,
    keys: dict[int, str],
    plan: TrafficPlan,
    report: DemoReport,
    vote: PolicyVote | None = None,
    tick: Callable[[], None] = lambda: None,
) -> None:
    revoked = world.licenses[4]
    started = time.monotonic()
    changed = False
    r = 0
    while True:
        elapsed = time.monotonic() - started
        if plan.duration_s is None:
            if r >= plan.rounds:
                break
            midpoint = r == plan.rounds // 2
        else:
            if elapsed >= plan.duration_s:
                break
            midpoint = elapsed >= plan.duration_s / 2
        if midpoint and not changed:
            changed = True
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
            for _ in range(plan.scale):
                _infer(gateway, lic, keys[lic.license_id], PROMPTS[r % len(PROMPTS)])
                report.inferences[lic.license_id] += 1
                tick()
        r += 1
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


def _join_embedded(settings: Settings, world: DemoWorld, raw: list[bytes]) -> int:
    """The embedded stream join over the indexed, finalized chain state; events held."""
    from metering.keyfiles import load_key_ring
    from metering.settings import resolve_paths
    from stream.embedded import EmbeddedJoinRunner, numbered
    from stream.epochs import EpochClock

    engine = create_engine(settings.database_url)
    try:
        runner = EmbeddedJoinRunner(
            engine,
            world.manifest.chain_id,
            load_key_ring(resolve_paths(settings).key_ring),
            EpochClock(settings.epochs.length_s, settings.epochs.genesis_s),
        )
        runner.process(numbered(raw))
        return runner.held_count
    finally:
        engine.dispose()


def _decided(settings: Settings) -> int:
    """Usage messages decided so far: accruals plus dead letters."""
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return sum(
                conn.execute(
                    sa.select(sa.func.count()).select_from(metadata.tables[t])
                ).scalar_one()
                for t in ("accruals", "dead_letters")
            )
    finally:
        engine.dispose()


def _join_with_faust(
    settings: Settings, world: DemoWorld, raw: list[bytes], workers: int, workdir: Path
) -> int:
    """The same join on the Kafka path: faust workers in one consumer group, as deployed."""
    from metering.settings import resolve_paths

    k = settings.kafka
    procs = []
    for i in range(workers):
        args = [
            sys.executable, "-m", "stream.faust_app",
            "--bootstrap-servers", k.bootstrap_servers, "--db-url", settings.database_url,
            "--chain-id", str(world.manifest.chain_id),
            "--key-ring", str(resolve_paths(settings).key_ring),
            "--epoch-length", str(settings.epochs.length_s),
            "--epoch-genesis", str(settings.epochs.genesis_s),
            "--usage-topic", k.usage_topic, "--chain-topic", k.chain_topic,
            "--group-id", "demo-workers", "--instance-id", f"demo-worker-{i}",
        ]  # fmt: skip
        log = (workdir / f"faust-worker-{i}.log").open("ab")
        procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
    try:
        deadline = time.monotonic() + 180
        while _decided(settings) < len(raw):
            if time.monotonic() > deadline:
                raise RuntimeError("the faust workers did not decide every usage message")
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a faust worker exited; see {workdir}/faust-worker-*.log")
            time.sleep(0.5)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


def _tally(settings: Settings, report: DemoReport) -> None:
    """Billed usage and fees per license, rejects per reason, from the database."""
    from schemas.tables import AccrualRow, DeadLetterRow

    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            for license_id, fee in conn.execute(
                sa.select(AccrualRow.license_id, AccrualRow.fee_e6)
            ):
                report.fees_e6[license_id] = report.fees_e6.get(license_id, 0) + fee
                report.billed[license_id] += 1
            for (reason,) in conn.execute(sa.select(DeadLetterRow.reason)):
                report.rejects[str(reason)] += 1
    finally:
        engine.dispose()


def _analytics(settings: Settings) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The settlement database tailed into chDB, then two of an analyst's queries."""
    import clickhouse_connect

    from stream.sinks.clickhouse_tailer import AnalyticsTailer

    client = clickhouse_connect.get_client(dsn=settings.analytics_url)
    engine = create_engine(settings.database_url)
    try:
        tailer = AnalyticsTailer(engine, client, settings.analytics.database)
        tailer.ensure_schema()
        tailer.sync()
    finally:
        engine.dispose()
    db = settings.analytics.database
    # `db` comes from validated settings, not from a caller.
    usage = client.query(
        f"SELECT model_id, license_id, count() AS inferences, sum(units) AS units "  # noqa: S608
        f"FROM {db}.usage_raw FINAL GROUP BY model_id, license_id ORDER BY license_id"
    ).result_rows
    payouts = client.query(
        f"SELECT account, sum(amount) AS paid, count() AS epochs "  # noqa: S608
        f"FROM {db}.payouts FINAL GROUP BY account ORDER BY paid DESC, account"
    ).result_rows
    return [tuple(r) for r in usage], [tuple(r) for r in payouts]


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


@dataclass(frozen=True)
class DemoOptions:
    """What `royalty demo` runs: how much traffic, which join engine, whether to keep serving."""

    traffic: TrafficPlan = field(default_factory=TrafficPlan)
    kafka: bool = False
    """Join on the Kafka path with faust workers instead of the embedded runner."""
    workers: int = 2
    serve: bool = False
    """Leave the API (and the chain) running after the summary, until Ctrl-C."""


def _progress(console: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def run_demo(
    workdir: Path, rounds: int, console: Console, options: DemoOptions | None = None
) -> DemoReport:
    """Run the demo in `workdir` (wiped first); return what happened."""
    options = options or DemoOptions(traffic=TrafficPlan(rounds=rounds))
    report = DemoReport()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    services: list[Any] = []
    api: ApiServer | None = None
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
            fund_settler(world, dev_account(SETTLER))
        report.step("contracts deployed; models, licenses, stakes; a policy vote queued", t)

        genesis = int(time.time()) // EPOCH_S * EPOCH_S
        config = _write_config(
            workdir, world, chain.rpc_url, kafka.bootstrap_servers, triton.http_url, genesis
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
        plan = options.traffic
        per_round = len(world.licenses) * plan.scale
        total = None if plan.expected_rounds is None else plan.expected_rounds * per_round
        with _progress(console) as progress, _GatewayThread(settings) as gateway:
            task = progress.add_task("inference through the metering gateway", total=total)

            def tick() -> None:
                done = sum(report.inferences.values())
                progress.update(
                    task,
                    completed=done,
                    description=f"inference through the metering gateway ({done} metered)",
                )

            _drive_traffic(gateway.url, chain, world, keys, plan, report, vote, tick)
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
        engine_name = (
            f"{options.workers} faust workers (Kafka)" if options.kafka else "embedded runner"
        )
        with console.status(f"stream join ({engine_name}): usage x finalized chain -> accruals"):
            raw = _read_usage(settings, sum(report.inferences.values()), report)
            if options.kafka:
                report.held = _join_with_faust(settings, world, raw, options.workers, workdir)
            else:
                report.held = _join_embedded(settings, world, raw)
            _tally(settings, report)
        report.step(f"joined, priced and stored ({engine_name})", t)

        t = time.monotonic()
        with _progress(console) as progress:
            task = progress.add_task("settling", total=None)

            def on_settle(what: str, done: int, of: int) -> None:
                progress.update(task, description=what, completed=done, total=of)

            settle_epochs(settings, world, chain, follower, on_settle)
        report.step("epochs closed, committed on-chain, claimable", t)

        t = time.monotonic()
        with console.status("a contributor claims through the API with its wallet"):
            api = ApiServer(settings).start()
            claim_through_api(api, world, dev_account(CLAIMANT), follower, report.payout)
            collect(settings, world, report.payout)
        report.step("claimed through the API; every epoch verified", t)

        t = time.monotonic()
        with console.status("analytics: the database tailed into chDB"):
            usage_rows, payout_rows = _analytics(settings)
        report.step("analytics in chDB", t)
        follower.engine.dispose()
        _print_summary(console, world, report, usage_rows, payout_rows, settings)
        if options.serve:
            console.print(
                f"\n[bold]The API keeps running:[/] {api.url}/docs (OpenAPI: {api.url}"
                f"/openapi.json), the chain at {chain.rpc_url}. Try\n"
                f"  curl {api.url}/v1/epochs\n"
                f"  curl {api.url}/v1/contributors/{dev_account(CLAIMANT).address}/royalties\n"
                f"  royalty status --db-url {settings.database_url} --no-live\n"
                "Ctrl-C stops everything."
            )
            with contextlib.suppress(KeyboardInterrupt):
                while True:
                    time.sleep(1)
        return report
    finally:
        if api is not None:
            api.stop()
        for service in reversed(services):
            service.stop()


def _dusd(amount_e6: int) -> str:
    """10^-6 base units of the 6-decimal demo token as an exact decimal string of dUSD."""
    whole, frac = divmod(amount_e6, 10**12)
    return f"{whole}.{frac:012d}".rstrip("0").rstrip(".")


def _roles(world: DemoWorld) -> dict[str, str]:
    """Who each address is, for the payout table."""
    from royalty.demo.world import CONTRIBUTORS, TREASURY

    names = {dev_account(TREASURY).address.lower(): "treasury"}
    for model in world.models:
        names[model.operator.address.lower()] = f"operator of {model.name}"
    for index in CONTRIBUTORS:
        account = dev_account(index).address.lower()
        names[account] = names.get(account, f"contributor #{index}")
    return names


def _analytics_hints(settings: Settings) -> str:
    """Queries to try against the analytics database (names from validated settings)."""
    db = settings.analytics.database
    queries = [
        "SELECT account, sum(amount) FROM {db}.payouts FINAL GROUP BY account",
        "SELECT reason, count() FROM {db}.rejects FINAL GROUP BY reason",
        "SELECT model_id, toDate(event_time) AS day, sum(fee_e6) "
        "FROM {db}.accruals FINAL GROUP BY model_id, day",
    ]
    lines = "\n".join("  " + q.format(db=db) for q in queries)
    return (
        f"analytics: {settings.analytics_url} — try, with clickhouse_connect:\n{lines}\n"
        "(more in docs/analytics.md; `royalty analytics sync` keeps chDB current)"
    )


def _print_summary(
    console: Console,
    world: DemoWorld,
    report: DemoReport,
    usage_rows: list[tuple[Any, ...]],
    payout_rows: list[tuple[Any, ...]],
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

    pay = report.payout
    epochs = Table(title="Epochs: closed, split, committed on-chain, verified from public inputs")
    for col in ("epoch", "status", "usage", "fees (dUSD)", "paid (dUSD)", "leaves", "root",
                "commit tx", "gas", "verify"):  # fmt: skip
        epochs.add_column(col)
    for line in pay.epochs:
        epochs.add_row(
            str(line.epoch),
            line.status,
            str(line.accruals),
            _dusd(line.fees_e6),
            _dusd(line.total * 10**6),
            str(line.leaves),
            line.root[:14] + "…",
            (line.tx_hash or "(nothing to pay)")[:14] + ("…" if line.tx_hash else ""),
            str(line.gas_used),
            {True: "ok", False: "[red]MISMATCH[/]", None: "-"}[line.verified],
        )
    console.print(epochs)

    roles = _roles(world)
    payouts = Table(title="Payouts per recipient over every committed epoch")
    for col in ("account", "who", "paid (dUSD)", "carry (10^-6 dUSD)"):
        payouts.add_column(col)
    for account, amount in sorted(pay.paid.items(), key=lambda kv: (-kv[1], kv[0])):
        payouts.add_row(
            account,
            roles.get(account.lower(), "?"),
            _dusd(amount * 10**6),
            str(pay.carries_e6.get(account.lower(), pay.carries_e6.get(account, 0))),
        )
    console.print(payouts)

    chdb = Table(title=f"chDB ({settings.analytics_url}): usage by model and license")
    for col in ("model", "license", "inferences", "units"):
        chdb.add_column(col)
    for row in usage_rows:
        chdb.add_row(*(str(v) for v in row))
    console.print(chdb)

    total = sum(report.inferences.values())
    decided = sum(report.billed.values()) + report.rejects.total() - len(report.injected)
    metered_ok = (
        len(report.events) == total
        and decided == total
        and report.held == 0
        and report.rejects["bad_signature"] >= 1
        and report.rejects["duplicate"] >= 1
        and report.rejects["malformed"] >= 1
    )
    fees = sum(report.fees_e6.values())
    reconciled = pay.reconciles and fees == pay.fees_e6 and len(payout_rows) == len(pay.paid)
    claim_ok = pay.claimed > 0 and pay.balance_delta == pay.claimed and pay.second_claim_reverted
    ok = metered_ok and reconciled and claim_ok
    verdict = (
        "[green]every inference metered once and decided once; fees = payouts + carries to the "
        "10^-6 unit; every epoch verified; the claim paid exactly"
        if ok
        else "[red]MISMATCH: see the tables above"
    )
    again = (
        f"reverted ({pay.second_claim_error or 'on-chain'})"
        if pay.second_claim_reverted
        else "DID NOT revert"
    )
    console.print(
        f"indexed: {json.dumps(report.indexed)}\n"
        f"inferences {total}, usage events {len(report.events)}, injected "
        f"{len(report.injected)} ({', '.join(report.injected)}), billed "
        f"{sum(report.billed.values())}, rejected {report.rejects.total()}, held {report.held}\n"
        f"fees billed {_dusd(fees)} dUSD = paid {_dusd(pay.committed_total * 10**6)} dUSD "
        f"+ carries {sum(pay.carries_e6.values())} x 10^-6 dUSD\n"
        f"claim: {pay.claimant} ({roles.get(pay.claimant.lower(), '?')}) asked the API for "
        f"claim-all, signed and sent one transaction for epochs {pay.claim_epochs}: received "
        f"{_dusd(pay.balance_delta * 10**6)} dUSD (gas {pay.claim_gas}, "
        f"tx {pay.claim_tx[:18]}…); the same transaction again {again}\n"
        f"{verdict}[/]\n"
        f"contracts: {settings.manifest_path}\ndatabase: {settings.database_url}"
    )
    console.print(_analytics_hints(settings))
    if not ok:
        raise SystemExit(1)
