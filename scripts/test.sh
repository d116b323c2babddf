#!/usr/bin/env bash
# Runs Hearth's whole test suite: lints, the static agent, every crate's
# unit and integration tests, the end-to-end tests. Needs root for the
# tests that use namespaces, mounts and loop devices (they say so and skip
# otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --quiet --workspace --all-targets -- -D warnings
echo "== building the static agent"
HEARTH_AGENT_BIN="$(bash scripts/build-agent.sh)"
export HEARTH_AGENT_BIN
echo "agent: $HEARTH_AGENT_BIN"
echo "== building hearthctl for the CLI tests"
cargo build --quiet -p hearthctl
export HEARTHCTL_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/hearthctl"
echo "== cargo test"
# --show-output: tests that skip (e.g. no Firecracker binary) say why.
cargo test --workspace -- --show-output 2>&1
