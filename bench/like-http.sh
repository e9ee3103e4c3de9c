#!/usr/bin/env bash
# HTTP benchmark of PUT /v1/posts/{id}/like with wrk, on the embedded backend.
#
#   bench/like-http.sh            full run: results in bench/results/
#   bench/like-http.sh --smoke    a few seconds, results in target/bench-smoke/
#
# Seeds users with `tally users seed`, creates posts, then drives random
# (user, post) likes: almost every request changes state and is group-
# committed to SQLite before it is answered. Fails on any non-200 answer and
# checks afterwards that the counts equal the likers.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full DURATION=20s USERS=100000 POSTS=100 CONNECTIONS=64 THREADS=2 REPEAT=3
OUT_DIR=bench/results
if [ "${1:-}" = "--smoke" ]; then
    MODE=smoke DURATION=2s USERS=500 POSTS=5 CONNECTIONS=8 THREADS=1 REPEAT=1
    OUT_DIR=target/bench-smoke
fi
mkdir -p "$OUT_DIR"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

# TALLY_BIN runs another build (e.g. an older commit's) for side-by-side runs.
if [ -z "${TALLY_BIN:-}" ]; then cargo build --release --quiet; fi
BIN="${TALLY_BIN:-target/release/tally}"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

"$BIN" users seed --data-dir "$WORK/data" --count "$USERS" --tokens-out "$WORK/tokens.txt" >&2
TOKEN="$(head -1 "$WORK/tokens.txt" | cut -d' ' -f2)"

TALLY_RATE_LIMITS__USER_WRITES_PER_SEC=0 RUST_LOG=warn \
    "$BIN" serve --data-dir "$WORK/data" --listen 127.0.0.1:0 > "$WORK/stdout" &
SERVER_PID=$!
for _ in $(seq 100); do grep -q listening "$WORK/stdout" 2>/dev/null && break; sleep 0.1; done
BASE="$(sed -n 's/^tally listening on //p' "$WORK/stdout")"
[ -n "$BASE" ] || { echo "server did not start" >&2; exit 1; }

python3 - "$WORK/post.png" <<'PY'
import struct, sys, zlib
w, h = 64, 48
raw = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 4 % 256, y * 5 % 256, 120))
              for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
FIRST_POST=""
for i in $(seq "$POSTS"); do
    id="$(curl -sf -H "Authorization: Bearer $TOKEN" -F image=@"$WORK/post.png" -F caption="bench $i" \
        "$BASE/v1/posts" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
    [ -n "$FIRST_POST" ] || FIRST_POST="$id"
done

RUNS=()
for run in $(seq "$REPEAT"); do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/like.lua "$BASE" \
        -- "$WORK/tokens.txt" "$POSTS" "$FIRST_POST" > "$WORK/wrk-$run.txt"
    cat "$WORK/wrk-$run.txt" >&2
    if grep -q "Non-2xx" "$WORK/wrk-$run.txt"; then echo "non-200 answers" >&2; exit 1; fi
    RUNS+=("$WORK/wrk-$run.txt")
done

# How many of the likes changed state (the rest were repeats, answered from
# memory once their post's pending commit is durable).
curl -sf "$BASE/metrics" | grep '^tally_like_ops_total' > "$WORK/ops.txt" || true

# Consistency: every post's count equals its likers.
python3 - "$BASE" "$FIRST_POST" "$POSTS" <<'PY'
import json, sys, urllib.request
base, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
total = 0
for post in range(first, first + n):
    count = json.load(urllib.request.urlopen(f"{base}/v1/posts/{post}"))["likeCount"]
    likers, cursor = 0, ""
    while True:
        page = json.load(urllib.request.urlopen(f"{base}/v1/posts/{post}/likers?limit=100{cursor}"))
        likers += len(page["items"])
        if not page["nextCursor"]:
            break
        cursor = "&cursor=" + page["nextCursor"]
    assert count == likers, f"post {post}: count {count} != likers {likers}"
    total += count
print(f"consistency: exact ({total} likes over {n} posts)", file=sys.stderr)
PY

python3 - "$OUT_DIR/like-http-embedded.json" "$WORK/ops.txt" "$MODE" "$DURATION" "$USERS" "$POSTS" "$CONNECTIONS" "$THREADS" "${RUNS[@]}" <<'PY'
import json, platform, re, statistics, subprocess, sys
out, ops, mode, duration, users, posts, conns, threads, *runs = sys.argv[1:]
counts = {"true": 0.0, "false": 0.0}
for line in open(ops):
    m = re.search(r'changed="(true|false)".*\s([\d.e+]+)$', line)
    if m:
        counts[m.group(1)] += float(m.group(2))
changed_fraction = counts["true"] / max(1.0, counts["true"] + counts["false"])
def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
results = []
for path in runs:
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.M)}
    results.append({"likes_per_sec": rps, "p50_ms": pct["50"], "p90_ms": pct["90"], "p99_ms": pct["99"]})
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
summary = {k: statistics.median(r[k] for r in results) for k in results[0]}
doc = {
    "benchmark": "PUT /v1/posts/{id}/like, embedded backend, wrk",
    "mode": mode, "duration": duration, "users": int(users), "posts": int(posts),
    "connections": int(conns), "threads": int(threads),
    "machine": {"cpu": cpu, "cores": subprocess.check_output(["nproc"]).decode().strip(),
                "kernel": platform.release()},
    "changed_fraction": round(changed_fraction, 3),
    "command": "bench/like-http.sh" + (" --smoke" if mode == "smoke" else ""),
    "runs": results, "median": summary,
}
json.dump(doc, open(out, "w"), indent=2)
print(json.dumps(summary))
PY
