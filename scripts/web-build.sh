#!/usr/bin/env bash
# Builds the browser holder: crates/confidant-web for wasm32-unknown-unknown
# (release: fat LTO, one codegen unit), its JavaScript glue and TypeScript
# typings with wasm-bindgen-cli, and the page (examples/web-holder) beside
# them in ${CARGO_TARGET_DIR:-target}/web-holder/, which is what
# tests/tests/web.rs serves. Nothing is written into the source tree.
#
# Reports the bundle's size (the .wasm raw and gzipped, and the glue) and
# fails if the gzipped bundle is above 1 MiB. First lints the crate for
# wasm32 (warnings denied).
#
# Installs what it needs when missing: the wasm32 target, wasm-bindgen-cli
# at exactly the version Cargo.lock pins for wasm-bindgen (the generated
# glue refuses to load otherwise), and the page's npm packages (npm ci, for
# the end-to-end test's playwright-core) when npm is there.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=wasm32-unknown-unknown
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="$TARGET_DIR/web-holder"

if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi

# The version of wasm-bindgen in Cargo.lock.
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
if [ -z "$WASM_BINDGEN_VERSION" ]; then
    echo "web-build: no wasm-bindgen in Cargo.lock" >&2
    exit 1
fi
if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$WASM_BINDGEN_VERSION" ]; then
    echo "web-build: installing wasm-bindgen-cli $WASM_BINDGEN_VERSION" >&2
    # --locked first; its lock file may name a crate version the registry
    # no longer serves (seen: webpki-roots), then the newest compatible.
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked \
        || cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

if command -v npm >/dev/null 2>&1 && [ ! -d examples/web-holder/node_modules/playwright-core ]; then
    (cd examples/web-holder && npm ci --no-audit --no-fund)
fi

cargo clippy --locked --target "$TARGET" -p confidant-web --all-targets -- -D warnings
cargo build --locked --release --target "$TARGET" -p confidant-web

rm -rf "$OUT"
mkdir -p "$OUT"
wasm-bindgen --target web --out-dir "$OUT/pkg" \
    "$TARGET_DIR/$TARGET/release/confidant_web.wasm"
cp examples/web-holder/index.html examples/web-holder/app.js "$OUT/"

WASM="$OUT/pkg/confidant_web_bg.wasm"
raw=$(stat -c %s "$WASM")
gz=$(gzip -9 -c "$WASM" | wc -c)
glue=$(gzip -9 -c "$OUT/pkg/confidant_web.js" | wc -c)
total=$((gz + glue))
echo "web-build: $WASM: $raw bytes, $gz gzipped; glue $glue gzipped; bundle $total bytes gzipped (limit 1048576)"
if [ "$total" -gt 1048576 ]; then
    echo "web-build: the gzipped bundle is above 1 MiB" >&2
    exit 1
fi
echo "web-build: the page is in $OUT (typings: $OUT/pkg/confidant_web.d.ts)"
