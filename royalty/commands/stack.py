"""`royalty stack up`: run the real local services on free loopback ports until Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

from deploy.local import Anvil, KafkaBroker, Postgres, TritonServer

app = typer.Typer(help="The local service stack (Kafka, anvil, PostgreSQL, Triton).")

SERVICES = ("kafka", "anvil", "postgres", "triton")


@app.command()
def up(
    services: Annotated[
        str, typer.Option(help="Comma-separated subset of: kafka,anvil,postgres,triton.")
    ] = ",".join(SERVICES),
    workdir: Annotated[
        Path | None, typer.Option(help="Where the services keep their data (default: a temp dir).")
    ] = None,
) -> None:
    """Start the services, print the settings that point the engine at them, wait for Ctrl-C."""
    wanted = [s.strip() for s in services.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(SERVICES))
    if unknown:
        raise typer.BadParameter(f"unknown services: {', '.join(unknown)}")
    base = workdir or Path(tempfile.mkdtemp(prefix="royalty-stack-"))
    started: list[Anvil | KafkaBroker | Postgres | TritonServer] = []
    env: dict[str, str] = {}
    try:
        if "kafka" in wanted:
            kafka = KafkaBroker(base / "kafka").start()
            started.append(kafka)
            env["ROYALTY_BUS"] = "kafka"
            env["ROYALTY_KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
            typer.echo(f"kafka     {kafka.bootstrap_servers}  ({kafka.startup_seconds:.1f}s)")
        if "anvil" in wanted:
            chain = Anvil(base / "anvil").start()
            started.append(chain)
            env["ROYALTY_CHAIN_RPC_URLS"] = f'["{chain.rpc_url}"]'
            typer.echo(f"anvil     {chain.rpc_url}  ({chain.startup_seconds:.1f}s)")
        if "postgres" in wanted:
            pg = Postgres(base / "postgres").start()
            started.append(pg)
            env["ROYALTY_DB_URL"] = pg.create_database("royalty")
            typer.echo(f"postgres  {env['ROYALTY_DB_URL']}  ({pg.startup_seconds:.1f}s)")
        if "triton" in wanted:
            triton = TritonServer(base / "triton").start()
            started.append(triton)
            env["ROYALTY_TRITON_HTTP_URL"] = triton.http_url
            env["ROYALTY_TRITON_GRPC_URL"] = triton.grpc_url
            env["ROYALTY_TRITON_METRICS_URL"] = triton.metrics_url
            typer.echo(
                f"triton    http {triton.http_url} grpc {triton.grpc_url}  "
                f"({triton.startup_seconds:.1f}s)"
            )
        typer.echo("\n# point the engine at this stack:")
        for key, value in env.items():
            typer.echo(f"export {key}='{value}'")
        typer.echo(f"\n# data and logs in {base}; Ctrl-C stops everything")
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        for service in reversed(started):
            service.stop()
