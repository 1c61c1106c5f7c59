#!/usr/bin/env bash
# Runs every test (unit and integration) against the local PostgreSQL and
# RabbitMQ, starting them first if they are down: the Rust workspace, then the
# Python client's pytest suite against the freshly built services.
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -p ingest ...   # only `cargo test` with these arguments
#
# Python runs in ONE virtualenv, ${WEBHOOKS_VENV:-~/.cache/webhooks-venv},
# created on first use; each requirement set below is pip-installed into it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
# Build artifacts outside the clone, so repeated runs on one machine reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webhooks-target}"
export RUST_LOG="${RUST_LOG:-warn}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"

if [ "$#" -gt 0 ]; then
    exec cargo test --workspace --locked "$@" -- --test-threads "${TEST_THREADS:-6}"
fi

status=0
cargo test --workspace --locked -- --test-threads "${TEST_THREADS:-6}" || status=$?

# --- Python -----------------------------------------------------------------
VENV="${WEBHOOKS_VENV:-$HOME/.cache/webhooks-venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
venv_install() { "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$@"; }
# The publisher SDK and its test dependencies (pip rebuilds a local directory on every install).
venv_install "./clients/python[test]"

# The pytest suite starts webhooks-ingest and webhooks-dispatcher from the debug build.
cargo build --locked --bins -p ingest -p dispatcher
export WEBHOOKS_BIN_DIR="$CARGO_TARGET_DIR/debug"
py_status=0
# py.typed promises types: the package must pass mypy --strict (settings in its pyproject).
(cd clients/python && "$VENV/bin/python" -m mypy) || status=1
(cd clients/python && "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests) || py_status=$?
# pytest exits 5 when it collected no test at all: a broken suite, not a pass.
if [ "$py_status" -ne 0 ]; then
    echo "pytest failed (exit $py_status)" >&2
    status=1
fi
exit "$status"
