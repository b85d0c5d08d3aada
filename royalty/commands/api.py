"""`royalty api`: serve the public and claims API, and manage its operator API keys.

    royalty api                                   # serve on [api] host:port
    royalty api --workers 2 --port 9000
    royalty api --create-key ops --scopes admin   # prints the key once; only its hash is kept
    royalty api --revoke-key 0123456789abcdef
    royalty api --list-keys

Keys need `ROYALTY_API_KEY_PEPPER` (or `[api] key_pepper`): the HMAC pepper of stored hashes.
"""

from __future__ import annotations

from typing import Annotated

import typer

from royalty.config import Settings, get_settings


def _key_command(
    settings: Settings,
    create_key_name: str | None,
    scopes: list[str],
    revoke_key_id: str | None,
    list_keys: bool,
) -> None:
    from api.auth import InvalidScopeError, create_key, revoke_key
    from api.auth import list_keys as all_keys
    from schemas.engine import create_engine

    engine = create_engine(settings.database_url)
    try:
        if list_keys:
            with engine.connect() as conn:
                for key in all_keys(conn):
                    state = "revoked" if key.revoked_at else "active"
                    scope_list = ",".join(sorted(key.scopes))
                    typer.echo(f"{key.key_id}  {state:7}  {scope_list:20}  {key.name}")
            return
        if revoke_key_id is not None:
            with engine.begin() as conn:
                revoked = revoke_key(conn, revoke_key_id)
            if revoked is None:
                typer.secho(f"error: no API key {revoke_key_id}", fg=typer.colors.RED, err=True)
                raise typer.Exit(1)
            typer.echo(f"revoked {revoked.key_id} ({revoked.name})")
            return
        assert create_key_name is not None
        if settings.api.key_pepper is None:
            typer.secho(
                "error: set ROYALTY_API_KEY_PEPPER ([api] key_pepper) before creating keys",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(1)
        pepper = settings.api.key_pepper.get_secret_value().encode()
        try:
            with engine.begin() as conn:
                created = create_key(conn, name=create_key_name, scopes=scopes, pepper=pepper)
        except InvalidScopeError as exc:
            typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
            raise typer.Exit(1) from exc
        typer.echo(created.secret)
        typer.secho(
            f"key {created.key.key_id} ({','.join(sorted(created.key.scopes))}): store it now, "
            "it is not shown again",
            err=True,
        )
    finally:
        engine.dispose()


def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: [api] host).")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port (default: [api] port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="uvicorn worker processes (default: [api] workers).")
    ] = None,
    create_key: Annotated[
        str | None, typer.Option("--create-key", help="Create an API key with this name.")
    ] = None,
    scopes: Annotated[
        list[str] | None, typer.Option("--scopes", help="Scopes of the created key (repeat).")
    ] = None,
    revoke_key: Annotated[
        str | None, typer.Option("--revoke-key", help="Revoke the API key with this id.")
    ] = None,
    list_keys: Annotated[bool, typer.Option("--list-keys", help="List API keys.")] = False,
) -> None:
    """Serve the public and claims API."""
    settings = get_settings()
    if create_key is not None or revoke_key is not None or list_keys:
        _key_command(settings, create_key, scopes or ["admin"], revoke_key, list_keys)
        return
    import uvicorn

    uvicorn.run(
        "api.app:app_from_settings",
        factory=True,
        host=host or settings.api.host,
        port=port or settings.api.port,
        workers=workers or settings.api.workers,
        log_level=settings.engine.log_level,
        access_log=False,
    )
