"""Where the programs of the local stack live once `deploy/local/bootstrap.sh` has run.

Each locator honours an environment variable first, so an operator can point at a system
install, and otherwise looks where the bootstrap puts things. A missing tool raises
`ToolMissingError` with the command that installs it: tests fail with that message rather
than skip, so a broken install cannot pass CI.
"""

from __future__ import annotations

import glob
import os
import shutil
from pathlib import Path

from deploy.local.errors import ToolMissingError

REPO_ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP_HINT = "run `bash deploy/local/bootstrap.sh` (or `make test`) first"


def cache_dir() -> Path:
    """Download cache shared by every checkout on the machine (jars, etc.)."""
    env = os.environ.get("ROYALTY_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "royalty-engine"


def node_modules() -> Path:
    return REPO_ROOT / "contracts" / "node_modules"


def anvil_binary() -> Path:
    """The anvil binary from the pinned npm package `@foundry-rs/anvil-linux-amd64`."""
    env = os.environ.get("ROYALTY_ANVIL_BIN")
    if env:
        return Path(env)
    path = node_modules() / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
    if not path.exists():
        raise ToolMissingError(f"anvil not found at {path}; {BOOTSTRAP_HINT}")
    return path


def kafka_classpath() -> str:
    """Classpath of the Kafka broker jars resolved by Maven into the cache."""
    env = os.environ.get("ROYALTY_KAFKA_LIBS")
    candidates = (
        [Path(env)]
        if env
        else sorted(
            (Path(p).parent / "libs" for p in glob.glob(str(cache_dir() / "kafka-*/.complete"))),
            key=lambda p: p.stat().st_mtime,
            reverse=True,
        )
    )
    for libs in candidates:
        if any(libs.glob("kafka_2.13-*.jar")):
            return str(libs / "*")
    raise ToolMissingError(f"Kafka broker jars not found under {cache_dir()}; {BOOTSTRAP_HINT}")


def java_binary() -> str:
    java = shutil.which("java")
    if java is None:
        raise ToolMissingError(
            "java (17+) not found on PATH; apt-get install openjdk-17-jre-headless"
        )
    return java


def postgres_bindir() -> Path:
    """Directory of initdb/postgres from Debian's `postgresql` package (newest major)."""
    env = os.environ.get("ROYALTY_PG_BINDIR")
    if env:
        return Path(env)
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not found:
        raise ToolMissingError(
            f"PostgreSQL server not installed; apt-get install postgresql, or {BOOTSTRAP_HINT}"
        )
    return Path(found[-1]).parent


def solcjs_entry() -> Path:
    """solc-js's wrapper module, for compiling the contracts with Node."""
    path = node_modules() / "solc" / "wrapper.js"
    if not path.exists():
        raise ToolMissingError(f"solc (npm) not found at {path}; {BOOTSTRAP_HINT}")
    return path


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise ToolMissingError("node (20+) not found on PATH; apt-get install nodejs npm")
    return node
