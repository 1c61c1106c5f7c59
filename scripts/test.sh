#!/usr/bin/env bash
# Runs every test (unit and integration) against the local PostgreSQL and
# RabbitMQ, starting them first if they are down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/chromium.sh
# Build artifacts outside the clone, so repeated runs on one machine reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webhooks-target}"
export RUST_LOG="${RUST_LOG:-warn}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
cargo test --workspace --locked "$@" -- --test-threads "${TEST_THREADS:-6}"
