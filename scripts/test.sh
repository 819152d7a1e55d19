#!/usr/bin/env bash
# The whole test suite: installs what it needs, then format check, clippy (-D warnings) and every
# test of the workspace (unit tests and the end-to-end suites that drive the real binary with
# kubectl). This is the README's test command, and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

# A cold build's incremental caches would double target/ on disk for no gain in a one-off run.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked -- --test-threads "${CAPSTAN_TEST_THREADS:-2}"
