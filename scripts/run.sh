#!/usr/bin/env bash
# Runs the whole system on this machine for development: starts PostgreSQL and
# RabbitMQ when they are down, creates the database, builds both binaries,
# applies migrations, prints a tenant and a publisher API key, then runs ingest
# and one dispatcher with prefixed logs until Ctrl-C.
#
# Every variable in the README's table is honoured; this script only fills in
# development defaults (a persistent secret key, http/private targets allowed).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[run] %s\n' "$*" >&2; }
# Roughly, on an idle 2-core machine (see the README, Running).
FIRST_BUILD_ESTIMATE="10 minutes"
die() { say "error: $*"; exit 1; }

command -v curl >/dev/null 2>&1 || die "curl is needed (to wait for readiness and check the API keys)"
command -v cargo >/dev/null 2>&1 || die "cargo is needed: install Rust 1.89 or newer (https://rustup.rs)"

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/webhooks}"
export AMQP_URL="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
export INGEST_BIND="${INGEST_BIND:-127.0.0.1:8080}"
export DISPATCHER_BIND="${DISPATCHER_BIND:-127.0.0.1:9091}"

# --- PostgreSQL and RabbitMQ -------------------------------------------------
# services.sh starts the local servers; skip it when both URLs point elsewhere.
is_local() { [[ "$1" =~ @(127\.0\.0\.1|localhost|\[::1\])[:/] ]]; }
if is_local "$DATABASE_URL" || is_local "$AMQP_URL"; then
  bash scripts/services.sh
fi

# --- the database ------------------------------------------------------------
# DATABASE_URL = scheme://user@host:port/<name>[?params]; create <name> through
# the server's `postgres` database if it does not exist yet.
db_path="${DATABASE_URL#*://*/}"
db_name="${db_path%%\?*}"
if ! command -v psql >/dev/null 2>&1; then
  say "psql not found: not creating the database; it must already exist"
elif [[ ! "$db_name" =~ ^[A-Za-z0-9_-]+$ ]]; then
  say "database name '$db_name' is unusual: not creating it; it must already exist"
else
  admin_url="${DATABASE_URL%/"$db_path"}/postgres"
  [[ "$db_path" == *\?* ]] && admin_url="$admin_url?${db_path#*\?}"
  if ! exists="$(psql "$admin_url" -v ON_ERROR_STOP=1 -tAc "SELECT 1 FROM pg_database WHERE datname = '$db_name'")"; then
    die "cannot reach the PostgreSQL server of DATABASE_URL (see psql's error above)"
  fi
  if [[ "$exists" != 1 ]]; then
    say "creating database $db_name"
    psql "$admin_url" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE \"$db_name\"" >/dev/null
  fi
fi

# --- build -------------------------------------------------------------------
# Build artifacts outside the clone, so repeated runs reuse them (as test.sh).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/webhooks-target}"
INGEST="$CARGO_TARGET_DIR/release/webhooks-ingest"
DISPATCHER="$CARGO_TARGET_DIR/release/webhooks-dispatcher"
if [[ -x "$INGEST" && -x "$DISPATCHER" ]]; then
  say "building (cargo build --release: seconds when little changed)"
else
  say "first build: cargo downloads and compiles about 300 crates in release mode"
  say "into $CARGO_TARGET_DIR; about ${FIRST_BUILD_ESTIMATE} on a 2-core machine"
  say "(less with more cores). Later runs rebuild only what changed, in seconds."
fi
cargo build --release --locked -p ingest -p dispatcher

# --- development settings ----------------------------------------------------
mkdir -p .dev
if [[ -z "${WEBHOOK_SECRET_KEY:-}" ]]; then
  # Kept in .dev/ (git-ignored) so the signing secrets stored with it stay
  # readable after a restart. Production keys come from a secret store.
  if [[ ! -s .dev/secret-key ]]; then
    say "generating a development WEBHOOK_SECRET_KEY in .dev/secret-key"
    (umask 077; head -c 32 /dev/urandom | base64 > .dev/secret-key)
  fi
  WEBHOOK_SECRET_KEY="$(tr -d '[:space:]' < .dev/secret-key)"
  export WEBHOOK_SECRET_KEY
fi
export ALLOW_HTTP_TARGETS="${ALLOW_HTTP_TARGETS:-true}"
export ALLOW_PRIVATE_TARGETS="${ALLOW_PRIVATE_TARGETS:-true}"
truthy() { [[ "$(tr '[:upper:]' '[:lower:]' <<<"$1")" =~ ^(1|true|yes|on)$ ]]; }
if truthy "$ALLOW_HTTP_TARGETS" || truthy "$ALLOW_PRIVATE_TARGETS"; then
  cat >&2 <<EOF
[run] ****************************************************************
[run] DEVELOPMENT MODE: ALLOW_HTTP_TARGETS=$ALLOW_HTTP_TARGETS ALLOW_PRIVATE_TARGETS=$ALLOW_PRIVATE_TARGETS
[run] Subscriptions may target http:// and localhost/private addresses.
[run] Never run a deployment with these settings.
[run] ****************************************************************
EOF
fi

# --- migrations ---------------------------------------------------------------
"$INGEST" migrate

# --- run both until Ctrl-C ---------------------------------------------------
prefix() { awk -v p="$1" '{ print p " " $0; fflush() }'; }
# The prefixers ignore Ctrl-C, so the services' shutdown logs still get through.
"$INGEST" serve > >(trap '' INT TERM; prefix "[ingest]") 2>&1 &
ingest_pid=$!
"$DISPATCHER" > >(trap '' INT TERM; prefix "[dispatcher]") 2>&1 &
dispatcher_pid=$!

alive() { kill -0 "$1" 2>/dev/null; }

# Stops both (TERM, then KILL after a grace period) and waits for them.
stopping=""
stop_all() {
  stopping=1
  local pid
  for pid in "$ingest_pid" "$dispatcher_pid"; do
    if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 700); do
    alive "$ingest_pid" || alive "$dispatcher_pid" || break
    sleep 0.1
  done
  for pid in "$ingest_pid" "$dispatcher_pid"; do
    if alive "$pid"; then
      say "process $pid did not stop within 70 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  wait "$ingest_pid" 2>/dev/null || true
  wait "$dispatcher_pid" 2>/dev/null || true
}
on_signal() {
  # A second Ctrl-C while stopping kills at once.
  if [[ -n "$stopping" ]]; then
    kill -KILL "$ingest_pid" "$dispatcher_pid" 2>/dev/null || true
    exit "$1"
  fi
  say "stopping ingest and dispatcher..."
  stop_all
  say "stopped"
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Health URLs: a wildcard bind is reachable on loopback.
health_url() { local addr="$1"; addr="${addr/0.0.0.0/127.0.0.1}"; addr="${addr/\[::\]/[::1]}"; echo "http://$addr"; }
ingest_url="$(health_url "$INGEST_BIND")"
dispatcher_url="$(health_url "$DISPATCHER_BIND")"
ready() { curl -fsS -o /dev/null --max-time 2 "$1/readyz" 2>/dev/null; }

# --- API keys ------------------------------------------------------------------
# The keys in .dev/keys.env are reused while they still authenticate against
# this ingest (same database), so restarts don't pile up valid keys; a missing
# or stale one is replaced. Each key is printed once, in the "ready" banner.
authenticates() {
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    -H "Authorization: Bearer $1" "$ingest_url/api/v1/webhooks/events")" || return 1
  [[ "$code" =~ ^[23] ]]
}
create_key() {
  local out log
  log="$(mktemp)"
  if ! out="$("$INGEST" api-key create "$@" 2>"$log")"; then
    cat "$log" >&2
    rm -f "$log"
    return 1
  fi
  rm -f "$log"
  tail -n 1 <<<"$out"
}
saved_key() { [[ -r .dev/keys.env ]] && sed -n "s/^export $1=//p" .dev/keys.env | tail -n 1; }
setup_keys() {
  tenant_key="$(saved_key TENANT_KEY || true)"
  publisher_key="$(saved_key PUBLISHER_KEY || true)"
  tenant_note="(reused from .dev/keys.env)"
  publisher_note="(reused from .dev/keys.env)"
  if [[ -z "$tenant_key" ]] || ! authenticates "$tenant_key"; then
    tenant_key="$(create_key --tenant dev --name "run.sh tenant key")" || return 1
    tenant_note="(new)"
  fi
  if [[ -z "$publisher_key" ]] || ! authenticates "$publisher_key"; then
    publisher_key="$(create_key --publisher --name "run.sh publisher key")" || return 1
    publisher_note="(new)"
  fi
  (umask 077; printf 'export TENANT_KEY=%s\nexport PUBLISHER_KEY=%s\n' "$tenant_key" "$publisher_key" > .dev/keys.env)
}

announced=""
while true; do
  if ! alive "$ingest_pid" || ! alive "$dispatcher_pid"; then
    if alive "$ingest_pid"; then exited=dispatcher; exited_pid=$dispatcher_pid; else exited=ingest; exited_pid=$ingest_pid; fi
    status=0
    wait "$exited_pid" || status=$?
    say "$exited exited (status $status); stopping the other"
    stop_all
    exit $(( status == 0 ? 1 : status ))
  fi
  if [[ -z "$announced" ]] && ready "$ingest_url" && ready "$dispatcher_url"; then
    announced=1
    if ! setup_keys; then
      say "creating the API keys failed (see above); stopping"
      stop_all
      exit 1
    fi
    cat >&2 <<EOF
[run] ================================================================
[run] ready
[run]   ingest API        $ingest_url/api/v1   (OpenAPI: $ingest_url/api/v1/openapi.json)
[run]   console           $ingest_url/console   (sign in with the tenant key below)
[run]   dispatcher        $dispatcher_url/readyz, /metrics
[run]   tenant key (dev)  $tenant_key $tenant_note
[run]   publisher key     $publisher_key $publisher_note
[run]   in another shell: source .dev/keys.env   (sets \$TENANT_KEY and \$PUBLISHER_KEY)
[run]   try: curl -H "Authorization: Bearer \$TENANT_KEY" $ingest_url/api/v1/webhooks/events
[run]   a first delivery, step by step: README.md, "A first delivery"
[run] Ctrl-C stops both.
[run] ================================================================
EOF
  fi
  sleep 0.5
done
