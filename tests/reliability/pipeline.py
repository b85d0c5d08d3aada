"""The whole pipeline as separate processes on the real services, for the chaos scenario.

    anvil (blocks pinned to the wall clock) ─▶ indexer process ─▶ PostgreSQL + Kafka `chain`
    client threads ─▶ metering gateway process ─▶ Triton ─▶ Kafka `usage`
    Kafka `usage` + `chain` ─▶ faust stream workers ─▶ PostgreSQL accruals
    settler process ─▶ epochs computed, committed on anvil

Every process can be SIGKILLed and restarted; the broker can be restarted; the chain can be
reorganised below the confirmation depth. `Pipeline` owns them all and knows how to start,
kill and restart each one.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from deploy.local import Anvil, KafkaBroker
from deploy.local.process import free_port
from metering.auth import issue_key
from metering.keyfiles import save_api_key_records, write_json_atomic
from metering.signing import KeyRing, SigningKey
from settlement.chain import System
from tests.contracts.contract_helpers import ChainHarness
from tests.metering.harness import MODELS, doubler_body, echo_body

REPO = Path(__file__).resolve().parents[2]
PEPPER = "chaos-pepper-0123456789abcdef"
CONFIRMATIONS = 3


@dataclass
class Service:
    """One restartable child process; its output is appended to `log`."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    ready: Callable[[], bool] | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self, timeout_s: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1
        if self.ready is None:
            return
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready: {self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ChainClock:
    """Mines a block pinned to the wall clock every `interval_s`, so chain time follows real
    time and the finalized watermark moves past usage event times."""

    def __init__(self, anvil: Anvil, interval_s: float = 1.0) -> None:
        self.anvil = anvil
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def tick(self) -> None:
        with self._lock:
            try:
                latest = int(
                    self.anvil.rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16
                )
                now = int(time.time())
                if now > latest:
                    self.anvil.rpc("evm_setNextBlockTimestamp", [now])
                self.anvil.rpc("evm_mine")
            except Exception:  # the node is never killed; a transient error skips one block
                return

    def reorg(self, depth: int) -> None:
        """Replace the newest `depth` blocks with empty ones (below the confirmation depth)."""
        with self._lock:
            self.anvil.rpc("anvil_reorg", [depth, []])

    def start(self) -> ChainClock:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class Traffic:
    """Client threads sending inferences through the gateway; what succeeded, by usage id."""

    url: Callable[[], str]
    keys: dict[str, list[str]]
    """API keys per Triton model name."""
    threads: int = 2
    succeeded: set[str] = field(default_factory=set)
    outcomes: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self, seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                model = rng.choice(sorted(self.keys))
                key = rng.choice(self.keys[model])
                body = (
                    echo_body(f"chaos {rng.random()}")
                    if model == "echo-lm"
                    else doubler_body(rng.randint(1, 4))
                )
                try:
                    r = client.post(
                        f"{self.url()}/v2/models/{model}/infer",
                        json=body,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.outcomes[f"transport error: {type(exc).__name__}"] += 1
                    time.sleep(0.2)
                    continue
                with self._lock:
                    self.outcomes[str(r.status_code)] += 1
                    usage_id = r.headers.get("x-royalty-usage-id")
                    if r.status_code == 200 and usage_id:
                        assert usage_id not in self.succeeded
                        self.succeeded.add(usage_id)
                if r.status_code != 200:
                    time.sleep(0.2)
                else:
                    time.sleep(rng.uniform(0.01, 0.05))

    def start(self) -> Traffic:
        for i in range(self.threads):
            thread = threading.Thread(target=self._run, args=(i,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(30)


def write_metering_files(
    root: Path, licenses: dict[str, list[tuple[int, int]]]
) -> tuple[dict[str, list[str]], Path]:
    """Signing key, key ring and API keys (one per license) under `root/metering`.

    `licenses` maps Triton model names to (license id, model id) pairs. Returns the plain
    keys per model name and the key ring path.
    """
    meta = root / "metering"
    key = SigningKey.generate(prefix="chaos-node")
    write_json_atomic(meta / "signing-key.json", key.to_json())
    ring = meta / "keyring.json"
    write_json_atomic(ring, KeyRing([key.verification_key()]).to_json(), mode=0o644)
    records = []
    plain: dict[str, list[str]] = {}
    for model, pairs in licenses.items():
        for license_id, model_id in pairs:
            secret, record = issue_key(
                PEPPER.encode(), license_id, model_id, f"license {license_id}"
            )
            plain.setdefault(model, []).append(secret)
            records.append(record)
    save_api_key_records(meta / "api-keys.json", records)
    return plain, ring


def base_env(
    root: Path, db_url: str, rpc_url: str, manifest: Path, broker: KafkaBroker
) -> dict[str, str]:
    """ROYALTY_* settings shared by every process of the pipeline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROYALTY_")}
    env.update(
        PYTHONPATH=str(REPO),
        ROYALTY_DATA_DIR=str(root),
        ROYALTY_DB_URL=db_url,
        ROYALTY_BUS="kafka",
        ROYALTY_LOG_LEVEL="info",
        ROYALTY_CHAIN_RPC_URLS=f'["{rpc_url}"]',
        ROYALTY_CHAIN_MANIFEST_PATH=str(manifest),
        ROYALTY_CHAIN_CONFIRMATIONS=str(CONFIRMATIONS),
        ROYALTY_CHAIN_POLL_INTERVAL_S="0.2",
        ROYALTY_KAFKA_BOOTSTRAP_SERVERS=broker.bootstrap_servers,
    )
    return env


def gateway_service(root: Path, env: dict[str, str], triton_url: str) -> tuple[Service, str]:
    """The metering gateway (`python -m metering.server`) on a fixed free port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    import json

    genv = dict(env)
    genv.update(
        ROYALTY_TRITON_HTTP_URL=triton_url,
        ROYALTY_METERING_NODE_ID="chaos-node",
        ROYALTY_METERING_PORT=str(port),
        ROYALTY_METERING_API_KEY_PEPPER=PEPPER,
        ROYALTY_METERING_MODELS=json.dumps(
            {name: spec for name, spec in MODELS.items() if name != "ghost"}
        ),
        ROYALTY_METERING_KAFKA_DELIVERY_TIMEOUT_MS="3000",
    )

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/metrics", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    service = Service(
        "gateway", [sys.executable, "-m", "metering.server"], genv, root / "gateway.log", ready
    )
    return service, url


def indexer_service(root: Path, env: dict[str, str]) -> Service:
    """`royalty indexer run`."""
    return Service(
        "indexer",
        [sys.executable, "-m", "royalty.commands.indexer", "run"],
        env,
        root / "indexer.log",
    )


def worker_service(
    root: Path,
    env: dict[str, str],
    index: int,
    ring: Path,
    chain_id: int,
    epoch_s: int,
    genesis: int,
    module: str = "stream.faust_app",
) -> Service:
    """A stream worker (`python -m <module>`: the faust engine by default, `stream.app` for
    kafka-python) with static membership `chaos-<index>`."""
    return Service(
        f"worker-{index}",
        [
            sys.executable,
            "-m",
            module,
            "--bootstrap-servers",
            env["ROYALTY_KAFKA_BOOTSTRAP_SERVERS"],
            "--db-url",
            env["ROYALTY_DB_URL"],
            "--chain-id",
            str(chain_id),
            "--key-ring",
            str(ring),
            "--epoch-length",
            str(epoch_s),
            "--epoch-genesis",
            str(genesis),
            "--instance-id",
            f"chaos-{index}",
            "--max-records",
            "50",
            "--session-timeout-ms",
            "6000",
        ],
        env,
        root / f"worker-{index}.log",
    )


def settler_service(
    root: Path, env: dict[str, str], settler_key: str, epoch_s: int, genesis: int
) -> Service:
    """`royalty settle` (the loop), committing with the settler's key."""
    senv = dict(env)
    senv.update(
        ROYALTY_CHAIN_SETTLER_PRIVATE_KEY=settler_key,
        ROYALTY_EPOCH_LENGTH_S=str(epoch_s),
        ROYALTY_EPOCH_GENESIS_S=str(genesis),
        ROYALTY_EPOCH_ALLOWED_LATENESS_S="2",
        ROYALTY_EPOCH_WALL_CLOCK_WATERMARK="true",
        ROYALTY_EPOCH_SETTLE_INTERVAL_S="1",
        ROYALTY_EPOCH_RECEIPT_TIMEOUT_S="20",
    )
    return Service(
        "settler",
        [sys.executable, "-m", "royalty.cli", "settle", "--interval", "1"],
        senv,
        root / "settler.log",
    )


def register_world(system: System, chain: ChainHarness) -> dict[str, list[tuple[int, int]]]:
    """Two models, four licenses, three stakers: what the traffic bills and settles."""
    from tests.indexer.support import fund_stakers

    a = chain.actors
    reg, nft, staking = system.model_registry, system.license_nft, system.staking
    reg.register_model(a.operator, 1, a.operator.address, "ipfs://chaos/echo")
    reg.register_model(a.operator, 2, a.operator.address, "ipfs://chaos/doubler")
    echo = [
        (nft.mint(a.operator, 1, a.alice.address, 1_500_000 * 10**3), 1),
        (nft.mint(a.operator, 1, a.bob.address, 2_000_000 * 10**3), 1),
    ]
    doubler = [
        (nft.mint(a.operator, 2, a.carol.address, 40_000_000 * 10**3), 2),
        (nft.mint(a.operator, 2, a.alice.address, 35_000_000 * 10**3), 2),
    ]
    from settlement.chain import demo_token

    fund_stakers(system, chain, [a.alice, a.bob, a.carol])
    demo_token(chain.client, system.manifest).mint(a.deployer, a.settler.address, 10**30)
    staking.stake(a.alice, 1, 3 * 10**18)
    staking.stake(a.bob, 1, 7 * 10**18)
    staking.stake(a.carol, 2, 5 * 10**18)
    return {"echo-lm": echo, "doubler": doubler}
