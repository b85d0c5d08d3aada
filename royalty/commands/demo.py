"""`royalty demo`: the main job on embedded defaults (grows as the components land)."""

from __future__ import annotations

from royalty.commands.placeholder import not_yet


def demo() -> None:
    """Run the end-to-end demo on embedded defaults."""
    not_yet("demo", "end-to-end demo")
