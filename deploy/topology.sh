#!/usr/bin/env bash
# A whole Tally deployment on one host, for trying scale-out by hand:
#
#   deploy/topology.sh start [N]   a 6-process Redis Cluster (3 masters, 3
#                                  replicas), the local PostgreSQL (database
#                                  tally_topology), N `tally serve` nodes
#                                  (default 3) and HAProxy in front of them
#   deploy/topology.sh add-node    one more node, then a soft reload of HAProxy
#   deploy/topology.sh status      what runs, and each node's /readyz
#   deploy/topology.sh stop        SIGTERM to the nodes (they drain), then
#                                  HAProxy and Redis; the state dir is kept
#   deploy/topology.sh clean       stop, then delete the state dir and drop
#                                  the database
#
# Settings (environment):
#   TALLY_BIN               the tally binary      [target/release/tally]
#   TALLY_TOPOLOGY_DIR      state: Redis data, node data dirs, logs, pids,
#                           haproxy.cfg           [/tmp/tally-topology]
#   TALLY_TOPOLOGY_REDIS_PORT  first of 6 Redis ports          [7100]
#   TALLY_TOPOLOGY_NODE_PORT   node k listens on this + k      [8100]
#   TALLY_TOPOLOGY_LB_PORT     HAProxy's port                  [8080]
#   TALLY_TOPOLOGY_PG       PostgreSQL server URL without a database
#                           [postgres://postgres@127.0.0.1:5432]
#   TALLY_DRAIN_GRACE_MS and every other TALLY_* setting reach the nodes.
#
# Nothing is seeded: `start` prints the commands for that. Every failure
# stops the script with a message; nothing is skipped.

set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# need_command, apt_install, ensure_postgres (installs with apt what is missing).
# shellcheck source=../scripts/services.sh
source "$ROOT/scripts/services.sh"

log() { printf '\033[1m[topology]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[topology] FATAL:\033[0m %s\n' "$*" >&2; exit 1; }

STATE="${TALLY_TOPOLOGY_DIR:-/tmp/tally-topology}"
REDIS_PORT="${TALLY_TOPOLOGY_REDIS_PORT:-7100}"
NODE_PORT="${TALLY_TOPOLOGY_NODE_PORT:-8100}"
LB_PORT="${TALLY_TOPOLOGY_LB_PORT:-8080}"
PG="${TALLY_TOPOLOGY_PG:-postgres://postgres@127.0.0.1:5432}"
DB_NAME=tally_topology
DATABASE_URL="$PG/$DB_NAME"
BIN="${TALLY_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tally}"
REDIS_PORTS="$(seq "$REDIS_PORT" $((REDIS_PORT + 5)))"
REDIS_URL="redis+cluster://127.0.0.1:$REDIS_PORT,127.0.0.1:$((REDIS_PORT + 1)),127.0.0.1:$((REDIS_PORT + 2))"
NODES_FILE="$STATE/nodes" # one HOST:PORT per line, in the order of haproxy.cfg
LB_PID="$STATE/haproxy.pid"

backend_args=(--redis-url "$REDIS_URL" --database-url "$DATABASE_URL" --key-prefix tally)

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# --- Redis Cluster -----------------------------------------------------------

topology_cluster_ok() {
    redis-cli -p "$REDIS_PORT" cluster info 2>/dev/null | grep -q '^cluster_state:ok' \
        && redis-cli -p "$REDIS_PORT" cluster info 2>/dev/null | grep -q '^cluster_slots_ok:16384'
}

start_redis() {
    need_command redis-server redis-server
    need_command redis-cli redis-tools
    local port fresh=no
    for port in $REDIS_PORTS; do
        redis-cli -p "$port" ping >/dev/null 2>&1 && continue
        [ -f "$STATE/redis/$port/nodes.conf" ] || fresh=yes
        mkdir -p "$STATE/redis/$port"
        # appendonly + everysec: the pairing docs/OPERATIONS.md gives the
        # default durability mode (fast).
        redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
            --cluster-config-file "$STATE/redis/$port/nodes.conf" --dir "$STATE/redis/$port" \
            --cluster-node-timeout 2000 --appendonly yes --appendfsync everysec \
            --maxmemory-policy noeviction --daemonize yes \
            --logfile "$STATE/redis/$port/redis.log" \
            || die "cannot start redis-server on port $port"
    done
    for port in $REDIS_PORTS; do
        for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        redis-cli -p "$port" ping >/dev/null 2>&1 || die "redis-server on $port does not answer"
    done
    for _ in $(seq 50); do topology_cluster_ok && break; sleep 0.1; done
    if ! topology_cluster_ok; then
        [ "$fresh" = yes ] || die "the Redis Cluster on $REDIS_PORT.. is unhealthy; see $STATE/redis/*/redis.log (or: $0 clean)"
        log "creating a Redis Cluster on ports $(echo $REDIS_PORTS)"
        local nodes=()
        for port in $REDIS_PORTS; do nodes+=("127.0.0.1:$port"); done
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null \
            || die "redis-cli --cluster create failed"
        for _ in $(seq 200); do topology_cluster_ok && break; sleep 0.1; done
        topology_cluster_ok || die "the new Redis Cluster did not become healthy"
    fi
    log "Redis Cluster ok: $REDIS_URL"
}

stop_redis() {
    local port
    for port in $REDIS_PORTS; do
        redis-cli -p "$port" shutdown >/dev/null 2>&1 || true
    done
}

# --- PostgreSQL --------------------------------------------------------------

start_postgres() {
    ensure_postgres
    local exists
    exists="$(psql "$PG/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" \
        || die "cannot query PostgreSQL at $PG"
    if [ "$exists" != 1 ]; then
        log "creating database $DB_NAME"
        psql "$PG/postgres" -qc "CREATE DATABASE $DB_NAME" >/dev/null || die "cannot create $DB_NAME"
    fi
    "$BIN" migrate --data-dir "$STATE/migrate" "${backend_args[@]}" >/dev/null \
        || die "tally migrate failed"
}

# --- tally serve nodes -------------------------------------------------------

start_node() { # start_node <k>: node k on 127.0.0.1:NODE_PORT+k
    local k="$1" addr="127.0.0.1:$((NODE_PORT + $1))"
    local log_file="$STATE/node$k.log" pid_file="$STATE/node$k.pid"
    alive "$pid_file" && die "node $k already runs (pid $(cat "$pid_file"))"
    mkdir -p "$STATE/node$k"
    : >"$log_file"
    nohup "$BIN" serve --listen "$addr" --data-dir "$STATE/node$k" "${backend_args[@]}" \
        >>"$log_file" 2>&1 </dev/null &
    echo $! >"$pid_file"
    for _ in $(seq 600); do
        grep -q '^tally listening on ' "$log_file" && break
        kill -0 "$(cat "$pid_file")" 2>/dev/null || { tail -20 "$log_file" >&2; die "node $k exited at start"; }
        sleep 0.1
    done
    grep -q '^tally listening on ' "$log_file" || { tail -20 "$log_file" >&2; die "node $k did not start in 60 s"; }
    grep -qx "$addr" "$NODES_FILE" 2>/dev/null || echo "$addr" >>"$NODES_FILE"
    log "node $k: http://$addr (pid $(cat "$pid_file"), log $log_file)"
}

node_count() { [ -f "$NODES_FILE" ] && wc -l <"$NODES_FILE" || echo 0; }

stop_nodes() {
    local pid_file pids=()
    for pid_file in "$STATE"/node*.pid; do
        [ -f "$pid_file" ] || continue
        if alive "$pid_file"; then
            kill -TERM "$(cat "$pid_file")"
            pids+=("$(cat "$pid_file")")
        fi
        rm -f "$pid_file"
    done
    # They drain together: /readyz turns 503, the grace passes, in-flight
    # requests finish and the write-behind commits (up to 30 s per stage).
    local pid
    for pid in "${pids[@]}"; do
        for _ in $(seq 700); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && { log "node pid $pid still runs after 70 s: SIGKILL"; kill -KILL "$pid"; }
    done
    rm -f "$NODES_FILE"
}

# --- HAProxy -----------------------------------------------------------------

# Renders haproxy.cfg from the node list and (re)starts HAProxy: a soft
# reload (-sf) when one runs, so established connections finish on the old
# process while new ones go to the new.
start_haproxy() {
    need_command haproxy haproxy
    local nodes
    mapfile -t nodes <"$NODES_FILE"
    "$ROOT/deploy/render-haproxy.sh" "127.0.0.1:$LB_PORT" "${nodes[@]}" >"$STATE/haproxy.cfg.new"
    haproxy -c -q -f "$STATE/haproxy.cfg.new" || die "haproxy rejects $STATE/haproxy.cfg.new"
    mv "$STATE/haproxy.cfg.new" "$STATE/haproxy.cfg"
    local old=()
    if alive "$LB_PID"; then old=(-sf "$(cat "$LB_PID")"); fi
    nohup haproxy -db -f "$STATE/haproxy.cfg" "${old[@]}" >>"$STATE/haproxy.log" 2>&1 </dev/null &
    echo $! >"$LB_PID"
    sleep 0.3
    alive "$LB_PID" || { tail -20 "$STATE/haproxy.log" >&2; die "haproxy exited at start"; }
    log "haproxy: http://127.0.0.1:$LB_PORT over ${#nodes[@]} nodes (pid $(cat "$LB_PID"), ${old[*]:+reloaded, }log $STATE/haproxy.log)"
}

stop_haproxy() {
    if alive "$LB_PID"; then
        kill -USR1 "$(cat "$LB_PID")" # soft stop: finish sessions (hard-stop-after 30 s)
    fi
    rm -f "$LB_PID"
}

wait_ready() { # wait_ready <url>
    need_command curl curl
    for _ in $(seq 600); do
        curl -fsS -o /dev/null "$1/readyz" 2>/dev/null && return 0
        sleep 0.1
    done
    die "$1/readyz did not answer 200 in 60 s"
}

# --- commands ----------------------------------------------------------------

cmd_start() {
    local n="${1:-3}"
    [ -x "$BIN" ] || die "no tally binary at $BIN: cargo build --release, or set TALLY_BIN"
    [ "$(node_count)" -eq 0 ] || die "a topology runs already ($NODES_FILE): $0 status, or $0 stop"
    mkdir -p "$STATE"
    start_redis
    start_postgres
    local k
    for k in $(seq "$n"); do start_node "$k"; done
    start_haproxy
    wait_ready "http://127.0.0.1:$LB_PORT"
    cat <<EOF

Tally runs behind HAProxy at http://127.0.0.1:$LB_PORT  (web client at /, API docs at /docs)
  nodes:      $(paste -sd' ' "$NODES_FILE")
  Redis:      $REDIS_URL
  PostgreSQL: $DATABASE_URL
  state:      $STATE (logs: node*.log, haproxy.log)

Seed users and drive load through the balancer (nothing is seeded yet):
  $BIN users seed --count 10000 --tokens-out $STATE/tokens.txt --data-dir $STATE/seed ${backend_args[*]}
  $BIN bench --target http://127.0.0.1:$LB_PORT --tokens $STATE/tokens.txt --duration 30s --data-dir $STATE/seed ${backend_args[*]}
One more node:  $0 add-node       Drain one:  kill -TERM \$(cat $STATE/node1.pid)
EOF
}

cmd_add_node() {
    [ "$(node_count)" -gt 0 ] || die "no topology runs: $0 start"
    alive "$LB_PID" || die "haproxy does not run: $0 stop, then $0 start"
    local k=$(($(node_count) + 1))
    start_node "$k"
    start_haproxy
    wait_ready "http://127.0.0.1:$LB_PORT"
}

cmd_status() {
    local ok=0
    if alive "$LB_PID"; then
        log "haproxy pid $(cat "$LB_PID"): http://127.0.0.1:$LB_PORT/readyz -> $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LB_PORT/readyz" || true)"
    else
        log "haproxy: not running"; ok=1
    fi
    local k=0 addr
    while read -r addr; do
        k=$((k + 1))
        if alive "$STATE/node$k.pid"; then
            log "node $k pid $(cat "$STATE/node$k.pid"): http://$addr/readyz -> $(curl -s "http://$addr/readyz" || echo unreachable)"
        else
            log "node $k ($addr): not running"; ok=1
        fi
    done < <(cat "$NODES_FILE" 2>/dev/null)
    if topology_cluster_ok; then log "Redis Cluster ok: $REDIS_URL"; else log "Redis Cluster: not ok"; ok=1; fi
    return "$ok"
}

cmd_stop() {
    stop_nodes
    stop_haproxy
    stop_redis
    log "stopped (state kept in $STATE)"
}

cmd_clean() {
    cmd_stop
    psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $DB_NAME WITH (FORCE)" >/dev/null \
        || die "cannot drop $DB_NAME"
    rm -rf "$STATE"
    log "removed $STATE and database $DB_NAME"
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    add-node) cmd_add_node ;;
    status) cmd_status ;;
    stop) cmd_stop ;;
    clean) cmd_clean ;;
    *) sed -n '2,26p' "$0" >&2; exit 2 ;;
esac
