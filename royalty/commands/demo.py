"""`royalty demo`: the main job end to end on embedded defaults, from inference to a claim."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from royalty.config import load_settings


def demo(
    rounds: Annotated[int, typer.Option(help="Inferences per license.", min=1)] = 4,
    duration: Annotated[
        float | None,
        typer.Option(help="Soak run: send traffic for this many seconds instead of --rounds."),
    ] = None,
    scale: Annotated[
        int, typer.Option(help="Inferences per license in each round (load multiplier).", min=1)
    ] = 1,
    kafka: Annotated[
        bool,
        typer.Option(
            "--kafka", help="Join on the real Kafka path with faust workers (default: embedded)."
        ),
    ] = False,
    workers: Annotated[int, typer.Option(help="faust workers with --kafka.", min=1)] = 2,
    serve: Annotated[
        bool, typer.Option(help="Leave the API and the chain running after the summary.")
    ] = True,
    workdir: Annotated[
        Path | None, typer.Option(help="Where the demo keeps its state (default <data_dir>/demo).")
    ] = None,
) -> None:
    """Run the whole flow on real services: chain, indexer, Triton behind the metering gateway,
    Kafka, the stream join, epochs committed on-chain, a claim through the API, and chDB."""
    from royalty.demo.run import DemoOptions, TrafficPlan, run_demo

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        # Piped into a log: rich would fold the summary tables into 80 columns.
        console = Console(width=160)
    target = (workdir or load_settings().engine.data_dir / "demo").resolve()
    console.rule("royalty engine demo")
    options = DemoOptions(
        traffic=TrafficPlan(rounds=rounds, duration_s=duration, scale=scale),
        kafka=kafka,
        workers=workers,
        serve=serve,
    )
    run_demo(target, rounds, console, options)
