#!/usr/bin/env bash
# schemathesis against the served /openapi.json, on both backends: no 5xx,
# and every answer (status, content type, headers, body) as the document says.
#
#   tests/schemathesis/run.sh              embedded, then Redis + PostgreSQL
#   tests/schemathesis/run.sh embedded     one backend (embedded | redis_pg)
#
# Settings (environment):
#   TALLY_BIN                 the binary under test  [target/debug/tally]
#   SCHEMATHESIS_MAX_EXAMPLES cases per operation and phase  [25]
#   SCHEMATHESIS_SEED         the generator's seed   [1: the same cases every run;
#                             any other value explores new ones]
#
# schemathesis comes from PyPI, pinned in requirements.txt, into a venv under
# target/ (made once). A signed-up user's token goes with every request, so
# protected operations are reached past 401. Rate limits are off: a 429 would
# hide the handler behind it. The WebSocket upgrade (/v1/live) is left out:
# it is not a request/response operation (tests/api/live.rs covers it).
# So is sign-out (DELETE /v1/sessions/current): fuzzed, it revokes the run's
# token and every later protected request answers 401 (tests/api/sessions.rs
# covers it).
# A failing run prints each case with a curl line to reproduce it.

set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/services.sh

BIN="${TALLY_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/tally}"
VENV="$PWD/target/schemathesis-venv"
MAX_EXAMPLES="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
SEED="${SCHEMATHESIS_SEED:-1}"
[ -x "$BIN" ] || die "no tally binary at $BIN (cargo build -p tally, or set TALLY_BIN)"

need_command python3 python3
if [ ! -x "$VENV/bin/schemathesis" ] || ! cmp -s tests/schemathesis/requirements.txt "$VENV/requirements.txt"; then
    log "installing schemathesis into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/schemathesis/requirements.txt \
        || die "pip could not install tests/schemathesis/requirements.txt"
    cp tests/schemathesis/requirements.txt "$VENV/requirements.txt"
fi

WORK="$(mktemp -d /tmp/tally-schemathesis.XXXXXX)"
NODE_PID=""
DB=""
PREFIX=""
cleanup() {
    if [ -n "$NODE_PID" ]; then
        kill "$NODE_PID" 2>/dev/null || true
        wait "$NODE_PID" 2>/dev/null || true
    fi
    if [ -n "$DB" ]; then
        psql "$TALLY_TEST_DATABASE_URL" -qtAc "DROP DATABASE IF EXISTS $DB" >/dev/null || true
    fi
    if [ -n "$PREFIX" ]; then
        redis-cli -u "$TALLY_TEST_REDIS_URL" --scan --pattern "$PREFIX:*" \
            | xargs -r -n 1000 redis-cli -u "$TALLY_TEST_REDIS_URL" DEL >/dev/null || true
    fi
    rm -rf "$WORK"
    NODE_PID="" DB="" PREFIX=""
}
trap cleanup EXIT

run_backend() { # run_backend <embedded|redis_pg>
    local backend="$1" args=() base token
    if [ "$backend" = redis_pg ]; then
        ensure_redis
        ensure_postgres
        local suffix
        suffix="$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
        DB="tally_schemathesis_$suffix" PREFIX="schemathesis_$suffix"
        psql "$TALLY_TEST_DATABASE_URL" -qtAc "CREATE DATABASE $DB" >/dev/null
        args=(--redis-url "$TALLY_TEST_REDIS_URL" --database-url "${TALLY_TEST_DATABASE_URL%/*}/$DB" --key-prefix "$PREFIX")
    fi
    mkdir -p "$WORK/$backend"
    TALLY_RATE_LIMITS__USER_WRITES_PER_SEC=0 TALLY_RATE_LIMITS__AUTH_PER_MIN_PER_IP=0 \
        TALLY_RECONCILE_INTERVAL_SECS=0 TALLY_DRAIN_GRACE_MS=0 RUST_LOG=warn \
        "$BIN" serve --listen 127.0.0.1:0 --data-dir "$WORK/$backend/data" "${args[@]}" \
        >"$WORK/$backend/stdout" 2>"$WORK/$backend/stderr" &
    NODE_PID=$!
    for _ in $(seq 600); do
        grep -q '^tally listening on ' "$WORK/$backend/stdout" 2>/dev/null && break
        kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/$backend/stderr" >&2; die "$backend: tally serve exited"; }
        sleep 0.1
    done
    base="$(sed -n 's/^tally listening on //p' "$WORK/$backend/stdout")"
    [ -n "$base" ] || die "$backend: tally serve did not start within 60 s"

    curl -sf -X POST "$base/v1/users" -H 'Content-Type: application/json' \
        -d '{"username":"schemathesis","password":"schemathesis-password"}' >/dev/null \
        || die "$backend: sign-up failed"
    token="$(curl -sf -X POST "$base/v1/sessions" -H 'Content-Type: application/json' \
        -d '{"username":"schemathesis","password":"schemathesis-password"}' \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["token"])')" \
        || die "$backend: sign-in failed"

    log "schemathesis on $backend ($base, $MAX_EXAMPLES cases per operation and phase, seed $SEED)"
    local status=0
    # From the work dir: schemathesis keeps its example database in ./.schemathesis.
    (cd "$WORK" && "$VENV/bin/schemathesis" run "$base/openapi.json" \
        --header "Authorization: Bearer $token" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
        --exclude-path /v1/live \
        --exclude-path /v1/sessions/current \
        --max-examples "$MAX_EXAMPLES" --seed "$SEED" --workers 2 --request-timeout 30 \
        --no-color) || status=$?
    if [ "$status" -ne 0 ]; then
        log "$backend: the node's log:"
        tail -50 "$WORK/$backend/stderr" >&2
        die "schemathesis found failures on $backend (exit $status)"
    fi
    cleanup
    WORK="$(mktemp -d /tmp/tally-schemathesis.XXXXXX)"
}

backends=("$@")
[ ${#backends[@]} -gt 0 ] || backends=(embedded redis_pg)
for backend in "${backends[@]}"; do
    case "$backend" in
        embedded | redis_pg) run_backend "$backend" ;;
        *) die "unknown backend $backend (embedded | redis_pg)" ;;
    esac
done
log "schemathesis: no failures on ${backends[*]}"
