"""anvil smoke: block number and a mined transaction through web3.py."""

from __future__ import annotations

import pytest
from web3 import Web3

from deploy.local import Anvil

pytestmark = pytest.mark.anvil


def test_block_number_and_mined_transaction(anvil_chain: Anvil) -> None:
    w3 = Web3(Web3.HTTPProvider(anvil_chain.rpc_url))
    assert w3.eth.chain_id == anvil_chain.chain_id
    sender, receiver = w3.eth.accounts[0], w3.eth.accounts[1]
    before_block = w3.eth.block_number
    before_balance = w3.eth.get_balance(receiver)
    tx = w3.eth.send_transaction({"from": sender, "to": receiver, "value": 12345})
    receipt = w3.eth.wait_for_transaction_receipt(tx, timeout=30)
    assert receipt["status"] == 1
    assert receipt["blockNumber"] == before_block + 1
    assert w3.eth.block_number == before_block + 1
    assert w3.eth.get_balance(receiver) == before_balance + 12345


def test_snapshot_and_revert(anvil_chain: Anvil) -> None:
    """The chain controls later tests rely on (snapshots, mining) are really there."""
    w3 = Web3(Web3.HTTPProvider(anvil_chain.rpc_url))
    snap = anvil_chain.rpc("evm_snapshot")
    start = w3.eth.block_number
    anvil_chain.rpc("anvil_mine", [hex(5)])
    assert w3.eth.block_number == start + 5
    assert anvil_chain.rpc("evm_revert", [snap]) is True
    assert w3.eth.block_number == start
