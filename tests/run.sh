#!/usr/bin/env bash
# The whole test suite: installs what the tests need, builds the guest programs, runs every
# unit and end-to-end test. This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for p in docker-registry containernetworking-plugins iproute2 skopeo iptables containerd runc busybox-static; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
if ((${#need_pkgs[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
rustup target add wasm32-wasip1 wasm32-wasip2 >/dev/null 2>&1 || rustup target add wasm32-wasip1 wasm32-wasip2

# Guests (examples/guests) are built for wasm; the e2e tests find them via WASMCRI_GUESTS.
# Their target dirs are explicit: a CARGO_TARGET_DIR from the environment must not move them.
cargo build --release --manifest-path examples/guests/Cargo.toml --target wasm32-wasip1 \
    --target-dir examples/guests/target
cargo build --release --manifest-path examples/guests/Cargo.toml --target wasm32-wasip2 \
    --target-dir examples/guests/target
cargo build --release --manifest-path examples/http-hello/Cargo.toml --target wasm32-wasip2 \
    --target-dir examples/http-hello/target
export WASMCRI_GUESTS="$PWD/examples/guests/target"

# Reuse a build cache outside the checkout when there is one (a fresh clone then only
# recompiles the workspace crates, not wasmtime).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/wasmcri-target}"
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads="${WASMCRI_TEST_THREADS:-4}"

# Fuzzing (README, "Fuzzing"): every libFuzzer target on its committed seed corpus for a short,
# fixed time, so a parser that breaks one of its promises fails the run. The targets build
# wasmcri without wasmtime (instrumenting it would cost ~20 min); the build cache lives
# outside the checkout like the one above. New corpus entries go to a scratch directory.
command -v cargo-fuzz >/dev/null ||
    env -u CARGO_TARGET_DIR cargo install cargo-fuzz --locked --version 0.13.2
fuzz_args=(-O -a -s none --target-dir "${WASMCRI_FUZZ_TARGET_DIR:-/var/tmp/wasmcri-fuzz-target}")
cargo fuzz build "${fuzz_args[@]}"
fuzz_targets=$(cargo fuzz list)
for t in $fuzz_targets; do
    scratch=$(mktemp -d)
    status=0
    cargo fuzz run "${fuzz_args[@]}" "$t" "$scratch" "fuzz/corpus/$t" -- \
        -max_total_time="${WASMCRI_FUZZ_SECONDS:-15}" -rss_limit_mb=2048 -timeout=10 \
        >"$scratch.log" 2>&1 || status=$?
    if ((status != 0)); then
        tail -n 60 "$scratch.log"
        echo "fuzz $t: crashed (exit $status); the input is under fuzz/artifacts/$t/"
        exit 1
    fi
    echo "fuzz $t: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$scratch.log" || tail -n 1 "$scratch.log")"
    rm -rf "$scratch" "$scratch.log"
done
echo "fuzz: $(wc -w <<<"$fuzz_targets") passed, 0 failed"
