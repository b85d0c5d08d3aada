"""Factories of valid records for the schemas tests: JSON-shaped dicts that tests mutate."""

from __future__ import annotations

import copy
from typing import Any

OPERATOR = "0x5B38Da6a701c568545dCfcB03FcB875f56beddC4"  # valid EIP-55 checksum
PAYER = "0xAb8483F64d9C6d1EcF9b849Ae677dD3315835cb2"
BLOCK_HASH = "0x" + "ab" * 32
TX_HASH = "0x" + "cd" * 32
ROOT = "0x" + "11" * 32


def usage_event_doc(**data_overrides: Any) -> dict[str, Any]:
    """A valid usage event as JSON-decoded data."""
    data: dict[str, Any] = {
        "model_id": "7",
        "license_id": "42",
        "units": 128,
        "model_version": "3",
        "request_id": "req-1",
        "latency_ms": 95,
        "billing_metric": "tokens",
    }
    data.update(data_overrides)
    return {
        "specversion": "1.0",
        "id": "node-1:000001",
        "source": "//metering/node-1",
        "type": "ai.royalty.usage.v1",
        "time": "2024-05-01T12:00:00.250Z",
        "datacontenttype": "application/json",
        "keyid": "node-1",
        "signature": "0x" + "ee" * 65,
        "data": data,
    }


PAYLOAD_SAMPLES: dict[str, dict[str, Any]] = {
    "ModelRegistered": {"model_id": "7", "operator": OPERATOR, "metadata_uri": "ipfs://model"},
    "ModelOperatorTransferred": {
        "model_id": "7",
        "previous_operator": OPERATOR,
        "new_operator": PAYER,
    },
    "ModelMetadataUpdated": {"model_id": "7", "metadata_uri": ""},
    "LicenseMinted": {
        "license_id": "42",
        "model_id": "7",
        "to": PAYER,
        "price_per_unit_e6": "1500000",
        "expires_at": 0,
    },
    "LicenseTransferred": {"from_address": PAYER, "to_address": OPERATOR, "license_id": "42"},
    "LicenseRevoked": {"license_id": "42", "model_id": "7", "by": OPERATOR},
    "LicenseOfferSet": {
        "model_id": "7",
        "sale_price": str(10**18),
        "price_per_unit_e6": "2000000",
        "duration": 86400,
        "active": True,
    },
    "Staked": {
        "model_id": "7",
        "staker": PAYER,
        "amount": str(2**255),
        "stake_after": str(2**255),
        "total_after": str(2**256 - 1),
    },
    "Unstaked": {
        "model_id": "7",
        "staker": PAYER,
        "amount": "5",
        "stake_after": "0",
        "total_after": "10",
    },
    "Withdrawn": {"model_id": "7", "staker": PAYER, "amount": "5"},
    "PolicySet": {
        "model_id": "0",
        "operator_bps": 2000,
        "treasury_bps": 1000,
        "contributors_bps": 7000,
    },
    "TreasurySet": {"treasury": OPERATOR},
    "ProposalCreated": {
        "proposal_id": str(2**200),
        "proposer": PAYER,
        "targets": [OPERATOR],
        "values": ["0"],
        "signatures": [""],
        "calldatas": ["0xdeadbeef"],
        "vote_start": "100",
        "vote_end": "200",
        "description": "# Raise the treasury share\n\nBecause.",
    },
    "VoteCast": {
        "voter": PAYER,
        "proposal_id": "1",
        "support": 1,
        "weight": str(10**21),
        "reason": "",
    },
    "ProposalQueued": {"proposal_id": "1", "eta_seconds": "1714564800"},
    "ProposalExecuted": {"proposal_id": "1"},
    "ProposalCanceled": {"proposal_id": "1"},
    "EpochCommitted": {
        "epoch": "3",
        "merkle_root": ROOT,
        "total": "1000",
        "inputs_hash": "0x" + "22" * 32,
        "usage_root": "0x" + "33" * 32,
        "claimable_at": 1714568400,
        "funder": OPERATOR,
    },
    "EpochDisputed": {"epoch": "3", "guardian": OPERATOR, "refunded": "1000"},
    "Claimed": {"epoch": "3", "index": "0", "account": PAYER, "amount": "999"},
    "Swept": {"epoch": "3", "to": OPERATOR, "amount": "1"},
    "Paused": {"account": OPERATOR},
    "Unpaused": {"account": OPERATOR},
}


def payload_doc(kind: str) -> dict[str, Any]:
    """A valid payload of `kind` as JSON-decoded data."""
    return {"kind": kind, **copy.deepcopy(PAYLOAD_SAMPLES[kind])}


def chain_event_doc(kind: str = "ModelRegistered", **overrides: Any) -> dict[str, Any]:
    """A valid chain event envelope as JSON-decoded data."""
    doc: dict[str, Any] = {
        "chain_id": 31337,
        "block_number": 12,
        "block_hash": BLOCK_HASH,
        "block_timestamp": 1714564800,
        "tx_hash": TX_HASH,
        "log_index": 3,
        "contract": OPERATOR,
        "removed": False,
        "payload": payload_doc(kind),
    }
    doc.update(overrides)
    return doc


def accrual_doc(**overrides: Any) -> dict[str, Any]:
    """A valid accrual as JSON-decoded data."""
    doc: dict[str, Any] = {
        "usage_id": "node-1:000001",
        "epoch": 5,
        "model_id": "7",
        "license_id": "42",
        "payer": PAYER,
        "event_time": 1714564800,
        "units": 128,
        "price_per_unit_e6": "1500000",
        "fee_e6": str(128 * 1_500_000),
        "state_interval": [12, 3],
        "operator": OPERATOR,
        "operator_bps": 2000,
        "treasury_bps": 1000,
        "contributors_bps": 7000,
    }
    doc.update(overrides)
    return doc
