#!/usr/bin/env bash
# The whole test suite: installs what the tests need, builds the guest programs, runs every
# unit and end-to-end test. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for p in docker-registry containernetworking-plugins iproute2 skopeo iptables; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip1 wasm32-wasip2

# Guests (examples/guests) are built for wasm; the e2e tests find them via WASMCRI_GUESTS.
cargo build --release --manifest-path examples/guests/Cargo.toml --target wasm32-wasip1
cargo build --release --manifest-path examples/guests/Cargo.toml --target wasm32-wasip2
cargo build --release --manifest-path examples/http-hello/Cargo.toml --target wasm32-wasip2
export WASMCRI_GUESTS="$PWD/examples/guests/target"

# Reuse a build cache outside the checkout when there is one (a fresh clone then only
# recompiles the workspace crates, not wasmtime).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/wasmcri-target}"
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads="${WASMCRI_TEST_THREADS:-4}"
