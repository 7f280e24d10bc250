#!/usr/bin/env bash
# Checks that confidant-ffi (the crate the Kotlin and Swift bindings load)
# type-checks for the phones: `cargo check -p confidant-ffi` for
# aarch64-linux-android and aarch64-apple-ios. Needs neither the Android NDK
# nor Xcode: a check links nothing, and the one C dependency, ring (the
# crypto provider of rustls, under the connector's TLS), compiles its C and
# assembly in its build script with Debian's clang for the target.
#
# How: ring's C needs no libc, only clang's own freestanding headers, once
# RING_CORE_NOSTDLIBINC is defined with -nostdlibinc (ring's build script does
# just that itself for wasm32 and cross musl builds). For iOS, ring's base.h
# also includes <TargetConditionals.h>, a header of Apple's SDK; this script
# writes a stand-in that defines the TARGET_OS_* macros of an iOS device
# build, and points SDKROOT at it so that cc does not run xcrun (there is none
# here). The objects made that way only serve the check: linking, and any
# build that ships, needs the real NDK or Xcode (docs/bindings.md).
#
# Installs what is missing: the rustup targets, and Debian's clang and llvm
# (for llvm-ar). Set MOBILE_TARGETS to check fewer targets.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r -a TARGETS <<<"${MOBILE_TARGETS:-aarch64-linux-android aarch64-apple-ios}"

installed_targets="$(rustup target list --installed)"
for target in "${TARGETS[@]}"; do
    if ! grep -qx "$target" <<<"$installed_targets"; then
        rustup target add "$target" >&2
    fi
done

if ! command -v clang >/dev/null 2>&1 || ! command -v llvm-ar >/dev/null 2>&1; then
    echo "installing Debian's clang and llvm (the target C compiler and llvm-ar for ring)" >&2
    sudo=()
    if [ "$(id -u)" != 0 ]; then
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >&2
    "${sudo[@]}" apt-get install -y -qq clang llvm >&2
fi
CLANG="$(command -v clang)"
LLVM_AR="$(command -v llvm-ar)"

# ring's C without libc headers (see above).
NOSTDLIB_CFLAGS="-nostdlibinc -DRING_CORE_NOSTDLIBINC=1"

# The stand-in for Apple's <TargetConditionals.h>: an iOS device (arm64, not
# the simulator). Kept in the target directory, written only when it differs.
target_dir="${CARGO_TARGET_DIR:-target}"
ios_sdk="$(mkdir -p "$target_dir/mobile-check" && cd "$target_dir/mobile-check" && pwd)/iPhoneOS-stand-in.sdk"
case "$ios_sdk" in
*[[:space:]]*)
    # cc splits CFLAGS_<target> on spaces.
    echo "mobile check: the target directory's path has a space: $ios_sdk" >&2
    exit 1
    ;;
esac
ios_header="$ios_sdk/usr/include/TargetConditionals.h"
ios_header_text='/* Stand-in for the iOS SDK header, written by scripts/mobile-check.sh for
 * `cargo check` only: an iOS device build (arm64, not the simulator). */
#ifndef TARGETCONDITIONALS_STAND_IN_H
#define TARGETCONDITIONALS_STAND_IN_H
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 0
#define TARGET_OS_IPHONE 1
#define TARGET_OS_IOS 1
#define TARGET_OS_MACCATALYST 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_VISION 0
#define TARGET_OS_SIMULATOR 0
#define TARGET_OS_EMBEDDED 1
#define TARGET_CPU_ARM64 1
#define TARGET_RT_LITTLE_ENDIAN 1
#define TARGET_RT_64_BIT 1
#endif'
if [ "$(cat "$ios_header" 2>/dev/null)" != "$ios_header_text" ]; then
    mkdir -p "$(dirname "$ios_header")"
    printf '%s\n' "$ios_header_text" >"$ios_header"
fi

for target in "${TARGETS[@]}"; do
    var="${target//-/_}"
    envs=("CC_$var=$CLANG" "AR_$var=$LLVM_AR")
    case "$target" in
    *-linux-android*)
        envs+=("CFLAGS_$var=$NOSTDLIB_CFLAGS")
        ;;
    *-apple-ios)
        envs+=("CFLAGS_$var=$NOSTDLIB_CFLAGS -isystem $ios_sdk/usr/include"
            "SDKROOT=$ios_sdk")
        ;;
    *)
        echo "mobile check: no settings for target $target" >&2
        exit 1
        ;;
    esac
    log="$(mktemp)"
    if ! env "${envs[@]}" cargo check -p confidant-ffi --locked --target "$target" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "mobile check FAILED: cargo check -p confidant-ffi --target $target" >&2
        exit 1
    fi
    # Warnings are shown even on success.
    grep -E '^(warning|error)' -A5 "$log" >&2 || true
    rm -f "$log"
    echo "mobile check: cargo check -p confidant-ffi --locked --target $target passed (C of ring compiled by $CLANG)"
done
