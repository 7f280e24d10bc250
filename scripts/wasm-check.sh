#!/usr/bin/env bash
# Checks that the protocol's crates build for the browser
# (wasm32-unknown-unknown) without the redb backend: the core traits and
# wire format, X3DH and the X3DH + ML-KEM-768 hybrid, the session, both
# cipher plugins, and the store's
# traits, record encodings, in-memory store and durable session, and the
# connection engine (the whole protocol of a connection). Installs
# the target if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=wasm32-unknown-unknown
CRATES=(-p confidant-core -p confidant-x3dh -p confidant-x3dh-mlkem768 -p confidant-session
    -p confidant-aes-gcm -p confidant-chacha20poly1305 -p confidant-store
    -p confidant-engine)

if ! rustup target list --installed | grep -qx "$TARGET"; then
    rustup target add "$TARGET"
fi
cargo clippy --locked --target "$TARGET" --no-default-features "${CRATES[@]}" -- -D warnings
# The file backend must not be in that build at all.
if cargo tree --locked --target "$TARGET" --no-default-features -e normal "${CRATES[@]}" \
    | grep -q '^[│├└ ─]*redb v'; then
    echo "redb is in the $TARGET build; it must stay behind the store's default feature" >&2
    exit 1
fi
echo "wasm check: ${CRATES[*]} build for $TARGET without redb"
