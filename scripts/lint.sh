#!/usr/bin/env bash
# The lint gate CI runs before the tests: formatting, clippy with warnings as
# errors on every target, and unused dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
# Build artifacts outside the clone, shared with scripts/test.sh.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webhooks-target}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# Unused dependencies: cargo-machete rather than cargo-deny, because it is a
# few dozen small crates to compile (minutes on a 2-core CI machine) where
# cargo-deny is several hundred, and it needs no advisory database download.
if ! cargo machete --version >/dev/null 2>&1; then
    cargo install cargo-machete --locked --version 0.9.2
fi
cargo machete
