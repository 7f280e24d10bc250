#!/usr/bin/env bash
# Runs every test of the workspace: the doc tests (which nextest does not
# run), then unit, integration, property and conformance tests with
# cargo-nextest, whose summary closes the output. Installs cargo-nextest if
# it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi

cargo test --workspace --locked --doc
cargo nextest run --workspace --locked --no-fail-fast
