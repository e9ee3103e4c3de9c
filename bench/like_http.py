#!/usr/bin/env python3
"""HTTP benchmark of PUT /v1/posts/{id}/like with wrk, both backends side by side.

    bench/like_http.py            full run, results in bench/results/like-http.json
    bench/like_http.py --smoke    seconds, results in target/bench-smoke/
    bench/like_http.py --compare OLD_BIN
                                  the like path of two builds side by side: OLD_BIN and
                                  this tree's, alternating, on both backends (no drain
                                  phase); results in bench/results/like-http-compare.json
    bench/like_http.py --sessions the cost of the session check (sign-out, deleted users) on the
                                  like path: one build, the check off and on
                                  (TALLY_AUTH__CHECK_SESSIONS), alternating, on both backends;
                                  results in bench/results/like-http-sessions-{users}-users.json
                                  (TALLY_BENCH_USERS=N: N users instead of 100,000)

For each backend it seeds users (`tally users seed`), creates posts and starts
one `tally serve`. Then it alternates wrk runs between the backends (embedded,
production, embedded, ...) so that both see the same machine noise. Every
request is a like by a random user on a random post, so nearly all of them
change state. While the production backend runs it samples the write-behind's
backlog and lag from /metrics. At the end it proves the counts: every post's
likeCount equals its likers (read from the durable store), after the drain.

Finally, on the production backend only, it measures the write-behind alone:
likes pile up in the streams while no worker runs, then `tally worker` starts
and the time to drain them gives its rows/s.
"""
import json, os, platform, re, signal, statistics, subprocess, sys, tempfile, threading, time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOKE = "--smoke" in sys.argv
CFG = dict(duration="2s", users=500, posts=5, connections=8, threads=1, repeat=1, drain_load="2s") if SMOKE \
    else dict(duration="20s", users=100_000, posts=100, connections=64, threads=2, repeat=3, drain_load="10s")
if os.environ.get("TALLY_BENCH_USERS"):
    # Fewer users: each sends more likes per session (the session check's cache hits).
    CFG["users"] = int(os.environ["TALLY_BENCH_USERS"])
OUT = (ROOT / "target/bench-smoke") if SMOKE else (ROOT / "bench/results")
REDIS = os.environ.get("TALLY_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ADMIN_DB = os.environ.get("TALLY_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
BIN = os.environ.get("TALLY_BIN") or str(Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release/tally")
COMPARE = sys.argv[sys.argv.index("--compare") + 1] if "--compare" in sys.argv else None
SESSIONS = "--sessions" in sys.argv
# No load balancer watches these nodes: SIGTERM stops them at once
# (TALLY_DRAIN_GRACE_MS, docs/OPERATIONS.md).
ENV = dict(os.environ, TALLY_RATE_LIMITS__USER_WRITES_PER_SEC="0", RUST_LOG="warn",
           TALLY_RECONCILE_INTERVAL_SECS="0", TALLY_DRAIN_GRACE_MS="0")


def log(msg):
    print(f"[like_http] {msg}", file=sys.stderr, flush=True)


def psql(url, sql):
    return subprocess.run(["psql", url, "-qtAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def build_release():
    """The release binary, unless TALLY_BIN names one (smoke runs use the debug build)."""
    if not os.environ.get("TALLY_BIN"):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)


class Tenant:
    """A fresh PostgreSQL database and Redis key prefix for one run: `args` point a node at them,
    `drop()` removes both."""

    def __init__(self):
        self.suffix = os.urandom(6).hex()
        self.db_name, self.prefix = f"tally_bench_{self.suffix}", f"bench_{self.suffix}"
        psql(ADMIN_DB, f"CREATE DATABASE {self.db_name}")
        db_url = ADMIN_DB.rsplit("/", 1)[0] + "/" + self.db_name
        self.args = ["--redis-url", REDIS, "--database-url", db_url, "--key-prefix", self.prefix]

    def drop(self):
        psql(ADMIN_DB, f"DROP DATABASE IF EXISTS {self.db_name}")
        subprocess.run(f"redis-cli -u {REDIS} --scan --pattern '{self.prefix}:*' | xargs -r -n 1000 redis-cli -u {REDIS} DEL > /dev/null",
                       shell=True)


def png(path):
    import struct, zlib
    w, h = 64, 48
    raw = b"".join(b"\x00" + bytes(v for x in range(w) for v in (x * 4 % 256, y * 5 % 256, 120)) for y in range(h))
    chunk = lambda k, d: struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


def metrics(base):
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(tally_sync_lag_seconds|tally_sync_backlog_events|tally_sync_events_total|tally_like_ops_total|tally_auth_session_lookups_total|tally_auth_session_lookup_errors_total)(\{[^}]*\})?\s+(\S+)$", line)
        if m:
            key = m.group(1) + (m.group(2) or "")
            out[key] = float(m.group(3))
    return out


class Backend:
    def __init__(self, name, work, extra_args, bin=None, env=None):
        self.name, self.work, self.args = name, work, extra_args
        self.bin = bin or BIN
        self.env = env
        self.data = work / name
        self.proc = None

    def cli(self, *args, env=None):
        return subprocess.run([self.bin, *args, "--data-dir", str(self.data), *self.args], check=True,
                              capture_output=True, text=True, env=env or ENV)

    def serve(self, env=None):
        self.proc = subprocess.Popen([self.bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data), *self.args],
                                     stdout=subprocess.PIPE, env=env or self.env or ENV, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("tally listening on "), f"{self.name} did not start: {line!r}"
        self.base = line.strip().removeprefix("tally listening on ")

    def stop(self):
        if self.proc:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)
            self.proc = None


def wrk(base, tokens, first_post):
    out = subprocess.run(["wrk", f"-t{CFG['threads']}", f"-c{CFG['connections']}", f"-d{CFG['duration']}", "--latency",
                          "-s", str(ROOT / "bench/like.lua"), base, "--", str(tokens), str(CFG["posts"]), str(first_post)],
                         check=True, capture_output=True, text=True).stdout
    print(out, file=sys.stderr)
    assert "Non-2xx" not in out, "non-200 answers"
    ms = lambda t: float(re.match(r"([\d.]+)", t).group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[re.search(r"(us|ms|s)$", t).group(1)]
    pct = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"likes_per_sec": rps, "p50_ms": pct["50"], "p90_ms": pct["90"], "p99_ms": pct["99"]}


def sampler(base, samples, stop):
    while not stop.is_set():
        try:
            m = metrics(base)
            samples.append((m.get("tally_sync_lag_seconds", 0.0), m.get("tally_sync_backlog_events", 0.0)))
        except OSError:
            pass
        stop.wait(0.5)


def prove_counts(b, posts, timeout=120):
    """likeCount (the fast path) equals the likers (the durable store) for every post."""
    deadline = time.time() + timeout
    while True:
        bad, total = [], 0
        for post in posts:
            count = get_json(f"{b.base}/v1/posts/{post}")["likeCount"]
            likers, cursor = 0, ""
            while True:
                page = get_json(f"{b.base}/v1/posts/{post}/likers?limit=100{cursor}")
                likers += len(page["items"])
                if not page["nextCursor"]:
                    break
                cursor = "&cursor=" + page["nextCursor"]
            total += count
            if count != likers:
                bad.append((post, count, likers))
        if not bad:
            return f"exact ({total} likes over {len(posts)} posts)"
        if time.time() > deadline:
            raise SystemExit(f"{b.name}: counts differ from likers: {bad[:5]}")
        time.sleep(0.5)


def redis_backlog(prefix):
    """Events not yet applied: pending + lag of the consumer group, per stream."""
    keys = subprocess.run(["redis-cli", "-u", REDIS, "--scan", "--pattern", f"{prefix}:*:events"],
                          capture_output=True, text=True, check=True).stdout.split()
    total = 0
    for k in keys:
        out = subprocess.run(["redis-cli", "-u", REDIS, "XINFO", "GROUPS", k], capture_output=True, text=True).stdout.split("\n")
        fields = dict(zip(out[0::2], out[1::2]))
        if "pending" in fields:
            total += int(fields["pending"]) + int(fields.get("lag") or 0)
        else:
            total += int(subprocess.run(["redis-cli", "-u", REDIS, "XLEN", k], capture_output=True, text=True).stdout or 0)
    return total


def write_behind_drain(prod, prefix, results):
    """The write-behind alone: likes pile up with no worker, then `tally worker` drains them."""
    prod.stop()
    prod.serve(env=dict(ENV, TALLY_SYNC__IN_PROCESS="false"))
    cfg = dict(CFG)
    CFG["duration"] = cfg["drain_load"]
    wrk(prod.base, prod.work / f"{prod.name}.tokens", prod.posts[0])
    CFG["duration"] = cfg["duration"]
    pending = redis_backlog(prefix)
    started = time.time()
    worker = subprocess.Popen([BIN, "worker", "--data-dir", str(prod.data), *prod.args], env=ENV)
    while redis_backlog(prefix) > 0:
        time.sleep(0.05)
    drain_s = time.time() - started
    worker.send_signal(signal.SIGTERM); worker.wait(timeout=60)
    results["write_behind_drain"] = {"events": pending, "seconds": round(drain_s, 2),
                                     "rows_per_sec": round(pending / drain_s, 1) if drain_s else None}
    log(f"write-behind drained {pending} events in {drain_s:.2f}s")


def prepare(backends, work):
    """Seeds users, starts each backend's server and creates its posts."""
    png(work / "post.png")
    results = {}
    for b in backends:
        b.cli("users", "seed", "--count", str(CFG["users"]), "--tokens-out", str(work / f"{b.name}.tokens"))
        b.serve()
        token = (work / f"{b.name}.tokens").read_text().split("\n", 1)[0].split(" ", 1)[1]
        b.posts = []
        for i in range(CFG["posts"]):
            out = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {token}", "-F", f"image=@{work / 'post.png'}",
                                  "-F", f"caption=bench {i}", f"{b.base}/v1/posts"], check=True, capture_output=True, text=True).stdout
            b.posts.append(json.loads(out)["id"])
        results[b.name] = {"runs": []}
    return results


def alternate(backends, work, results, production):
    """CFG['repeat'] rounds of one wrk run per backend, the order rotating each round; `production(b)` says whether to sample the
    write-behind of b. Then proves each backend's counts and takes the medians."""
    for run in range(CFG["repeat"]):
        # Rotated each round, so that no backend always runs right after the
        # same one (and its write-behind's catching up).
        shift = run % len(backends)
        for b in backends[shift:] + backends[:shift]:
            log(f"run {run + 1}/{CFG['repeat']}: {b.name}")
            samples, stop = [], threading.Event()
            t = threading.Thread(target=sampler, args=(b.base, samples, stop))
            t.start()
            before = metrics(b.base)
            started = time.time()
            r = wrk(b.base, work / f"{b.name}.tokens", b.posts[0])
            elapsed = time.time() - started
            after = metrics(b.base)
            stop.set(); t.join()
            if SESSIONS:
                lookups = after.get("tally_auth_session_lookups_total", 0) - before.get("tally_auth_session_lookups_total", 0)
                r["session_lookups_per_like"] = round(lookups / max(r["likes_per_sec"] * elapsed, 1), 3)
            if production(b):
                r["sync_rows_per_sec"] = round((after.get("tally_sync_events_total", 0) - before.get("tally_sync_events_total", 0)) / elapsed, 1)
                lags = [s[0] for s in samples]
                r["sync_lag_max_s"] = max(lags, default=0.0)
                r["sync_lag_median_s"] = statistics.median(lags) if lags else 0.0
                r["sync_backlog_max"] = max((s[1] for s in samples), default=0.0)
            results[b.name]["runs"].append(r)
    for b in backends:
        results[b.name]["consistency"] = prove_counts(b, b.posts)
        log(f"{b.name}: consistency {results[b.name]['consistency']}")
        ops = metrics(b.base)
        changed = sum(v for k, v in ops.items() if k.startswith("tally_like_ops_total") and 'changed="true"' in k)
        allops = sum(v for k, v in ops.items() if k.startswith("tally_like_ops_total"))
        results[b.name]["changed_fraction"] = round(changed / max(allops, 1), 3)
        runs = results[b.name]["runs"]
        results[b.name]["median"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def write_results(name, benchmark, command, results):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    doc = {
        "benchmark": benchmark,
        "command": command + (" --smoke" if SMOKE else ""),
        "config": CFG,
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()},
        "results": results,
    }
    (OUT / name).write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: v.get("median", v) if isinstance(v, dict) else v for k, v in results.items()}, indent=1))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    build_release()
    work = Path(tempfile.mkdtemp(prefix="tally-bench-"))
    tenant = Tenant()
    prefix, prod_args = tenant.prefix, tenant.args
    backends = [Backend("embedded", work, []), Backend("redis_pg", work, prod_args)]
    tenants = [tenant]
    if SESSIONS:
        # One build, the session check off and on, each with stores of its
        # own; runs alternate over all four.
        other = Tenant()
        tenants.append(other)
        off = dict(ENV, TALLY_AUTH__CHECK_SESSIONS="false")
        backends = [Backend("embedded@check-off", work, [], env=off), Backend("embedded@check-on", work, []),
                    Backend("redis_pg@check-off", work, other.args, env=off), Backend("redis_pg@check-on", work, prod_args)]
    if COMPARE:
        # Each build on each backend, with stores of its own; runs alternate
        # over all four so that they share the machine's noise.
        other = Tenant()
        tenants.append(other)
        backends = [Backend("embedded@before", work, [], COMPARE), Backend("embedded@after", work, []),
                    Backend("redis_pg@before", work, other.args, COMPARE), Backend("redis_pg@after", work, prod_args)]
    try:
        results = prepare(backends, work)
        alternate(backends, work, results, lambda b: b.name.startswith("redis_pg"))
        if SESSIONS:
            for backend in ("embedded", "redis_pg"):
                on, off = (results[f"{backend}@check-{x}"]["median"] for x in ("on", "off"))
                results[f"{backend}_on_over_off"] = {"likes_per_sec": round(on["likes_per_sec"] / off["likes_per_sec"], 3),
                                                     "p50_ms": round(on["p50_ms"] - off["p50_ms"], 3),
                                                     "p99_ms": round(on["p99_ms"] - off["p99_ms"], 3)}
        elif COMPARE:
            for backend in ("embedded", "redis_pg"):
                before = results[f"{backend}@before"]["median"]["likes_per_sec"]
                after = results[f"{backend}@after"]["median"]["likes_per_sec"]
                results[f"{backend}_after_over_before"] = round(after / before, 3)
        else:
            write_behind_drain(backends[1], prefix, results)
    finally:
        for b in backends:
            b.stop()
        for t in tenants:
            t.drop()
        subprocess.run(["rm", "-rf", str(work)])

    if SESSIONS:
        write_results(f"like-http-sessions-{CFG['users']}-users.json",
                      "PUT /v1/posts/{id}/like with wrk: the session check (auth.check_sessions) off vs on, "
                      "embedded and Redis + PostgreSQL, alternating runs; p50_ms/p99_ms in *_on_over_off are on minus off",
                      ("TALLY_BENCH_USERS=%d " % CFG["users"] if os.environ.get("TALLY_BENCH_USERS") else "") + "bench/like_http.py --sessions", results)
        return
    write_results("like-http-compare.json" if COMPARE else "like-http.json",
                  "PUT /v1/posts/{id}/like with wrk, embedded vs Redis + PostgreSQL, alternating runs"
                  + (f"; two builds ({COMPARE} before, this tree after)" if COMPARE else ""),
                  "bench/like_http.py" + (f" --compare {COMPARE}" if COMPARE else ""), results)


if __name__ == "__main__":
    main()
