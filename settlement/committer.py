"""Crash-safe on-chain commit of an epoch: sign, record, broadcast, wait, record.

For epoch N with root R the committer first reads the chain (`epochInfo(N)`):

- committed with R: it only records that (from the recorded transaction, or the
  `EpochCommitted` log when another settler process sent it);
- committed with another root: `CommitConflictError`, loudly; a root is never overwritten;
- not committed: it drives the epoch's recorded transactions (`settlement_txs`) to an end
  before it signs anything new. A transaction is signed with an explicit nonce (the chain's
  pending count), INSERTed as `signed` and the database COMMITTED before the raw bytes are
  broadcast, so a settler killed at any point finds, on restart, the very transaction it may
  have sent: it re-broadcasts the same bytes (same hash; "already known" / "nonce too low"
  for our own hash are not errors), records the receipt once mined, and signs a new one only
  when that nonce was taken by another transaction and the epoch is still uncommitted.

Funding: `commitEpoch` pulls `total` from the settler, so an `approve` of the distributor for
`total` is signed (the same way) first when the allowance is short.

Test hook: `ROYALTY_SETTLER_CRASH_AT=before_send|after_send|after_record` makes the process
SIGKILL itself at that point of the *commit* transaction (after the signed transaction is
recorded and before it is broadcast; after the broadcast and before anything else is recorded;
after its receipt is recorded and before the epoch's status moves). Fault-injection tests use it;
it is never set in production.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
import structlog
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from sqlalchemy.engine import Engine
from web3 import Web3
from web3.exceptions import ContractLogicError, TimeExhausted, TransactionNotFound, Web3RPCError
from web3.types import TxParams, TxReceipt, Wei

from settlement.chain.distributor import EpochInfo, RoyaltyDistributor
from settlement.chain.distributor import EpochStatus as ChainEpochStatus
from settlement.chain.errors import ChainUnavailableError, TransactionTimeoutError
from settlement.chain.reverts import to_revert_error
from settlement.chain.tokens import ERC20Token
from settlement.errors import InvariantViolation, RetryableError
from settlement.store import EpochStore, StoredEpoch, StoredTx, hex32

log = structlog.get_logger("royalty.settler")

CRASH_ENV = "ROYALTY_SETTLER_CRASH_AT"
"""Environment variable of the fault-injection hook (tests only)."""
CRASH_POINTS = ("before_send", "after_send", "after_record")

_LIVE = ("signed", "sent")
_BENIGN_SEND_ERRORS = ("already known", "known transaction", "nonce too low", "already imported")


class CommitConflictError(InvariantViolation):
    """The chain holds a different root for an epoch than the one computed: never overwritten."""


class AwaitingConfirmations(RetryableError):  # noqa: N818 - a state, retried by the settler
    """The commit is mined but not yet buried under the confirmation depth."""


class CommitFailedError(InvariantViolation):
    """A commit or approve transaction was mined but reverted."""


class _CommittedMeanwhile(Exception):  # noqa: N818 - control flow, never escapes
    def __init__(self, info: EpochInfo) -> None:
        super().__init__()
        self.info = info


def crash_point(name: str) -> None:
    """SIGKILL this process if the fault-injection hook names `name` (tests only)."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("fault injection: killing the settler", point=name)
        os.kill(os.getpid(), signal.SIGKILL)


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class CommitRecord:
    """An epoch's root on chain: the transaction that put it there and its claimable time."""

    tx_hash: str
    block_number: int
    claimable_at: int
    gas_used: int | None


class Committer:
    """Commits computed epochs to a `RoyaltyDistributor`, signing as `account`."""

    def __init__(
        self,
        engine: Engine,
        distributor: RoyaltyDistributor,
        account: LocalAccount,
        *,
        receipt_timeout_s: float = 120.0,
        confirmations: int = 0,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        if confirmations < 0:
            raise ValueError("confirmations must be >= 0")
        self.engine = engine
        self.confirmations = confirmations
        """Blocks a commit must be buried under before the epoch counts as committed: the
        indexer's confirmation depth, so a reorg cannot undo a commit the database keeps."""
        self.distributor = distributor
        self.account = account
        self.client = distributor.client
        self.w3: Web3 = distributor.client.w3
        self.token = ERC20Token(self.client, distributor.token())
        self.receipt_timeout_s = receipt_timeout_s
        self.clock = clock

    # -- reads --------------------------------------------------------------------------------

    def epoch_info(self, epoch: int) -> EpochInfo:
        """The epoch as the contract knows it."""
        return self.distributor.epoch_info(epoch)

    def chain_time(self) -> int:
        """The latest block's timestamp."""
        return self.client.latest_timestamp()

    # -- commit -------------------------------------------------------------------------------

    def commit(self, epoch: StoredEpoch) -> CommitRecord:
        """Put `epoch`'s root and total on chain (or find it there); the commit's record.

        Raises `CommitConflictError` if the chain has another root for the epoch;
        `TransactionTimeoutError` or `ChainUnavailableError` (both retryable) if a receipt
        is slow to come or the node does not answer.
        """
        try:
            return self._commit(epoch)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise ChainUnavailableError(f"JSON-RPC endpoint unavailable: {exc}") from exc

    def _commit(self, epoch: StoredEpoch) -> CommitRecord:
        assert epoch.root is not None
        assert epoch.total is not None
        info = self.epoch_info(epoch.id)
        if info.root != bytes(32):
            return self._already_committed(epoch, info)
        if epoch.total > 0:
            self._ensure_allowance(epoch)
        try:
            receipt = self._drive(epoch, "commit", self._commit_call(epoch))
        except _CommittedMeanwhile as exc:
            return self._already_committed(epoch, exc.info)
        crash_point("after_record")
        self._confirmed(epoch.id, receipt)
        info = self.epoch_info(epoch.id)
        self._check_root(epoch, info)
        return CommitRecord(
            tx_hash=hex32(bytes(receipt["transactionHash"])),
            block_number=int(receipt["blockNumber"]),
            claimable_at=int(info.claimable_at),
            gas_used=int(receipt["gasUsed"]),
        )

    def _confirmed(self, epoch: int, receipt: TxReceipt) -> None:
        """Raise `AwaitingConfirmations` until `receipt`'s block is `confirmations` deep and
        still the chain's block at its height (retried at the next step)."""
        if self.confirmations == 0:
            return
        block = int(receipt["blockNumber"])
        head = self.w3.eth.block_number
        canonical = self.w3.eth.get_block(block)["hash"]
        if bytes(canonical) != bytes(receipt["blockHash"]):
            raise AwaitingConfirmations(f"epoch {epoch}: commit block {block} was reorganised")
        if head - block < self.confirmations:
            raise AwaitingConfirmations(
                f"epoch {epoch}: commit in block {block}, {head - block} of "
                f"{self.confirmations} confirmations"
            )

    def _check_root(self, epoch: StoredEpoch, info: EpochInfo) -> None:
        if hex32(info.root) != epoch.root:
            log.critical(
                "epoch committed on chain with another root",
                epoch=epoch.id,
                chain_root=hex32(info.root),
                our_root=epoch.root,
                funder=info.funder,
            )
            raise CommitConflictError(
                f"epoch {epoch.id}: chain root {hex32(info.root)} != computed root {epoch.root}"
            )

    def _already_committed(self, epoch: StoredEpoch, info: EpochInfo) -> CommitRecord:
        """The chain has a root for `epoch`: ours (record it) or not (refuse)."""
        self._check_root(epoch, info)
        found: TxReceipt | None = None
        for tx in self._txs(epoch.id, "commit"):
            receipt = self._receipt(tx.tx_hash)
            if receipt is None:
                if tx.state in _LIVE:
                    self._set_state(tx, "replaced")
                continue
            self._record_receipt(tx, receipt)
            if receipt["status"] == 1:
                found = receipt
        if found is None:
            found = self._commit_log_receipt(epoch.id)
        self._confirmed(epoch.id, found)
        log.info("epoch already committed on chain", epoch=epoch.id, root=epoch.root)
        return CommitRecord(
            tx_hash=hex32(bytes(found["transactionHash"])),
            block_number=int(found["blockNumber"]),
            claimable_at=int(info.claimable_at),
            gas_used=int(found["gasUsed"]),
        )

    def _commit_log_receipt(self, epoch: int) -> TxReceipt:
        event = self.distributor.contract.events.EpochCommitted()
        logs = list(event.get_logs(argument_filters={"epoch": epoch}, from_block=0))
        if not logs:
            raise InvariantViolation(f"epoch {epoch} has a root but no EpochCommitted log")
        return self.w3.eth.get_transaction_receipt(logs[-1]["transactionHash"])

    def _ensure_allowance(self, epoch: StoredEpoch) -> None:
        assert epoch.total is not None
        allowance = self.token.allowance(self.account.address, self.distributor.address)
        if allowance >= epoch.total:
            return
        call = self._call(self.token.contract, "approve", self.distributor.address, epoch.total)
        self._drive(epoch, "approve", call)

    def _commit_call(self, epoch: StoredEpoch) -> TxParams:
        assert epoch.root
        assert epoch.total is not None
        assert epoch.inputs_hash
        assert epoch.usage_root
        return self._call(
            self.distributor.contract,
            "commitEpoch",
            epoch.id,
            HexBytes(epoch.root),
            epoch.total,
            HexBytes(epoch.inputs_hash),
            HexBytes(epoch.usage_root),
        )

    def _call(self, contract: Any, fn_name: str, *args: Any) -> TxParams:
        return {"to": contract.address, "data": contract.encode_abi(fn_name, args=list(args))}

    # -- one transaction, from signing to receipt ---------------------------------------------

    def _drive(self, epoch: StoredEpoch, kind: str, call: TxParams) -> TxReceipt:
        """The successful receipt of the epoch's `kind` transaction, re-using a recorded one."""
        for tx in self._txs(epoch.id, kind):
            vanished = False
            if tx.state == "mined":
                receipt = self._receipt(tx.tx_hash)
                if receipt is not None and receipt["status"] == 1:
                    return receipt
                # Mined, then gone: a reorg dropped its block. The same signed transaction
                # (same nonce, same hash) goes out again; nothing new is signed for it.
                vanished = receipt is None
                if vanished:
                    log.warning(
                        "mined transaction no longer on the chain (reorg); re-sending it",
                        epoch=epoch.id,
                        kind=kind,
                        tx=tx.tx_hash,
                    )
            if tx.state not in _LIVE and not vanished:
                continue
            receipt = self._advance(tx)
            if receipt is not None:
                if receipt["status"] != 1:
                    raise CommitFailedError(f"epoch {epoch.id}: {kind} {tx.tx_hash} reverted")
                return receipt
            if kind == "commit":
                # Its nonce went to another transaction: sign again only if the epoch is
                # still uncommitted (that other transaction may have committed it).
                info = self.epoch_info(epoch.id)
                if info.root != bytes(32):
                    raise _CommittedMeanwhile(info)
        tx = self._sign(epoch.id, kind, call)
        receipt = self._advance(tx)
        if receipt is None:
            raise TransactionTimeoutError(f"epoch {epoch.id}: {kind} {tx.tx_hash} was replaced")
        if receipt["status"] != 1:
            raise CommitFailedError(f"epoch {epoch.id}: {kind} {tx.tx_hash} reverted")
        return receipt

    def _sign(self, epoch: int, kind: str, call: TxParams) -> StoredTx:
        """Sign `call` with the next pending nonce and record it (committed) as `signed`."""
        eth, sender = self.w3.eth, self.account.address
        tx: TxParams = {**call, "from": sender, "value": Wei(0), "chainId": self.client.chain_id}
        tx["nonce"] = eth.get_transaction_count(sender, "pending")
        base_fee = int(eth.get_block("latest").get("baseFeePerGas", 0))
        tip = eth.max_priority_fee
        tx["maxPriorityFeePerGas"] = tip
        tx["maxFeePerGas"] = Wei(2 * base_fee + tip)
        try:
            estimate = eth.estimate_gas(tx)
        except ContractLogicError as exc:
            raise to_revert_error(exc, kind) from exc
        tx["gas"] = estimate + estimate // 5
        signed = self.account.sign_transaction(tx)  # type: ignore[arg-type]
        stored = StoredTx(
            tx_hash=hex32(bytes(signed.hash)),
            epoch=epoch,
            kind=kind,
            chain_id=self.client.chain_id,
            sender=sender,
            nonce=int(tx["nonce"]),
            raw_tx="0x" + bytes(signed.raw_transaction).hex(),
            state="signed",
            block_number=None,
            gas_used=None,
        )
        with self.engine.begin() as connection:
            EpochStore(connection).add_tx(stored, self.clock())
        log.info(
            "transaction signed", epoch=epoch, kind=kind, tx=stored.tx_hash, nonce=stored.nonce
        )
        return stored

    def _advance(self, tx: StoredTx) -> TxReceipt | None:
        """Bring a recorded transaction to its receipt; None when its nonce went to another."""
        receipt = self._receipt(tx.tx_hash)
        if receipt is None:
            latest_nonce = self.w3.eth.get_transaction_count(self.account.address, "latest")
            if latest_nonce > tx.nonce:
                receipt = self._receipt(tx.tx_hash)  # mined meanwhile?
                if receipt is None:
                    log.warning("nonce taken by another transaction", tx=tx.tx_hash, nonce=tx.nonce)
                    self._set_state(tx, "replaced")
                    return None
            else:
                if tx.kind == "commit":
                    crash_point("before_send")
                self._broadcast(tx)
                if tx.kind == "commit":
                    crash_point("after_send")
                if tx.state == "signed":
                    self._set_state(tx, "sent")
                receipt = self._wait(tx)
        self._record_receipt(tx, receipt)
        return receipt

    def _broadcast(self, tx: StoredTx) -> None:
        try:
            self.w3.eth.send_raw_transaction(HexBytes(tx.raw_tx))
        except Web3RPCError as exc:
            message = str(exc).lower()
            if not any(benign in message for benign in _BENIGN_SEND_ERRORS):
                raise
            log.info("transaction already known to the node", tx=tx.tx_hash, reply=message)
        log.info("transaction broadcast", epoch=tx.epoch, kind=tx.kind, tx=tx.tx_hash)

    def _wait(self, tx: StoredTx) -> TxReceipt:
        try:
            return self.w3.eth.wait_for_transaction_receipt(
                HexBytes(tx.tx_hash),
                timeout=self.receipt_timeout_s,
                poll_latency=self.client.poll_latency_s,
            )
        except TimeExhausted as exc:
            raise TransactionTimeoutError(f"{tx.kind} {tx.tx_hash} not mined yet") from exc

    def _receipt(self, tx_hash: str) -> TxReceipt | None:
        try:
            return self.w3.eth.get_transaction_receipt(HexBytes(tx_hash))
        except TransactionNotFound:
            return None

    def _record_receipt(self, tx: StoredTx, receipt: TxReceipt) -> None:
        state = "mined" if receipt["status"] == 1 else "failed"
        if tx.state == state and tx.block_number == int(receipt["blockNumber"]):
            return
        with self.engine.begin() as connection:
            EpochStore(connection).set_tx_state(
                tx.tx_hash,
                state,
                self.clock(),
                block_number=int(receipt["blockNumber"]),
                gas_used=int(receipt["gasUsed"]),
            )
        log.info(
            "transaction mined",
            epoch=tx.epoch,
            kind=tx.kind,
            tx=tx.tx_hash,
            block=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            ok=state == "mined",
        )

    def _set_state(self, tx: StoredTx, state: str) -> None:
        with self.engine.begin() as connection:
            EpochStore(connection).set_tx_state(tx.tx_hash, state, self.clock())

    def _txs(self, epoch: int, kind: str) -> list[StoredTx]:
        with self.engine.connect() as connection:
            return EpochStore(connection).txs(epoch, kind)


def chain_verdict(info: EpochInfo, chain_time: int) -> str | None:
    """What a committed epoch became on chain: "claimable", "disputed", or None (still open).

    Pure: `info` is `epochInfo(N)` and `chain_time` the latest block's timestamp.
    """
    if info.status == ChainEpochStatus.DISPUTED:
        return "disputed"
    if info.status == ChainEpochStatus.SWEPT:
        return "claimable"
    if info.status == ChainEpochStatus.COMMITTED and chain_time >= info.claimable_at:
        return "claimable"
    return None
