"""`royalty deploy`: deploy the contracts (lands with the contracts work)."""

from __future__ import annotations

from royalty.commands.placeholder import not_yet


def deploy() -> None:
    """Deploy the whole contract system to an RPC URL and write the deployment manifest."""
    not_yet("deploy", "contracts")
