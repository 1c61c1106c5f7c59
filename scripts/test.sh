#!/usr/bin/env bash
# Runs every test (unit and integration) against the local PostgreSQL and
# RabbitMQ, starting them first if they are down, then the Python checks
# (deployment files) in one virtualenv. Arguments go to `cargo test`.
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
exit "$status"
