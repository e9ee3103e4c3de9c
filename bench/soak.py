#!/usr/bin/env python3
"""Soak: a production node (Redis + PostgreSQL) under a steady moderate load for a long time, to see
whether its memory stays flat.

    bench/soak.py            30 minutes -> bench/results/soak.json and bench/results/soak.png
    bench/soak.py --smoke    ~20 s -> target/bench-smoke/soak.json and soak.svg
    bench/soak.py --minutes 5 --rate 300 --subscribers 1000

One `tally serve` (write-behind in process, reconciliation off), --subscribers live WebSocket
subscribers (`live.py client`: bare sockets, one post each) and --rate likes/s from --threads
keep-alive HTTP connections, each like a PUT or a DELETE (half each) by a random user on a random
post, paced open-loop (a late answer does not slow the next like). Every second it samples the
node's RSS (VmRSS and RssAnon from /proc/<pid>/status), its open files, the write-behind's lag and
backlog (/metrics), the pushes the subscribers received, and the p50/p99 like latency of the likes
sent in that second. At the end the counts are proved exact (likeCount equals the likers, after the
drain), and the run is plotted: matplotlib in a venv under target/ (bench/requirements-plot.txt)
for full runs, a hand-written SVG for smoke runs or when pip cannot install it.

Memory verdict: start RSS (the first sample once the load runs), end, max, and the slope of a
least-squares line through the RSS samples of the second half of the run (KiB per minute): the
first half includes the allocator's and the connection pools' warm-up.
"""
import argparse, http.client, json, os, platform, random, signal, statistics, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from like_http import BIN, ENV, ROOT, Backend, Tenant, build_release, png, prove_counts  # noqa: E402

if __name__ == "__main__" and sys.argv[1:2] == ["plot"]:
    # `soak.py plot <json> <png>`: the plot alone, run by the venv's Python (plot_png).
    PLOT_ONLY = True
else:
    PLOT_ONLY = False
ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--smoke", action="store_true", help="~20 s, small, results in target/bench-smoke/")
ap.add_argument("--minutes", type=float, help="length of the load (default 30; smoke 1/3)")
ap.add_argument("--rate", type=float, help="likes per second (default 200; smoke 50)")
ap.add_argument("--threads", type=int, default=8, help="HTTP connections sending likes")
ap.add_argument("--subscribers", type=int, help="live WebSocket subscribers (default 1000; smoke 50)")
ap.add_argument("--posts", type=int, help="posts liked and watched (default 100; smoke 10)")
ap.add_argument("--users", type=int, help="users liking (default 10,000; smoke 200)")
OPTS = ap.parse_args([] if PLOT_ONLY else None)

SMOKE = OPTS.smoke
MINUTES = OPTS.minutes or (1 / 3 if SMOKE else 30)
RATE = OPTS.rate or (50 if SMOKE else 200)
SUBSCRIBERS = OPTS.subscribers if OPTS.subscribers is not None else (50 if SMOKE else 1000)
POSTS = OPTS.posts or (10 if SMOKE else 100)
USERS = OPTS.users or (200 if SMOKE else 10_000)
OUT = (ROOT / "target/bench-smoke") if SMOKE else (ROOT / "bench/results")
VENV = ROOT / "target/bench-venv"
# The write-behind runs in the node; reconciliation stays off (like_http's ENV) so that its
# periodic pass does not show as a memory step.
NODE_ENV = dict(ENV, TALLY_PG_MAX_CONNECTIONS="8")


def log(msg):
    print(f"[soak] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def status_kb(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def scrape(base):
    """The gauges and counters the soak follows, from /metrics."""
    want = ("tally_sync_lag_seconds", "tally_sync_backlog_events", "process_open_fds", "tally_live_pushes_total",
            "tally_live_connections")
    out = {}
    conn = http.client.HTTPConnection(base.removeprefix("http://"), timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in want:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else None


class Load:
    """--rate likes/s over --threads keep-alive connections, open-loop; latencies bucketed per second."""

    def __init__(self, base, tokens, posts, t0):
        self.host = base.removeprefix("http://")
        self.tokens, self.posts, self.t0 = tokens, posts, t0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.buckets = {}  # second -> [latency ms]
        self.errors = {}   # status or exception name -> count
        self.sent = 0
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(OPTS.threads)]
        for t in self.threads:
            t.start()

    def run(self, i):
        rng = random.Random(i)
        interval = OPTS.threads / RATE
        conn = http.client.HTTPConnection(self.host, timeout=30)
        due = time.monotonic() + rng.random() * interval
        while not self.stop.is_set():
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            due += interval
            method = "PUT" if rng.random() < 0.5 else "DELETE"
            path = f"/v1/posts/{rng.choice(self.posts)}/like"
            headers = {"Authorization": f"Bearer {rng.choice(self.tokens)}", "Content-Length": "0"}
            started = time.monotonic()
            try:
                conn.request(method, path, headers=headers)
                r = conn.getresponse()
                r.read()
                status = r.status
            except (OSError, http.client.HTTPException) as e:
                status = type(e).__name__
                conn.close()
                conn = http.client.HTTPConnection(self.host, timeout=30)
            ms = (time.monotonic() - started) * 1000
            second = int(time.time() - self.t0)
            with self.lock:
                self.sent += 1
                if status == 200:
                    self.buckets.setdefault(second, []).append(ms)
                else:
                    self.errors[str(status)] = self.errors.get(str(status), 0) + 1

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)


def subscribers(base, posts):
    """`live.py client` processes, one per 10,000 subscribers, each from its own loopback address."""
    procs, left, octet = [], SUBSCRIBERS, 2
    while left > 0:
        n = min(left, 10_000)
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench/live.py"), "client", base.replace("http://", "ws://") + "/v1/live",
                                       str(n), str(octet), ",".join(map(str, posts))], stdout=subprocess.PIPE, text=True))
        left, octet = left - n, octet + 1
    state = {"connected": 0, "messages": 0, "closed": 0}
    per = [dict(state) for _ in procs]

    def read(i, p):
        for line in p.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "connected" in msg:
                per[i]["connected"] = msg["connected"]
            for k in ("messages", "closed"):
                if k in msg:
                    per[i][k] = msg[k]
    for i, p in enumerate(procs):
        threading.Thread(target=read, args=(i, p), daemon=True).start()
    return procs, per


def slope_kib_per_min(points):
    """Least-squares slope of (seconds, KiB) points, in KiB per minute."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(p[0] for p in points)
    my = statistics.fmean(p[1] for p in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return 60 * sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def soak():
    build_release()
    work = Path(tempfile.mkdtemp(prefix="tally-soak-"))
    tenant = Tenant()
    node = Backend("node", work, tenant.args)
    procs = []
    try:
        t_setup = time.time()
        node.cli("users", "seed", "--count", str(USERS), "--tokens-out", str(work / "tokens"), env=NODE_ENV)
        tokens = [line.split(" ", 1)[1] for line in (work / "tokens").read_text().split("\n") if line]
        node.serve(env=NODE_ENV)
        pid = node.proc.pid
        png(work / "post.png")

        def create_post(_):
            out = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {tokens[0]}", "-F", f"image=@{work / 'post.png'}",
                                  "-F", "caption=soak", f"{node.base}/v1/posts"], check=True, capture_output=True, text=True).stdout
            return json.loads(out)["id"]

        with ThreadPoolExecutor(4) as pool:
            posts = sorted(pool.map(create_post, range(POSTS)))
        rss_idle = status_kb(pid, "VmRSS")
        procs, subs = subscribers(node.base, posts)
        deadline = time.time() + 120
        while sum(s["connected"] for s in subs) < SUBSCRIBERS and time.time() < deadline:
            time.sleep(0.2)
        connected = sum(s["connected"] for s in subs)
        assert connected == SUBSCRIBERS, f"only {connected} of {SUBSCRIBERS} subscribers connected"
        log(f"setup {time.time() - t_setup:.0f}s: {USERS} users, {POSTS} posts, {connected} subscribers; "
            f"{RATE:.0f} likes/s for {MINUTES:g} min")

        t0 = time.time()
        load = Load(node.base, tokens, posts, t0)
        samples, second = [], 0
        total = int(MINUTES * 60)
        while second < total:
            second += 1
            time.sleep(max(0.0, t0 + second - time.time()))
            try:
                m = scrape(node.base)
            except OSError as e:
                log(f"scrape failed: {e}")
                m = {}
            samples.append({"t": second, "rss_kib": status_kb(pid, "VmRSS"), "anon_kib": status_kb(pid, "RssAnon"),
                            "open_fds": m.get("process_open_fds"), "lag_s": m.get("tally_sync_lag_seconds"),
                            "backlog": m.get("tally_sync_backlog_events"), "pushes_total": m.get("tally_live_pushes_total"),
                            "received": sum(s["messages"] for s in subs)})
            if second % 60 == 0:
                s = samples[-1]
                log(f"{second // 60} min: RSS {s['rss_kib'] / 1024:.1f} MiB, lag {s['lag_s']}, sent {load.sent}")
            if node.proc.poll() is not None:
                raise SystemExit(f"the node exited ({node.proc.returncode}) at {second}s")
        load.finish()
        elapsed = time.time() - t0
        # Per-second latency: the likes sent in that second (answered ones).
        with load.lock:
            for s in samples:
                lat = load.buckets.get(s["t"] - 1, [])
                s["likes"] = len(lat)
                s["p50_ms"] = round(percentile(lat, 0.5), 2) if lat else None
                s["p99_ms"] = round(percentile(lat, 0.99), 2) if lat else None
            all_lat = [x for v in load.buckets.values() for x in v]
            errors, sent = dict(load.errors), load.sent
        consistency = prove_counts(node, posts)
        closed = sum(s["closed"] for s in subs)
        log(f"consistency: {consistency}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        node.stop()
        tenant.drop()
        subprocess.run(["rm", "-rf", str(work)])

    rss = [s["rss_kib"] for s in samples]
    second_half = [(s["t"], s["rss_kib"]) for s in samples[len(samples) // 2:]]
    lags = [s["lag_s"] for s in samples if s["lag_s"] is not None]
    p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
    summary = {
        "seconds": round(elapsed, 1), "likes_sent": sent, "likes_ok": len(all_lat), "likes_per_sec": round(len(all_lat) / elapsed, 1),
        "errors": errors, "subscribers": SUBSCRIBERS, "subscribers_closed": closed,
        "pushes_received": samples[-1]["received"] if samples else 0,
        "rss_idle_mib": round(rss_idle / 1024, 1), "rss_start_mib": round(rss[0] / 1024, 1), "rss_end_mib": round(rss[-1] / 1024, 1),
        "rss_max_mib": round(max(rss) / 1024, 1), "rss_slope_second_half_kib_per_min": round(slope_kib_per_min(second_half), 1),
        "rss_slope_whole_kib_per_min": round(slope_kib_per_min([(s["t"], s["rss_kib"]) for s in samples]), 1),
        "anon_start_mib": round(samples[0]["anon_kib"] / 1024, 1), "anon_end_mib": round(samples[-1]["anon_kib"] / 1024, 1),
        "latency_p50_ms": round(percentile(all_lat, 0.5), 2), "latency_p99_ms": round(percentile(all_lat, 0.99), 2),
        "latency_p999_ms": round(percentile(all_lat, 0.999), 2),
        "worst_second_p99_ms": max(p99s, default=None), "lag_max_s": max(lags, default=None),
        "lag_median_s": statistics.median(lags) if lags else None,
        "seconds_with_lag_over_1s": sum(1 for x in lags if x > 1), "open_fds_max": max((s["open_fds"] or 0 for s in samples), default=None),
        "consistency": consistency,
    }
    return summary, samples


def plot_png(doc_path, png_path):
    """matplotlib from the venv under target/ (created on first use from bench/requirements-plot.txt)."""
    py = VENV / "bin/python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "-r", str(ROOT / "bench/requirements-plot.txt")], check=True)
    subprocess.run([str(py), __file__, "plot", str(doc_path), str(png_path)], check=True)


def plot_matplotlib(doc_path, png_path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    doc = json.loads(Path(doc_path).read_text())
    s = doc["samples"]
    t = [x["t"] / 60 for x in s]
    fig, ax = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ax[0].plot(t, [x["rss_kib"] / 1024 for x in s], label="VmRSS")
    ax[0].plot(t, [x["anon_kib"] / 1024 for x in s], label="RssAnon")
    ax[0].set_ylabel("node memory (MiB)")
    ax[0].set_ylim(bottom=0)
    ax[0].legend(loc="lower right")
    ax[1].plot(t, [x["p50_ms"] for x in s], label="p50", linewidth=0.8)
    ax[1].plot(t, [x["p99_ms"] for x in s], label="p99", linewidth=0.8)
    ax[1].set_ylabel("like latency (ms)")
    ax[1].set_yscale("log")
    ax[1].legend(loc="upper right")
    ax[2].plot(t, [x["lag_s"] for x in s], linewidth=0.8)
    ax[2].set_ylabel("write-behind lag (s)")
    ax[2].set_xlabel("minutes")
    r = doc["results"]
    fig.suptitle(f"Soak: {r['likes_per_sec']} likes/s, {r['subscribers']} subscribers, {r['seconds'] / 60:.0f} min; "
                 f"RSS {r['rss_start_mib']} → {r['rss_end_mib']} MiB (max {r['rss_max_mib']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)


def plot_svg(doc, svg_path):
    """Three panels (RSS, p99 latency, lag) as polylines, no dependencies."""
    s = doc["samples"]
    w, h, pad = 900, 180, 50
    series = [("node VmRSS (MiB)", [x["rss_kib"] / 1024 for x in s]),
              ("like latency p99 (ms)", [x["p99_ms"] or 0 for x in s]),
              ("write-behind lag (s)", [x["lag_s"] or 0 for x in s])]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h * 3}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h * 3}" fill="white"/>']
    n = max(len(s) - 1, 1)
    for i, (name, ys) in enumerate(series):
        top, hi = i * h, max(max(ys, default=0), 1e-9)
        pts = " ".join(f"{pad + (w - 2 * pad) * j / n:.1f},{top + h - 25 - (h - 45) * y / hi:.1f}" for j, y in enumerate(ys))
        parts += [f'<text x="{pad}" y="{top + 15}">{name}: max {hi:.2f}, over {s[-1]["t"] if s else 0} s</text>',
                  f'<line x1="{pad}" y1="{top + h - 25}" x2="{w - pad}" y2="{top + h - 25}" stroke="#999"/>',
                  f'<polyline fill="none" stroke="#1f77b4" stroke-width="1" points="{pts}"/>']
    parts.append("</svg>")
    Path(svg_path).write_text("\n".join(parts))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "plot":
        plot_matplotlib(sys.argv[2], sys.argv[3])
        return
    OUT.mkdir(parents=True, exist_ok=True)
    started_at = datetime.now(timezone.utc)
    summary, samples = soak()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    command = "bench/soak.py" + (" --smoke" if SMOKE else "") + "".join(
        f" --{k} {v}" for k, v in (("minutes", OPTS.minutes), ("rate", OPTS.rate), ("subscribers", OPTS.subscribers),
                                  ("posts", OPTS.posts), ("users", OPTS.users)) if v is not None)
    doc = {
        "benchmark": "soak: one production node (Redis + PostgreSQL) under steady likes and live subscribers; RSS, latency, lag per second",
        "command": command,
        "started_at": started_at.isoformat(timespec="seconds"),
        "config": {"minutes": MINUTES, "rate": RATE, "threads": OPTS.threads, "subscribers": SUBSCRIBERS, "posts": POSTS, "users": USERS,
                   "binary": BIN},
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                    "load_avg_at_end": os.getloadavg()},
        "results": summary,
        "samples": samples,
    }
    path = OUT / "soak.json"
    path.write_text(json.dumps(doc, indent=1))
    print(json.dumps(summary, indent=1))
    if SMOKE:
        plot_svg(doc, OUT / "soak.svg")
    else:
        try:
            plot_png(path, OUT / "soak.png")
        except (OSError, subprocess.CalledProcessError) as e:
            log(f"no matplotlib ({e}): writing an SVG instead")
            plot_svg(doc, OUT / "soak.svg")
    if SMOKE and summary["errors"]:
        raise SystemExit(f"failed likes in a smoke run: {summary['errors']}")
    log(f"RSS {summary['rss_start_mib']} -> {summary['rss_end_mib']} MiB (max {summary['rss_max_mib']}), "
        f"slope {summary['rss_slope_second_half_kib_per_min']} KiB/min; results in {path}")


if __name__ == "__main__":
    main()
