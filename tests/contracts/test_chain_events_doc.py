"""The contracts emit exactly the events docs/chain-events.md lists (names, types, indexing)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from settlement.chain.artifacts import load_artifact

DOC = Path(__file__).resolve().parents[2] / "docs" / "chain-events.md"
SIGNATURE = re.compile(r"`(\w+\([^`]*\))`")

#: Doc section (first word of its heading) -> the artifact whose ABI must hold its events.
SECTION_CONTRACT = {
    "ModelRegistry": "ModelRegistry",
    "LicenseNFT": "LicenseNFT",
    "Staking": "Staking",
    "RoyaltyPolicy": "RoyaltyPolicy",
    "Governance": "RoyaltyGovernor",
    "RoyaltyDistributor": "RoyaltyDistributor",
}


def documented_events() -> list[tuple[str, str]]:
    """(contract, signature) of every event the doc lists, per section."""
    found: list[tuple[str, str]] = []
    contract: str | None = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            contract = SECTION_CONTRACT.get(line[3:].split()[0])
        elif line.startswith("- ") and contract is not None:
            found += [(contract, sig) for sig in SIGNATURE.findall(line)]
    return found


def abi_signature(event: dict[str, Any]) -> str:
    params = [
        f"{p['type']}{' indexed' if p['indexed'] else ''} {p['name']}" for p in event["inputs"]
    ]
    return f"{event['name']}({', '.join(params)})"


def test_the_doc_lists_events_of_every_contract() -> None:
    assert {c for c, _ in documented_events()} == set(SECTION_CONTRACT.values())


@pytest.mark.parametrize(("contract", "signature"), documented_events())
def test_documented_event_is_in_the_abi_exactly(contract: str, signature: str) -> None:
    events = {e["name"]: e for e in load_artifact(contract).abi if e["type"] == "event"}
    name = signature.split("(")[0]
    assert name in events, f"{contract} emits no {name}"
    assert abi_signature(events[name]) == signature
