#!/usr/bin/env bash
# Runs every test of the workspace: unit, integration, property and
# conformance tests (with cargo-nextest), then the doc tests (which nextest
# does not run). Installs cargo-nextest if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi

cargo nextest run --workspace --locked --no-fail-fast
cargo test --workspace --locked --doc
