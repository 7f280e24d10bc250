#!/usr/bin/env bash
# Builds confidant-ffi's shared library (debug, or release with
# `--release`) and generates its Kotlin, Swift and Python bindings from it
# (UniFFI library mode, with the workspace's own bindgen binary: no global
# install) into bindings/kotlin, bindings/swift and bindings/python. The
# shared library is copied next to the Python module (bindings/python, not
# committed), where the generated module loads it from.
#
# The generated files are committed; CI runs this script and fails if it
# fails or if the files it writes differ from the committed ones. They are
# written without a formatter (`--no-format`), so they do not depend on
# which formatters a machine has. Never edit them by hand.
#
# Respects CARGO_TARGET_DIR (default: target).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_profile=()
if [ "${1:-}" = "--release" ]; then
    profile=release
    cargo_profile=(--release)
fi
target_dir="${CARGO_TARGET_DIR:-target}"

case "$(uname -s)" in
    Darwin) library="libconfidant_ffi.dylib" ;;
    *) library="libconfidant_ffi.so" ;;
esac

echo "== building confidant-ffi ($profile) and the bindgen" >&2
# The bindgen first: building it builds the library with the `cli`
# feature, and the library the bindings are generated from (and shipped
# with) is the one without it, built second.
cargo build --locked -p confidant-ffi --features cli --bin uniffi-bindgen "${cargo_profile[@]}"
cargo build --locked -p confidant-ffi --lib "${cargo_profile[@]}"
built="$target_dir/$profile/$library"
bindgen="$target_dir/$profile/uniffi-bindgen"
if [ ! -f "$built" ]; then
    echo "no $built after the build" >&2
    exit 1
fi

for language in kotlin swift python; do
    echo "== generating $language into bindings/$language" >&2
    out="bindings/$language"
    mkdir -p "$out"
    # Only generated files live there (and, for Python, the library copy).
    find "$out" -type f ! -name "$library" -delete
    "$bindgen" generate --library "$built" --language "$language" --no-format --out-dir "$out"
done
cp "$built" "bindings/python/$library"
echo "bindings generated; the Python module loads bindings/python/$library" >&2
