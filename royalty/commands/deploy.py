"""`royalty deploy`: deploy the whole contract system and write the deployment manifest.

On anvil's dev chain (id 31337) everything has a default: anvil account 0 deploys, account 1
settles (or the configured settler key), 2 guards, 3 receives the treasury share, and a demo
payment token is deployed and minted to the settler. On any other chain the deployer key (env
`ROYALTY_DEPLOYER_PRIVATE_KEY`), the settler, guardian, treasury and payment token are required.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from royalty.config import load_settings
from settlement.chain import (
    DEV_CHAIN_ID,
    ChainClient,
    ChainError,
    DeploymentConfig,
    DeploymentConfigError,
    account_from_key,
    deploy_system,
    dev_account,
)

# The library's defaults, shown in --help (the addresses are placeholders, never used).
_DEFAULTS = DeploymentConfig(settler="", guardian="", treasury="")


def _dev_default(value: str | None, what: str, dev_index: int, chain_id: int) -> str:
    """`value`, else anvil account `dev_index` on the dev chain, else a usage error."""
    if value:
        return value
    if chain_id == DEV_CHAIN_ID:
        return dev_account(dev_index).address
    raise DeploymentConfigError(f"--{what} is required on chain {chain_id}")


def deploy(
    rpc_url: Annotated[
        str | None, typer.Option(help="JSON-RPC URL. Default: the first of chain.rpc_urls.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where to write the manifest. Default: chain.manifest_path.")
    ] = None,
    private_key: Annotated[
        str | None,
        typer.Option(
            envvar="ROYALTY_DEPLOYER_PRIVATE_KEY",
            help="Deployer key (hex). Default on the dev chain only: anvil account 0.",
        ),
    ] = None,
    settler: Annotated[
        str | None,
        typer.Option(help="Settler address. Default: the settler key's, or anvil account 1."),
    ] = None,
    guardian: Annotated[
        str | None, typer.Option(help="Guardian address. Default on the dev chain: account 2.")
    ] = None,
    treasury: Annotated[
        str | None, typer.Option(help="Treasury address. Default on the dev chain: account 3.")
    ] = None,
    payment_token: Annotated[
        str | None,
        typer.Option(help="Existing ERC-20 royalties are paid in. Default on the dev chain: demo."),
    ] = None,
    dispute_window_s: Annotated[
        int | None, typer.Option(help="Seconds from commit to claimable. Default: epochs setting.")
    ] = None,
    sweep_delay_s: Annotated[
        int, typer.Option(help="Seconds from claimable to sweepable (>= 30 days).")
    ] = _DEFAULTS.sweep_delay_s,
    stake_cooldown_s: Annotated[
        int, typer.Option(help="Seconds between unstake and withdraw.")
    ] = _DEFAULTS.stake_cooldown_s,
    voting_delay_blocks: Annotated[
        int, typer.Option(help="Blocks between proposal and voting.")
    ] = _DEFAULTS.voting_delay_blocks,
    voting_period_blocks: Annotated[
        int, typer.Option(help="Blocks of voting.")
    ] = _DEFAULTS.voting_period_blocks,
    quorum_percent: Annotated[
        int, typer.Option(help="Quorum, percent of the governance supply.")
    ] = _DEFAULTS.quorum_percent,
    timelock_delay_s: Annotated[
        int, typer.Option(help="Seconds between queue and execute.")
    ] = _DEFAULTS.timelock_delay_s,
) -> None:
    """Deploy the whole contract system to an RPC URL and write the deployment manifest."""
    settings = load_settings()
    url = rpc_url or settings.chain.rpc_urls[0]
    path = out or settings.manifest_path
    try:
        client = ChainClient.connect(url)
        chain_id = client.chain_id
        if private_key:
            deployer = account_from_key(private_key)
        elif chain_id == DEV_CHAIN_ID:
            deployer = dev_account(0)
        else:
            raise DeploymentConfigError(
                f"chain {chain_id} is not the dev chain: pass --private-key "
                "or set ROYALTY_DEPLOYER_PRIVATE_KEY"
            )
        settler_key = settings.chain.settler_private_key
        if not settler and settler_key is not None:
            settler = account_from_key(settler_key.get_secret_value()).address
        if dispute_window_s is None:
            dispute_window_s = settings.epochs.dispute_window_s
        config = DeploymentConfig(
            settler=_dev_default(settler, "settler", 1, chain_id),
            guardian=_dev_default(guardian, "guardian", 2, chain_id),
            treasury=_dev_default(treasury, "treasury", 3, chain_id),
            payment_token=payment_token,
            sweep_delay_s=sweep_delay_s,
            stake_cooldown_s=stake_cooldown_s,
            voting_delay_blocks=voting_delay_blocks,
            voting_period_blocks=voting_period_blocks,
            quorum_percent=quorum_percent,
            timelock_delay_s=timelock_delay_s,
            dispute_window_s=dispute_window_s,
        )
        manifest = deploy_system(client, deployer, config)
        manifest.write(path)
    except DeploymentConfigError as exc:
        typer.secho(f"royalty deploy: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=2) from exc
    except ChainError as exc:
        typer.secho(f"royalty deploy failed: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from exc

    typer.echo(f"deployed on chain {manifest.chain_id} from block {manifest.deploy_block}")
    for key, record in manifest.contracts.items():
        typer.echo(f"  {key:<20} {record.address}  ({record.contract})")
    typer.echo(f"manifest written to {path}")
