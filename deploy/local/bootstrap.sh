#!/usr/bin/env bash
# Installs everything the engine, its demo and its tests need on a fresh Debian machine, and
# nothing twice: each step is skipped when its inputs have not changed since the last run.
#   - system packages: PostgreSQL (Debian), Java 17 + Maven, Node.js + npm (checked, installed if missing)
#   - Python virtual environment .venv with the package and its pinned dependencies
#   - the native Ed25519 library (metering/native, Rust, crates pinned by Cargo.lock) when cargo
#     is on the machine; without it the engine verifies with libsodium, about 3x slower
#   - npm packages for the contracts toolchain (anvil, solc-js, OpenZeppelin), from package-lock.json
#   - Apache Kafka broker jars from Maven Central into the cache directory (outside git)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cache=${ROYALTY_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/royalty-engine}
mkdir -p "$cache"
start=$(date +%s)
say() { printf '[bootstrap] %s\n' "$*"; }
fingerprint() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }

# --- system packages -------------------------------------------------------------------------
need_apt=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v npm >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
  # initdb refuses to run as root; the local stack runs PostgreSQL as this account.
  useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
fi

# --- Python ----------------------------------------------------------------------------------
py=${PYTHON:-python3}
"$py" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || { echo "Python >= 3.11 is required (set PYTHON=...)" >&2; exit 1; }
stamp=.venv/.bootstrap-$(fingerprint pyproject.toml constraints.txt)
if [ ! -f "$stamp" ]; then
  say "creating .venv and installing Python packages (pinned by constraints.txt)"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade "pip>=24"
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  rm -f .venv/.bootstrap-*
  touch "$stamp"
else
  say "Python packages up to date"
fi

# --- native Ed25519 library (batch verification) ---------------------------------------------
native=metering/native
lib="$native/target/release/libroyalty_ed25519.so"
rstamp="$native/target/.bootstrap-$(fingerprint "$native/Cargo.toml" "$native/Cargo.lock" "$native"/src/*.rs)"
# rustup installs cargo under ~/.cargo/bin, which a non-login shell may not have on its PATH.
cargo=$(command -v cargo || { [ -x "$HOME/.cargo/bin/cargo" ] && echo "$HOME/.cargo/bin/cargo"; } || true)
if [ -f "$rstamp" ] && [ -f "$lib" ]; then
  say "native Ed25519 library up to date"
elif [ -n "$cargo" ]; then
  say "building the native Ed25519 library with cargo (crates pinned by Cargo.lock)"
  "$cargo" build -q --release --locked --manifest-path "$native/Cargo.toml" --target-dir "$native/target"
  rm -f "$native"/target/.bootstrap-*
  touch "$rstamp"
else
  say "cargo not found: the engine verifies Ed25519 signatures with libsodium (slower);" \
    "install Rust (https://rustup.rs) and run this again to build metering/native"
fi

# --- npm: anvil, solc-js, OpenZeppelin -------------------------------------------------------
nstamp=contracts/node_modules/.bootstrap-$(fingerprint contracts/package-lock.json)
if [ ! -f "$nstamp" ]; then
  say "installing npm packages for contracts/ (npm ci)"
  (cd contracts && npm ci --no-audit --no-fund --loglevel=error)
  touch "$nstamp"
else
  say "npm packages up to date"
fi

# --- Kafka broker jars -----------------------------------------------------------------------
kver=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/local/kafka-broker/pom.xml)
kdir="$cache/kafka-$kver-$(fingerprint deploy/local/kafka-broker/pom.xml)"
if [ ! -f "$kdir/.complete" ]; then
  say "resolving Apache Kafka $kver broker jars with Maven into $kdir"
  rm -rf "$kdir"
  mvn -q -B -f deploy/local/kafka-broker/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$kdir/libs" -DincludeScope=runtime
  touch "$kdir/.complete"
else
  say "Kafka $kver jars cached in $kdir"
fi

say "done in $(( $(date +%s) - start ))s"
