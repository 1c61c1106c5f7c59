#!/usr/bin/env bash
# Starts the local PostgreSQL (127.0.0.1:5432) and RabbitMQ (127.0.0.1:5672)
# if they are not answering. Used by run.sh and test.sh; safe to run on its own.
#
# It knows Debian's and Ubuntu's packages (`pg_ctlcluster` from
# postgresql-common, `rabbitmq-server`), and plain `pg_ctl` with PGDATA set.
# Anywhere else it says how to start them yourself; once both answer on those
# ports it does nothing.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
say() { echo "[services] $*" >&2; }

if ! port_open 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
    version="$(ls /etc/postgresql | sort -V | tail -1)"
    say "starting PostgreSQL $version (pg_ctlcluster)..."
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
  elif command -v pg_ctl >/dev/null 2>&1 && [[ -n "${PGDATA:-}" ]]; then
    say "starting PostgreSQL in $PGDATA (pg_ctl)..."
    pg_ctl -D "$PGDATA" -l "$PGDATA/server.log" -w start
  else
    cat >&2 <<'EOF'
[services] PostgreSQL is not answering on 127.0.0.1:5432, and this script can
[services] only start it with Debian's pg_ctlcluster or with pg_ctl and PGDATA set.
[services] Start it yourself, e.g. one of:
[services]   sudo systemctl start postgresql
[services]   brew services start postgresql@16
[services]   PGDATA=/path/to/data ./scripts/services.sh      (pg_ctl)
[services]   docker run -d -p 127.0.0.1:5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:16
[services] or point DATABASE_URL (and AMQP_URL) at servers elsewhere: run.sh skips
[services] this script when neither URL is local.
EOF
    exit 1
  fi
fi
if ! port_open 5672; then
  if command -v rabbitmq-server >/dev/null 2>&1; then
    say "starting RabbitMQ (rabbitmq-server -detached)..."
    rabbitmq-server -detached
  else
    cat >&2 <<'EOF'
[services] RabbitMQ is not answering on 127.0.0.1:5672 and rabbitmq-server is
[services] not installed. Start it yourself, e.g. one of:
[services]   sudo systemctl start rabbitmq-server
[services]   brew services start rabbitmq
[services]   docker run -d -p 127.0.0.1:5672:5672 rabbitmq:3
[services] or point AMQP_URL (and DATABASE_URL) at servers elsewhere: run.sh skips
[services] this script when neither URL is local.
EOF
    exit 1
  fi
fi
for _ in $(seq 1 60); do
  if port_open 5432 && port_open 5672; then
    # RabbitMQ opens its port a little before it accepts AMQP; give it a moment.
    command -v rabbitmqctl >/dev/null 2>&1 && timeout 30 rabbitmqctl -q await_startup >/dev/null 2>&1 || true
    exit 0
  fi
  sleep 1
done
say "PostgreSQL or RabbitMQ did not come up within 60 s"
exit 1
