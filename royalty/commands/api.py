"""`royalty api`."""

from __future__ import annotations

from royalty.commands.placeholder import not_yet


def api() -> None:
    """Serve the public and claims API."""
    not_yet("api", "settlement")
