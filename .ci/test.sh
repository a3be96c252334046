#!/usr/bin/env bash
# Runs every check and test of the project. Installs what the tests need when it is missing:
# the wasm32-wasip2 target (plugins), Debian packages (PostgreSQL server, mosquitto clients, a
# local SMTP server (aiosmtpd) for the e-mail tests,
# libcoap's coap-client, Python's venv for componentize-py, Chromium and CJK fonts for the
# portal's browser tests) through apt-get; the portal's npm packages with `npm ci`; the JavaScript and
# Python plugin toolchains are installed by sdk/plugin-js/build-all.sh, run here before the tests
# (which also call it, and find its outputs up to date).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
python3 -m venv --help >/dev/null 2>&1 || missing+=(python3-venv)
command -v mosquitto_pub >/dev/null || missing+=(mosquitto-clients)
/usr/bin/python3 -c "import aiosmtpd" 2>/dev/null || missing+=(python3-aiosmtpd)
command -v coap-client-openssl >/dev/null || missing+=(libcoap3-bin)
[ -x /usr/bin/chromium ] || missing+=(chromium)
# (No `fc-list | grep -q` here: with pipefail, grep exiting early fails the pipe.)
[[ "$(dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null)" == *"ok installed"* ]] || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Plugin crates are WebAssembly guests, each its own workspace (as an ISV's would be).
guests=(sdk/plugin/Cargo.toml plugins/Cargo.toml)
for m in examples/plugins/*/Cargo.toml; do guests+=("$m"); done

echo "==> formatting"
cargo fmt --all -- --check
for m in "${guests[@]}"; do cargo fmt --manifest-path "$m" --all -- --check; done
echo "==> lints"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> build"
cargo build --workspace --all-targets --locked
echo "==> plugin crates (native unit tests)"
cargo test --manifest-path sdk/plugin/Cargo.toml --all-features --locked
for m in "${guests[@]:1}"; do cargo test --manifest-path "$m" --locked; done
echo "==> policy tests (policies/*_test.rego)"
# The binary the workspace build just made: `cargo run -p lotus` would resolve other features
# and build every dependency a second time.
"${CARGO_TARGET_DIR:-target}/debug/lotus" policy test policies
echo "==> JavaScript and Python plugin components"
bash sdk/plugin-js/build-all.sh "${CARGO_TARGET_DIR:-target}/script-codecs"
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
echo "==> portal (type check, production build, browser tests against the real binary)"
npm --prefix portal ci --no-audit --no-fund
npm --prefix portal run build
npm --prefix portal test
