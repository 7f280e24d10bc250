#!/usr/bin/env bash
# The browser holder's unit tests in the wasm build (crates/confidant-web,
# tests/wasm.rs and the crate's own tests), run by wasm-bindgen-test-runner
# under Node. Node has no IndexedDB: the npm package fake-indexeddb (in
# examples/web-holder's package-lock.json) is preloaded, so the crate's
# IndexedDB code runs against that implementation of the API; the real
# browser's is covered by tests/tests/web.rs in Chromium.
#
# Needs what ./scripts/web-build.sh installs (the wasm32 target,
# wasm-bindgen-cli at the locked version, the npm packages): run it first.
set -euo pipefail
cd "$(dirname "$0")/.."

FAKE_IDB="$PWD/examples/web-holder/node_modules/fake-indexeddb/auto/index.mjs"
if [ ! -f "$FAKE_IDB" ]; then
    (cd examples/web-holder && npm ci --no-audit --no-fund)
fi
export NODE_OPTIONS="--import=file://$FAKE_IDB"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
cargo test --locked --target wasm32-unknown-unknown -p confidant-web
