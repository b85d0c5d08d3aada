"""The `royalty` command line: one subcommand per long-running component, plus tools."""

from __future__ import annotations

import typer

from deploy.local.errors import LocalStackError
from royalty.commands import analytics as analytics_cmd
from royalty.commands import config as config_cmd
from royalty.commands import db as db_cmd
from royalty.commands import deploy as deploy_cmd
from royalty.commands import gateway as gateway_cmd
from royalty.commands import indexer as indexer_cmd
from royalty.commands import schemas as schemas_cmd
from royalty.commands import stack as stack_cmd
from royalty.commands.api import api
from royalty.commands.demo import demo
from royalty.commands.settle import settle
from royalty.commands.status import status
from royalty.commands.verify import verify
from royalty.commands.worker import worker

app = typer.Typer(
    name="royalty",
    help="Indexer and royalty settlement engine for community-owned AI models.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(db_cmd.app, name="db")
app.add_typer(stack_cmd.app, name="stack")
app.add_typer(schemas_cmd.app, name="schemas")
app.add_typer(indexer_cmd.app, name="indexer")
app.add_typer(analytics_cmd.app, name="analytics")
app.add_typer(gateway_cmd.metering_app, name="metering")
app.command()(gateway_cmd.gateway)
app.command()(gateway_cmd.reconcile)
app.command()(demo)
app.command()(worker)
app.command()(deploy_cmd.deploy)
app.command()(settle)
app.command()(verify)
app.command()(api)
app.command()(status)


def main() -> None:
    """Entry point: run the CLI, turning local stack failures into one clear line."""
    try:
        app()
    except LocalStackError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
