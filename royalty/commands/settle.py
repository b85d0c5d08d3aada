"""`royalty settle`."""

from __future__ import annotations

from royalty.commands.placeholder import not_yet


def settle() -> None:
    """Close epochs, compute distributions and commit them on-chain."""
    not_yet("settle", "settlement")
