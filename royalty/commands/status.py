"""`royalty status`."""

from __future__ import annotations

from royalty.commands.placeholder import not_yet


def status() -> None:
    """Lag, watermarks, open epochs, spool depth and dead letters of every component."""
    not_yet("status", "settlement")
