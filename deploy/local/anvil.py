"""anvil, the local Ethereum node, from the pinned npm package."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.local.process import ManagedProcess, free_port
from deploy.local.tools import anvil_binary

# anvil's well-known development mnemonic: accounts are funded and their keys are public.
DEV_MNEMONIC = "test test test test test test test test test test test junk"


@dataclass
class Anvil:
    """A local chain on a free port. `block_time=None` mines a block per transaction.

    Automining gives every block a later timestamp than its parent, so a burst of transactions
    runs the chain's clock ahead of the wall clock; `genesis_timestamp` in the past leaves room
    to pin later blocks to wall-clock times with `evm_setNextBlockTimestamp`.
    """

    workdir: Path
    chain_id: int = 31337
    accounts: int = 20
    block_time: float | None = None
    genesis_timestamp: int | None = None
    port: int = field(default_factory=free_port)
    start_timeout: float = 30.0
    _process: ManagedProcess | None = None
    startup_seconds: float = 0.0

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """One raw JSON-RPC call (used for readiness and for anvil_* test controls)."""
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
        req = urllib.request.Request(  # noqa: S310 - loopback URL built above
            self.rpc_url, data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as resp:  # noqa: S310
            reply = json.loads(resp.read())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def start(self) -> Anvil:
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(anvil_binary()),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--accounts",
            str(self.accounts),
            "--mnemonic",
            DEV_MNEMONIC,
        ]
        if self.block_time is not None:
            argv += ["--block-time", str(self.block_time)]
        if self.genesis_timestamp is not None:
            argv += ["--timestamp", str(self.genesis_timestamp)]
        self._process = ManagedProcess("anvil", argv, self.workdir / "anvil.log")
        self._process.start()
        self.startup_seconds = self._process.wait_ready(
            lambda: int(self.rpc("eth_chainId"), 16) == self.chain_id, self.start_timeout
        )
        return self

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

    def kill(self) -> None:
        if self._process is not None:
            self._process.kill()

    def running(self) -> bool:
        return self._process is not None and self._process.running()
