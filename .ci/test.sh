#!/usr/bin/env bash
# Runs every check and test of the project. Installs what the tests need when it is missing:
# Debian packages (PostgreSQL server, mosquitto clients, libcoap's coap-client) through apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
command -v coap-client-openssl >/dev/null || missing+=(libcoap3-bin)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

echo "==> formatting"
cargo fmt --all -- --check
echo "==> lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> build"
cargo build --workspace --all-targets --locked
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
