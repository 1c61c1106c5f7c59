#!/usr/bin/env bash
# Starts the local PostgreSQL and RabbitMQ if they are not answering.
# Sourced by run.sh and test.sh; safe to run on its own.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432; then
  echo "starting PostgreSQL..." >&2
  if command -v pg_ctlcluster >/dev/null 2>&1; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -1)" main start
  else
    echo "PostgreSQL is not running on 127.0.0.1:5432 and pg_ctlcluster is not installed" >&2; exit 1
  fi
fi
if ! port_open 5672; then
  echo "starting RabbitMQ..." >&2
  if command -v rabbitmq-server >/dev/null 2>&1; then
    rabbitmq-server -detached
  else
    echo "RabbitMQ is not running on 127.0.0.1:5672 and rabbitmq-server is not installed" >&2; exit 1
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
echo "PostgreSQL or RabbitMQ did not come up" >&2
exit 1
