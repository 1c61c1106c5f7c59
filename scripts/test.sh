#!/usr/bin/env bash
# Runs every test (unit and integration) against the local PostgreSQL and
# RabbitMQ, starting them first if they are down, then the Python checks in
# one virtualenv: the deployment files and the Python client's suite (which
# runs the freshly built services).
#
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh -p ingest ...   # arguments go to `cargo test`; then only the deployment check
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
bash scripts/chromium.sh

# --- Python: ONE virtualenv for every Python check ------------------------------
# Each requirements file a check needs is installed into it (fast when satisfied).
VENV="${WEBHOOKS_VENV:-$HOME/.cache/webhooks-venv}"
PYTHON_REQUIREMENTS=(deploy/requirements.txt examples/requirements.txt)
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "[test] creating the Python virtualenv $VENV" >&2
  python3 -m venv "$VENV"
fi
for requirements in "${PYTHON_REQUIREMENTS[@]}"; do
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
done
# The Python client and its test dependencies (pip rebuilds a local directory on every install).
"$VENV/bin/pip" install --quiet --disable-pip-version-check "./clients/python[test]"
export WEBHOOKS_VENV="$VENV"

# Build artifacts outside the clone, so repeated runs on one machine reuse them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webhooks-target}"
export RUST_LOG="${RUST_LOG:-warn}"
export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"
status=0
# --no-fail-fast: one failing test binary must not hide the others' results.
cargo test --workspace --locked --no-fail-fast "$@" -- --test-threads "${TEST_THREADS:-6}" || status=$?

# Deployment files: Kubernetes schemas, compose, alert rules and dashboard (offline).
"$VENV/bin/python" deploy/check.py || status=1

# The Python client (clients/python): types, then pytest against the real
# services, started by its fixtures from the debug build. Skipped when
# arguments narrowed the cargo run.
if [[ "$#" -eq 0 ]]; then
  cargo build --locked --bins -p ingest -p dispatcher
  export WEBHOOKS_BIN_DIR="$CARGO_TARGET_DIR/debug"
  # py.typed promises types: the package passes mypy --strict (settings in its pyproject).
  (cd clients/python && "$VENV/bin/python" -m mypy) || status=1
  # pytest's exit 5 (no test collected) means a broken suite: any non-zero fails the run.
  (cd clients/python && "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests) || status=1
fi
exit "$status"
