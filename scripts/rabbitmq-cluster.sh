#!/usr/bin/env bash
# A 3-node RabbitMQ cluster on this machine, beside the default broker, for
# the node-loss run of webhooks-bench (`cluster` scenario). Needs the
# rabbitmq-server package and root (the nodes run as the `rabbitmq` user).
#
#   scripts/rabbitmq-cluster.sh start    # 3 nodes, clustered; prints AMQP_URL
#   scripts/rabbitmq-cluster.sh status   # members and running nodes
#   scripts/rabbitmq-cluster.sh url      # the comma-separated AMQP_URL
#   scripts/rabbitmq-cluster.sh leader Q       # the node leading quorum queue Q
#   scripts/rabbitmq-cluster.sh stop-leader Q  # stop that node (the fault)
#   scripts/rabbitmq-cluster.sh stop-node 2    # stop one node
#   scripts/rabbitmq-cluster.sh start-node 2   # bring it back
#   scripts/rabbitmq-cluster.sh stop     # stop every node and delete their data
#
# Nodes wh1@localhost, wh2@localhost, wh3@localhost; AMQP on
# ${CLUSTER_AMQP_BASE:-5781}+n-1, Erlang distribution on ${CLUSTER_DIST_BASE:-25781}+n-1.
# Each node has its own config file (the machine's /etc/rabbitmq/rabbitmq.conf
# pins its listener to 5672), data, logs and pid file under
# ${CLUSTER_DIR:-/var/tmp/webhooks-rabbitmq-cluster}. Together they use about 1 GB.
set -euo pipefail

NODES=3
AMQP_BASE=${CLUSTER_AMQP_BASE:-5781}
DIST_BASE=${CLUSTER_DIST_BASE:-25781}
DIR=${CLUSTER_DIR:-/var/tmp/webhooks-rabbitmq-cluster}

node_name() { echo "wh$1@localhost"; }

as_rabbitmq() { runuser -u rabbitmq -- "$@"; }

# rabbitmqctl as the rabbitmq user (its Erlang cookie is the nodes' cookie).
ctl() {
    local n=$1
    shift
    as_rabbitmq env RABBITMQ_CONF_ENV_FILE="$DIR/wh$n/rabbitmq-env.conf" \
        rabbitmqctl -n "$(node_name "$n")" "$@"
}

write_node_files() {
    local n=$1 home="$DIR/wh$1"
    mkdir -p "$home/mnesia" "$home/log"
    cat >"$home/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$((AMQP_BASE + n - 1))
loopback_users.guest = false
# Quorum queues need a majority; a lone node must not serve stale data.
cluster_partition_handling = pause_minority
vm_memory_high_watermark.absolute = 600MB
disk_free_limit.absolute = 200MB
EOF
    echo "[]." >"$home/enabled_plugins"
    cat >"$home/rabbitmq-env.conf" <<EOF
NODENAME=$(node_name "$n")
NODE_IP_ADDRESS=127.0.0.1
EOF
    chown -R rabbitmq:rabbitmq "$home"
}

start_node() {
    local n=$1 home="$DIR/wh$1"
    [ -f "$home/rabbitmq.conf" ] || write_node_files "$n"
    as_rabbitmq env \
        RABBITMQ_CONF_ENV_FILE="$home/rabbitmq-env.conf" \
        RABBITMQ_NODENAME="$(node_name "$n")" \
        RABBITMQ_CONFIG_FILE="$home/rabbitmq.conf" \
        RABBITMQ_NODE_PORT="$((AMQP_BASE + n - 1))" \
        RABBITMQ_DIST_PORT="$((DIST_BASE + n - 1))" \
        RABBITMQ_MNESIA_BASE="$home/mnesia" \
        RABBITMQ_LOG_BASE="$home/log" \
        RABBITMQ_PID_FILE="$home/rabbitmq.pid" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$home/enabled_plugins" \
        ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        rabbitmq-server -detached
    ctl "$n" wait --timeout 60 "$home/rabbitmq.pid" >/dev/null
}

# The node leading a quorum queue, asked of any running node.
leader_of() {
    for n in $(seq 1 $NODES); do
        if out=$(ctl "$n" list_queues name leader --no-table-headers --quiet 2>/dev/null); then
            echo "$out" | awk -v q="$1" '$1 == q { print $2 }'
            return 0
        fi
    done
}

url() {
    local urls=()
    for n in $(seq 1 $NODES); do
        urls+=("amqp://guest:guest@127.0.0.1:$((AMQP_BASE + n - 1))/%2f")
    done
    (IFS=,; echo "${urls[*]}")
}

case "${1:-}" in
start)
    mkdir -p "$DIR"
    chown rabbitmq:rabbitmq "$DIR"
    for n in $(seq 1 $NODES); do
        write_node_files "$n"
        start_node "$n"
    done
    for n in $(seq 2 $NODES); do
        ctl "$n" stop_app >/dev/null
        ctl "$n" join_cluster "$(node_name 1)" >/dev/null
        ctl "$n" start_app >/dev/null
    done
    ctl 1 cluster_status | grep -A4 "Running Nodes" | grep "@" || true
    echo "AMQP_URL=$(url)"
    ;;
stop-node)
    ctl "${2:?node number}" stop_app >/dev/null
    ctl "$2" stop >/dev/null
    echo "stopped $(node_name "$2")"
    ;;
start-node)
    start_node "${2:?node number}"
    echo "started $(node_name "$2")"
    ;;
leader)
    # The node that leads a quorum queue: leader <queue name>
    leader_of "${2:?queue name}"
    ;;
stop-leader)
    # Stop the node that leads a quorum queue (the fault of the node-loss run).
    leader=$(leader_of "${2:?queue name}")
    n=${leader#wh}
    n=${n%%@*}
    [ -n "$leader" ] && [ "$n" -ge 1 ] 2>/dev/null || { echo "no leader found for $2" >&2; exit 1; }
    ctl "$n" stop >/dev/null
    echo "stopped $leader, leader of $2"
    ;;
status)
    for n in $(seq 1 $NODES); do
        if ctl "$n" status >/dev/null 2>&1; then echo "$(node_name "$n") running"; else echo "$(node_name "$n") down"; fi
    done
    ;;
url)
    url
    ;;
stop)
    for n in $(seq 1 $NODES); do
        ctl "$n" stop >/dev/null 2>&1 && echo "stopped $(node_name "$n")" || true
    done
    rm -rf "$DIR"
    ;;
*)
    echo "usage: $0 start|stop|status|url|leader <queue>|stop-leader <queue>|stop-node <n>|start-node <n>" >&2
    exit 2
    ;;
esac
