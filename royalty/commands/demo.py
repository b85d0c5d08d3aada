"""`royalty demo`: the main job on embedded defaults (grows as the components land)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from royalty.config import load_settings


def demo(
    rounds: Annotated[int, typer.Option(help="Inferences per license.", min=1)] = 4,
    workdir: Annotated[
        Path | None, typer.Option(help="Where the demo keeps its state (default <data_dir>/demo).")
    ] = None,
) -> None:
    """Run the demo: real chain, indexer, Triton, metering gateway, Kafka, SQLite and chDB."""
    from royalty.demo.run import run_demo

    console = Console()
    target = (workdir or load_settings().engine.data_dir / "demo").resolve()
    console.rule("royalty engine demo")
    run_demo(target, rounds, console)
