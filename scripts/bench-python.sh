#!/usr/bin/env bash
# The Python bindings against Rust: builds confidant-ffi's shared library
# in the release profile (the bench's), puts it beside the committed
# generated module (bindings/python/confidant_ffi.py) in
# $CARGO_TARGET_DIR/bench-python, and runs confidant-bench's `python`
# section on them: messages from a Python holder against the same from a
# Rust holder, relayed by one connector to one Rust issuer, in the same
# run. See docs/bindings.md, "Performance of the Python bindings".
#
#   ./scripts/bench-python.sh            # 7 rounds
#   ./scripts/bench-python.sh --quick    # 3 rounds, fewer messages
#
# Needs python3. The generated module checks at load time that the
# library has the API it was generated for (UniFFI's checksums): after
# changing the API, run ./scripts/bindings.sh first.
#
# Respects CARGO_TARGET_DIR (default: target).
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir="${CARGO_TARGET_DIR:-target}"
case "$(uname -s)" in
    Darwin) library="libconfidant_ffi.dylib" ;;
    *) library="libconfidant_ffi.so" ;;
esac

echo "== building confidant-ffi (release)" >&2
cargo build --locked --release -p confidant-ffi --lib
out="$target_dir/bench-python"
mkdir -p "$out"
cp bindings/python/confidant_ffi.py "$out/confidant_ffi.py"
cp "$target_dir/release/$library" "$out/$library"

echo "== running confidant-bench --only python" >&2
CONFIDANT_PYTHON_BINDINGS="$(cd "$out" && pwd)" CONFIDANT_BENCH_FFI_PROFILE=release \
    cargo run --locked --release -p confidant-bench -- --only python "$@"
