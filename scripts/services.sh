# Sourced by scripts/test and the benchmarks: makes sure the services the
# tests need are installed and running, and exports where they are.
#
# It uses what already runs (the CI machine starts Redis and PostgreSQL
# before the session), installs with apt what is missing on a fresh Debian
# machine, starts what is stopped, and fails loudly when a service cannot be
# had: tests never skip silently.

set -euo pipefail

export TALLY_TEST_REDIS_URL="${TALLY_TEST_REDIS_URL:-redis://127.0.0.1:6379}"
export TALLY_TEST_DATABASE_URL="${TALLY_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
# A Redis Cluster of 3 masters and 3 replicas on 7000-7005 (ensure_redis_cluster).
export TALLY_TEST_CLUSTER_URL="${TALLY_TEST_CLUSTER_URL:-redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002}"
TALLY_CLUSTER_PORTS="7000 7001 7002 7003 7004 7005"
TALLY_CLUSTER_DIR="${TALLY_CLUSTER_DIR:-/tmp/tally-cluster}"

log() { printf '\033[1m[services]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31m[services] FATAL:\033[0m %s\n' "$*" >&2; exit 1; }

apt_install() {
    command -v apt-get >/dev/null || die "apt-get not found; install $* by hand"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    log "installing $* with apt"
    $sudo apt-get update -qq >/dev/null || log "apt-get update failed; trying the install anyway"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null \
        || die "apt-get install $* failed"
}

# Where cargo puts what it builds: target/ unless CARGO_TARGET_DIR or a
# cargo config says otherwise. The scripts find the binary there, so a
# shared target directory works as well as the default one.
cargo_target_dir() {
    cargo metadata --no-deps --format-version 1 \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

need_command() { # need_command <command> <apt package>
    command -v "$1" >/dev/null || apt_install "$2"
    command -v "$1" >/dev/null || die "$1 still missing after installing $2"
}

ensure_redis() {
    need_command redis-server redis-server
    need_command redis-cli redis-tools
    if ! redis-cli -u "$TALLY_TEST_REDIS_URL" ping >/dev/null 2>&1; then
        log "starting redis-server on 127.0.0.1:6379"
        mkdir -p /tmp/tally-redis
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" \
            --appendonly no --dir /tmp/tally-redis --logfile /tmp/tally-redis/redis.log
        for _ in $(seq 50); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.1; done
    fi
    redis-cli -u "$TALLY_TEST_REDIS_URL" ping >/dev/null 2>&1 \
        || die "Redis is not reachable at $TALLY_TEST_REDIS_URL"
}

cluster_ok() { # every slot served and the state ok, as node 7000 sees it
    redis-cli -p 7000 cluster info 2>/dev/null | grep -q '^cluster_state:ok' \
        && redis-cli -p 7000 cluster info 2>/dev/null | grep -q '^cluster_slots_ok:16384'
}

# A local Redis Cluster for the cluster backend's tests: six redis-servers
# (3 masters, 3 replicas) with a 2 s node timeout, so that a killed master's
# replica takes over in seconds. Reuses one that runs and is healthy, and
# heals one left half-dead by an earlier run (a killed node is restarted
# from its nodes.conf and rejoins); starts a fresh one otherwise.
ensure_redis_cluster() {
    need_command redis-server redis-server
    need_command redis-cli redis-tools
    local port
    for port in $TALLY_CLUSTER_PORTS; do
        if ! redis-cli -p "$port" ping >/dev/null 2>&1 && [ -f "$TALLY_CLUSTER_DIR/$port/nodes.conf" ]; then
            log "restarting Redis Cluster node $port"
            start_cluster_node "$port"
        fi
    done
    for _ in $(seq 100); do cluster_ok && break; sleep 0.1; done
    if ! cluster_ok; then
        log "starting a fresh Redis Cluster on ports $TALLY_CLUSTER_PORTS"
        for port in $TALLY_CLUSTER_PORTS; do
            redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
        done
        sleep 0.3
        rm -rf "$TALLY_CLUSTER_DIR"
        local nodes=()
        for port in $TALLY_CLUSTER_PORTS; do
            start_cluster_node "$port"
            nodes+=("127.0.0.1:$port")
        done
        for port in $TALLY_CLUSTER_PORTS; do
            for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        done
        redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null \
            || die "redis-cli --cluster create failed"
        for _ in $(seq 200); do cluster_ok && break; sleep 0.1; done
    fi
    cluster_ok || die "the Redis Cluster on $TALLY_CLUSTER_PORTS is not healthy"
}

start_cluster_node() { # start_cluster_node <port>
    mkdir -p "$TALLY_CLUSTER_DIR/$1"
    redis-server --port "$1" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file "$TALLY_CLUSTER_DIR/$1/nodes.conf" --dir "$TALLY_CLUSTER_DIR/$1" \
        --cluster-node-timeout 2000 --repl-diskless-sync-delay 0 \
        --save "" --appendonly no --daemonize yes \
        --logfile "$TALLY_CLUSTER_DIR/$1/redis.log" \
        || die "cannot start redis-server on port $1"
}

ensure_postgres() {
    need_command psql postgresql-client
    if ! psql "$TALLY_TEST_DATABASE_URL" -tAc 'select 1' >/dev/null 2>&1; then
        if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
            apt_install postgresql
        fi
        if command -v pg_ctlcluster >/dev/null && ls /etc/postgresql/ >/dev/null 2>&1; then
            local version
            version="$(ls /etc/postgresql | sort -V | tail -1)"
            log "starting PostgreSQL $version"
            pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
            for _ in $(seq 100); do
                pg_isready -h 127.0.0.1 -q 2>/dev/null && break
                sleep 0.1
            done
            # A fresh cluster: trust local TCP and create the test database.
            if ! psql "$TALLY_TEST_DATABASE_URL" -tAc 'select 1' >/dev/null 2>&1; then
                local hba="/etc/postgresql/$version/main/pg_hba.conf"
                if [ -f "$hba" ] && ! grep -q 'tally-test' "$hba"; then
                    log "allowing trust auth on 127.0.0.1 for the tests"
                    sed -i '1i host all all 127.0.0.1/32 trust # tally-test' "$hba"
                    pg_ctlcluster --skip-systemctl-redirect "$version" main reload
                fi
                runuser -u postgres -- createdb test 2>/dev/null || true
            fi
        fi
    fi
    psql "$TALLY_TEST_DATABASE_URL" -tAc 'select 1' >/dev/null 2>&1 \
        || die "PostgreSQL is not reachable at $TALLY_TEST_DATABASE_URL"
}

# Databases and Redis keys left by earlier runs (tests name theirs
# tally_t_<random>; a killed test run cannot drop its own).
cleanup_test_state() {
    local stale
    stale="$(psql "$TALLY_TEST_DATABASE_URL" -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'tally_t_%' OR datname LIKE 'tally_bench_%'")"
    for db in $stale; do
        psql "$TALLY_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    redis-cli -u "$TALLY_TEST_REDIS_URL" --scan --pattern 'tally_t_*' \
        | xargs -r -n 500 redis-cli -u "$TALLY_TEST_REDIS_URL" DEL >/dev/null
    if cluster_ok; then
        # Every key of a run's prefix shares no slot: delete node by node,
        # on the masters (--scan on a node sees only its own keys).
        local port
        for port in $TALLY_CLUSTER_PORTS; do
            redis-cli -p "$port" role 2>/dev/null | head -1 | grep -q master || continue
            redis-cli -p "$port" --scan --pattern 'tally_t_*' \
                | xargs -r -n 1 redis-cli -p "$port" DEL >/dev/null 2>&1 || true
        done
    fi
}
