"""`royalty verify`."""

from __future__ import annotations

from royalty.commands.placeholder import not_yet


def verify() -> None:
    """Recompute an epoch from public inputs and check it against the chain."""
    not_yet("verify", "settlement")
