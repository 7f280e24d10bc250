#!/usr/bin/env bash
# Runs every test of the workspace: the doc tests (which nextest does not
# run), then unit, integration, property and conformance tests with
# cargo-nextest, whose summary closes the output. Installs cargo-nextest if
# it is missing.
#
# Before them it builds confidant-ffi's shared library and generates its
# bindings (./scripts/bindings.sh), for the Python tests, builds the browser
# holder's page (./scripts/web-build.sh), for the end-to-end test in
# Chromium (tests/tests/web.rs), and runs the wasm build's unit tests under
# Node (./scripts/web-test.sh).
#
# The connector's PostgreSQL tests run when CONFIDANT_TEST_DATABASE_URL
# names a database (./scripts/postgres-test-db.sh makes one); without it
# they are skipped, and this says so. Under CI=true a skip is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install cargo-nextest --locked
fi

if [ -n "${CONFIDANT_TEST_DATABASE_URL:-}" ]; then
    echo "PostgreSQL tests: on, against CONFIDANT_TEST_DATABASE_URL" >&2
elif [ "${CI:-}" = true ]; then
    echo "PostgreSQL tests: CONFIDANT_TEST_DATABASE_URL is not set, and CI=true forbids skipping them" >&2
    echo "(export CONFIDANT_TEST_DATABASE_URL=\"\$(./scripts/postgres-test-db.sh)\")" >&2
    exit 1
else
    echo "PostgreSQL tests: SKIPPED (CONFIDANT_TEST_DATABASE_URL is not set; \
./scripts/postgres-test-db.sh makes a database)" >&2
fi

# The Python tests (tests/tests/python.rs) run the Python holder on the
# generated bindings and the shared library beside them: build and generate
# them first. Under CI=true a missing python3 or missing bindings fails
# those tests.
./scripts/bindings.sh

# The browser holder: the page for tests/tests/web.rs (which, under
# CI=true, fails without it, Node's packages or Chromium), and the wasm
# build's own tests under Node.
./scripts/web-build.sh
./scripts/web-test.sh

cargo test --workspace --locked --doc
cargo nextest run --workspace --locked --no-fail-fast
