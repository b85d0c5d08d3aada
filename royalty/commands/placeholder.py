"""Commands whose component has not landed yet: they say so and exit non-zero."""

from __future__ import annotations

import typer


def not_yet(component: str, issue: str) -> None:
    """Exit with a clear message for a component that is not implemented yet."""
    typer.secho(
        f"`royalty {component}` is not yet implemented (it lands with the {issue} work).",
        fg=typer.colors.YELLOW,
        err=True,
    )
    raise typer.Exit(code=2)
