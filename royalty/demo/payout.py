"""The demo's second half: epochs close and commit on-chain, the dispute window passes, and a
contributor claims through the API with nothing but its wallet.

Everything here goes through the real components: the settler (`settlement.settler`, built
from the demo's settings like `royalty settle` builds it), the indexer, the API served by
uvicorn (`api.app`), `settlement.verify` for every committed epoch, and a signed raw
transaction for the claim.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError

from deploy.local import Anvil
from deploy.local.process import free_port, port_open
from indexer.follower import Follower
from royalty.commands.settle import build_settler
from royalty.config import Settings
from royalty.demo.world import DemoWorld
from schemas.engine import create_engine
from schemas.tables import metadata
from settlement.chain import demo_token
from settlement.chain.reverts import decode_revert, revert_data
from settlement.verify import verify_epoch

_t = metadata.tables

#: What the settler holds to fund epochs (dUSD has 6 decimals): far more than the demo pays.
SETTLER_FUNDS = 1_000_000 * 10**6


@dataclass
class EpochLine:
    """One settled epoch, for the summary."""

    epoch: int
    status: str
    accruals: int
    fees_e6: int
    total: int
    leaves: int
    root: str
    tx_hash: str | None
    gas_used: int
    verified: bool | None = None


@dataclass
class PayoutReport:
    """What settlement and the claim did."""

    epochs: list[EpochLine] = field(default_factory=list)
    paid: dict[str, int] = field(default_factory=dict)
    """Base units per account over every committed epoch."""
    carries_e6: dict[str, int] = field(default_factory=dict)
    """Each account's carry after the newest computed epoch (10^-6 units)."""
    fees_e6: int = 0
    """Fees of every billed usage event."""
    claimant: str = ""
    claim_epochs: list[int] = field(default_factory=list)
    claimed: int = 0
    claim_gas: int = 0
    claim_tx: str = ""
    balance_delta: int = 0
    second_claim_reverted: bool = False
    second_claim_error: str = ""
    api_url: str = ""

    @property
    def committed_total(self) -> int:
        return sum(line.total for line in self.epochs)

    @property
    def reconciles(self) -> bool:
        """Fees = 10^6 x paid out + carries, to the 10^-6 unit; the claim paid exactly."""
        return (
            self.fees_e6 == 10**6 * self.committed_total + sum(self.carries_e6.values())
            and sum(self.paid.values()) == self.committed_total
            and self.balance_delta == self.claimed
            and all(line.verified is not False for line in self.epochs)
        )


def fund_settler(world: DemoWorld, settler: LocalAccount) -> None:
    """Mint the settler the demo token it funds epochs with (a real operator buys it)."""
    from royalty.demo.world import DEPLOYER
    from settlement.chain import dev_account

    demo_token(world.client, world.manifest).mint(
        dev_account(DEPLOYER), settler.address, SETTLER_FUNDS
    )


def _mine_at_now(chain: Anvil, world: DemoWorld) -> None:
    now = int(time.time())
    if now > world.client.latest_timestamp():
        chain.rpc("evm_setNextBlockTimestamp", [now])
    chain.rpc("evm_mine")


def settle_epochs(
    settings: Settings,
    world: DemoWorld,
    chain: Anvil,
    follower: Follower,
    on_progress: Callable[[str, int, int], None],
) -> None:
    """Close, compute and commit every epoch that holds usage; then let the dispute window
    pass on the chain and mark them claimable."""
    settler = build_settler(settings)
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            last_time = connection.execute(
                sa.select(sa.func.max(_t["accruals"].c.event_time))
            ).scalar()
        clock = settler.config.clock
        last_epoch = clock.epoch_of(int(last_time)) if last_time is not None else 0
        closes_at = clock.end_of(last_epoch) + settler.config.allowed_lateness_s
        while time.time() < closes_at + 1:
            on_progress("waiting for the last epoch to end", 0, last_epoch + 1)
            time.sleep(0.5)
        # A block after the epochs' end, indexed and finalized: the chain watermark passes.
        _mine_at_now(chain, world)
        follower.run(stop_at_head=True)
        deadline = time.monotonic() + 120
        while True:
            settler.step()
            with engine.connect() as connection:
                statuses = dict(
                    connection.execute(
                        sa.select(_t["epochs"].c.id, _t["epochs"].c.status).where(
                            _t["epochs"].c.id <= last_epoch
                        )
                    ).all()
                )
            done = sum(1 for s in statuses.values() if s in ("committed", "claimable"))
            on_progress("closing, computing and committing epochs", done, len(statuses))
            if statuses and done == len(statuses):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"epochs not committed in time: {statuses}")
            time.sleep(0.2)
        # The dispute window passes on the chain (nobody disputes), then the settler sees it.
        window = world.system.royalty_distributor.dispute_window_s()
        on_progress("the dispute window passes (chain time)", 0, 1)
        chain.rpc("evm_increaseTime", [window + 1])
        chain.rpc("evm_mine")
        follower.run(stop_at_head=True)
        for _ in range(50):
            report = settler.step()
            with engine.connect() as connection:
                open_ones = connection.execute(
                    sa.select(sa.func.count())
                    .select_from(_t["epochs"])
                    .where(_t["epochs"].c.id <= last_epoch, _t["epochs"].c.status != "claimable")
                ).scalar_one()
            if open_ones == 0:
                break
            if not report.moved:
                time.sleep(0.2)
        on_progress("epochs claimable", 1, 1)
    finally:
        settler.engine.dispose()
        engine.dispose()


class ApiServer:
    """The public and claims API served by uvicorn in a thread of this process."""

    def __init__(self, settings: Settings) -> None:
        from api.app import create_app

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not port_open(self.port):
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


def _send(w3: Web3, account: LocalAccount, tx: dict[str, Any]) -> dict[str, Any]:
    """Sign the API's transaction with the contributor's key, as a wallet would, and send it."""
    call = {
        "from": account.address,
        "to": Web3.to_checksum_address(tx["to"]),
        "data": tx["data"],
        "value": int(tx["value"]),
    }
    gas = w3.eth.estimate_gas(call)  # type: ignore[arg-type]
    base_fee = int(w3.eth.get_block("latest")["baseFeePerGas"])
    signed = account.sign_transaction(
        {
            **call,
            "chainId": int(tx["chain_id"]),
            "nonce": w3.eth.get_transaction_count(account.address),
            "gas": gas * 2,
            "maxFeePerGas": 2 * base_fee + 10**9,
            "maxPriorityFeePerGas": 10**9,
            "type": 2,
        }
    )
    tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    return dict(w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60, poll_latency=0.05))


def claim_through_api(
    api: ApiServer,
    world: DemoWorld,
    contributor: LocalAccount,
    follower: Follower,
    report: PayoutReport,
) -> None:
    """The contributor asks the API for one transaction claiming everything, signs and sends
    it; the chain pays exactly the total; asking again finds nothing left to claim."""
    w3 = world.client.w3
    token = demo_token(world.client, world.manifest)
    report.claimant = contributor.address
    report.api_url = api.url
    with httpx.Client(base_url=api.url, timeout=30) as http:
        response = http.get(f"/v1/contributors/{contributor.address}/claim-all")
        response.raise_for_status()
        tx = response.json()
        report.claim_epochs = [int(c["epoch"]) for c in tx["claims"]]
        report.claimed = int(tx["total"])
        before = token.balance_of(contributor.address)
        receipt = _send(w3, contributor, tx)
        if receipt["status"] != 1:
            raise RuntimeError("the claim transaction reverted")
        report.claim_gas = int(receipt["gasUsed"])
        report.claim_tx = "0x" + bytes(receipt["transactionHash"]).hex().removeprefix("0x")
        report.balance_delta = token.balance_of(contributor.address) - before
        # The same transaction again: the wallet's gas estimate already hits the revert.
        try:
            again = _send(w3, contributor, tx)
            report.second_claim_reverted = again["status"] == 0
        except ContractLogicError as exc:
            report.second_claim_reverted = True
            report.second_claim_error = decode_revert(revert_data(exc))[0]
        follower.run(stop_at_head=True)
        after = http.get(f"/v1/contributors/{contributor.address}/claim-all")
        if after.status_code != 404:
            raise RuntimeError(f"claim-all still offers claims after claiming: {after.text}")


def collect(settings: Settings, world: DemoWorld, report: PayoutReport) -> None:
    """Epoch lines, payouts per account, carries and fees from the database, and every
    committed epoch verified from public inputs against the chain."""
    engine = create_engine(settings.database_url)
    distributor = world.system.royalty_distributor
    try:
        with engine.connect() as connection:
            report.fees_e6 = sum(
                int(fee) for (fee,) in connection.execute(sa.select(_t["accruals"].c.fee_e6))
            )
            gas: dict[int, int] = {}
            for epoch_id, used in connection.execute(
                sa.select(_t["settlement_txs"].c.epoch_id, _t["settlement_txs"].c.gas_used)
            ):
                gas[int(epoch_id)] = gas.get(int(epoch_id), 0) + int(used or 0)
            epochs = connection.execute(
                sa.select(_t["epochs"]).where(_t["epochs"].c.root.is_not(None)).order_by("id")
            ).all()
            for e in epochs:
                committed = e.status in ("committed", "claimable")
                verified = None
                if committed:
                    check = verify_epoch(
                        connection,
                        chain_id=world.manifest.chain_id,
                        distributor=distributor.address,
                        epoch=int(e.id),
                        read_chain=distributor.epoch_info,
                    )
                    verified = check.ok
                report.epochs.append(
                    EpochLine(
                        epoch=int(e.id),
                        status=str(e.status),
                        accruals=int(e.accrual_count or 0),
                        fees_e6=int(e.fees_e6 or 0),
                        total=int(e.total or 0),
                        leaves=int(e.leaf_count or 0),
                        root=str(e.root),
                        tx_hash=e.tx_hash,
                        gas_used=gas.get(int(e.id), 0),
                        verified=verified,
                    )
                )
            for account, amount in connection.execute(
                sa.select(_t["epoch_allocations"].c.account, _t["epoch_allocations"].c.amount)
            ):
                report.paid[str(account)] = report.paid.get(str(account), 0) + int(amount)
            carries = _t["recipient_carries"]
            newest = sa.select(sa.func.max(carries.c.epoch_id)).scalar_subquery()
            for account, carry in connection.execute(
                sa.select(carries.c.account, carries.c.carry_e6).where(carries.c.epoch_id == newest)
            ):
                report.carries_e6[str(account)] = int(carry)
    finally:
        engine.dispose()
