"""`royalty gateway`, `royalty reconcile` and `royalty metering ...`: metering in front of Triton.

royalty metering keygen                   signing key + key ring entry (rotate with --rotate)
royalty metering add-key --license 42 --model 1    issue an API key (printed once)
royalty metering revoke-key <kid>
royalty metering add-operator acme --keyid <keyid>  token for the HTTP ingest
royalty metering spool                    what the spool holds (gateway stopped)
royalty metering ingest                   serve the HTTP ingest (POST /v1/usage)
royalty gateway                           the KServe v2 metering proxy
royalty reconcile                         compare Triton's counts with metered usage
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from metering.errors import MeteringError
from metering.keyfiles import (
    load_api_key_records,
    load_key_ring,
    load_operator_records,
    load_signing_key,
    read_json,
    save_api_key_records,
    save_operator_records,
    write_json_atomic,
)
from metering.settings import pepper, resolve_paths
from metering.signing import ALGORITHMS, SigningKey
from royalty.config import get_settings

metering_app = typer.Typer(help="Metering keys, operators, spool and HTTP ingest.")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def gateway(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings).")] = None,
    port: Annotated[int | None, typer.Option(help="Bind port (default: settings).")] = None,
) -> None:
    """Metering gateway in front of Triton (KServe v2 HTTP)."""
    from metering.server import serve

    try:
        serve(get_settings(), host, port)
    except MeteringError as exc:
        _fail(str(exc))


def reconcile(
    once: Annotated[bool, typer.Option(help="One window, print the report, exit.")] = False,
    window: Annotated[
        float | None, typer.Option(help="Window seconds (default: reconcile_interval_s).")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve the reconciler's Prometheus metrics on this port.")
    ] = None,
) -> None:
    """Compare Triton's success counts with the usage events of the same models and window."""
    from metering.reconcile_runner import run_reconciler

    try:
        reports = run_reconciler(
            get_settings(), once=once, window_s=window, metrics_port=metrics_port
        )
    except MeteringError as exc:
        _fail(str(exc))
        return
    for r in reports:
        typer.echo(f"{r.model}: triton {r.triton}, metered {r.metered}, drift {r.drift}")
    if any(r.drift > r.tolerance for r in reports):
        raise typer.Exit(code=3)


@metering_app.command()
def keygen(
    algorithm: Annotated[str, typer.Option(help=f"One of {', '.join(ALGORITHMS)}.")] = "ed25519",
    rotate: Annotated[
        bool, typer.Option(help="Replace an existing signing key; the old one stays verifiable.")
    ] = False,
    retire_after: Annotated[
        int | None,
        typer.Option(
            help="With --rotate: the old key stops verifying events this many seconds from now."
        ),
    ] = None,
) -> None:
    """Create this node's signing key and add its verification key to the key ring."""
    if algorithm not in ALGORITHMS:
        _fail(f"unknown algorithm {algorithm!r}; choose one of {', '.join(ALGORITHMS)}")
    settings = get_settings()
    paths = resolve_paths(settings)
    ring = load_key_ring(paths.key_ring)
    if paths.signing_key.exists():
        if not rotate:
            _fail(f"{paths.signing_key} exists; pass --rotate to replace it")
        old = load_signing_key(paths.signing_key)
        if retire_after is not None and old.keyid in ring:
            ring = ring.retire(old.keyid, int(time.time()) + retire_after)
        backup = paths.signing_key.with_name(f"{paths.signing_key.name}.{old.keyid}.old")
        write_json_atomic(backup, old.to_json())
    key = SigningKey.generate(algorithm, prefix=settings.metering.node_id)  # type: ignore[arg-type]
    ring = ring.with_key(key.verification_key())
    write_json_atomic(paths.signing_key, key.to_json())
    write_json_atomic(
        paths.key_ring, ring.to_json(), mode=0o644 if algorithm == "ed25519" else 0o600
    )
    typer.echo(f"signing key {key.keyid} ({algorithm}) -> {paths.signing_key}")
    typer.echo(f"key ring ({len(ring)} keys) -> {paths.key_ring}")


@metering_app.command("add-key")
def add_key(
    license_id: Annotated[int, typer.Option("--license", help="License NFT token id.")],
    model_id: Annotated[int, typer.Option("--model", help="On-chain model id of the license.")],
    label: Annotated[str, typer.Option(help="Free text to recognise the key by.")] = "",
) -> None:
    """Issue an API key for a license; the key is printed once and stored hashed."""
    from metering.auth import issue_key

    settings = get_settings()
    paths = resolve_paths(settings)
    try:
        secret_pepper = pepper(settings.metering)
    except MeteringError as exc:
        _fail(str(exc))
        return
    plain, record = issue_key(secret_pepper, license_id, model_id, label)
    save_api_key_records(paths.api_keys, [*load_api_key_records(paths.api_keys), record])
    typer.echo(plain)
    typer.echo(
        f"# key id {record.kid}: license {license_id}, model {model_id} -> {paths.api_keys}",
        err=True,
    )


@metering_app.command("revoke-key")
def revoke_key(kid: Annotated[str, typer.Argument(help="The key id (`rk_<kid>_...`).")]) -> None:
    """Revoke an API key (effective within a second on a running gateway)."""
    paths = resolve_paths(get_settings())
    records = load_api_key_records(paths.api_keys)
    if kid not in {r.kid for r in records}:
        _fail(f"no API key {kid!r} in {paths.api_keys}")
    from dataclasses import replace

    save_api_key_records(
        paths.api_keys, [replace(r, revoked=True) if r.kid == kid else r for r in records]
    )
    typer.echo(f"revoked {kid}")


@metering_app.command("add-operator")
def add_operator(
    operator: Annotated[str, typer.Argument(help="Operator name.")],
    keyid: Annotated[
        list[str], typer.Option(help="Signing key id the operator's events may carry (repeat).")
    ],
) -> None:
    """Issue an HTTP ingest token for an operator (printed once, stored hashed)."""
    from metering.operators import issue_operator_token

    settings = get_settings()
    paths = resolve_paths(settings)
    try:
        secret_pepper = pepper(settings.metering)
    except MeteringError as exc:
        _fail(str(exc))
        return
    plain, record = issue_operator_token(secret_pepper, operator, keyid)
    save_operator_records(paths.operators, [*load_operator_records(paths.operators), record])
    typer.echo(plain)


@metering_app.command("trust-key")
def trust_key(
    ring_file: Annotated[Path, typer.Argument(help="Another node's key ring JSON.")],
) -> None:
    """Merge another metering node's verification keys into this key ring."""
    from metering.signing import KeyRing

    paths = resolve_paths(get_settings())
    ring = load_key_ring(paths.key_ring)
    for key in KeyRing.from_json(read_json(ring_file)).values():
        ring = ring.with_key(key)
    write_json_atomic(paths.key_ring, ring.to_json())
    typer.echo(f"key ring now holds {len(ring)} keys")


@metering_app.command()
def spool() -> None:
    """What the spool holds (the gateway must be stopped: the spool has one owner)."""
    from metering.spool import FileSpool

    settings = get_settings()
    paths = resolve_paths(settings)
    try:
        opened = FileSpool(
            paths.spool_dir,
            max_bytes=settings.metering.spool_max_bytes,
            segment_bytes=settings.metering.spool_segment_bytes,
        )
    except MeteringError as exc:
        _fail(str(exc))
        return
    r = opened.recovery
    typer.echo(
        f"{paths.spool_dir}: {r.pending_records} events ({r.pending_bytes} bytes) not yet in "
        f"Kafka, {r.segments} segments, {r.truncated_bytes} torn bytes truncated"
    )
    opened.close()


@metering_app.command()
def ingest(
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Bind port.")] = 8011,
) -> None:
    """Serve the HTTP ingest (`POST /v1/usage`) for operators without Kafka access."""
    import uvicorn

    from api.ingest_app import create_ingest_app

    settings = get_settings()
    try:
        app = create_ingest_app(settings)
    except MeteringError as exc:
        _fail(str(exc))
        return
    uvicorn.run(app, host=host, port=port, access_log=False, log_level=settings.engine.log_level)
