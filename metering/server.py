"""Composition root of the metering gateway: settings in, a running server out.

python -m metering.server        # what `royalty gateway` runs; settings from env/TOML
"""

from __future__ import annotations

import uvicorn

from metering.errors import ConfigurationError
from metering.events import UsageEventFactory
from metering.gateway import GatewayConfig, MeteringGateway
from metering.grpc_gateway import GrpcGateway
from metering.keyfiles import (
    load_key_ring,
    load_license_directory,
    load_signing_key,
    reloading_api_keys,
)
from metering.metrics import MeteringMetrics
from metering.settings import billing_table, build_producer, pepper, resolve_paths
from metering.signing import Signer
from metering.wallet_auth import WalletVerifier
from royalty.config import Settings, get_settings
from royalty.logging import configure_logging


def build_gateway(settings: Settings) -> MeteringGateway:
    """The gateway app and its started durable producer (closed at lifespan shutdown), with
    its gRPC side when `metering.grpc_port` is set (served from lifespan startup on)."""
    m = settings.metering
    paths = resolve_paths(settings)
    billing = billing_table(m)
    if not billing:
        raise ConfigurationError(
            "no metered models: add [metering.models.<triton model>] tables (model_id, metric)"
        )
    signing_key = load_signing_key(paths.signing_key)
    ring = load_key_ring(paths.key_ring)
    if signing_key.keyid not in ring:
        # The stream processor verifies with the ring: an event signed under a key it does not
        # hold would be dead-lettered as `bad_signature`, so refuse to start instead.
        raise ConfigurationError(
            f"signing key {signing_key.keyid} is not in the key ring {paths.key_ring}: "
            "add it with `royalty metering keygen` (or rotate)"
        )
    keys = reloading_api_keys(paths.api_keys, pepper(m))
    wallet = (
        WalletVerifier(load_license_directory(paths.licenses), m.wallet_max_skew_s)
        if paths.licenses is not None
        else None
    )
    metrics = MeteringMetrics()
    producer = build_producer(settings, metrics).start()
    gateway = MeteringGateway(
        config=GatewayConfig(
            triton_url=settings.triton.http_url,
            max_body_bytes=m.max_body_bytes,
            auth_metadata=m.auth_metadata,
            upstream_timeout_s=m.upstream_timeout_s,
            upstream_connections=m.upstream_connections,
        ),
        billing=billing,
        api_keys=keys.get,
        events=UsageEventFactory(m.node_id, Signer(signing_key)),
        producer=producer,
        metrics=metrics,
        wallet=wallet,
        on_shutdown=producer.close,
    )
    if m.grpc_port is not None:
        gateway.companions.append(
            GrpcGateway(
                gateway,
                triton_url=settings.triton.grpc_url,
                host=m.host,
                port=m.grpc_port,
                # A body the HTTP side takes, plus protobuf's framing.
                max_message_bytes=m.max_body_bytes + 64 * 1024,
            )
        )
    return gateway


def serve(settings: Settings, host: str | None = None, port: int | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT (in-flight requests finish first)."""
    configure_logging(settings.engine)
    app = build_gateway(settings)
    uvicorn.run(
        app,
        host=host or settings.metering.host,
        port=port or settings.metering.port,
        # libuv's event loop and llhttp's parser: about half the per-request CPU of the
        # pure-Python asyncio loop and h11 on this path.
        http="httptools",
        loop="uvloop",
        lifespan="on",
        access_log=False,
        log_level=settings.engine.log_level,
        timeout_graceful_shutdown=10,
    )


def main() -> None:
    """Entry point of `python -m metering.server`."""
    serve(get_settings())


if __name__ == "__main__":
    main()
