#!/usr/bin/env python3
"""The like path at its peak, as issue 14 measures it: wrk, 2 threads x 64
connections, toggles by 2,000 users on 1,000 posts (80 % on 100 hot posts),
on Redis + PostgreSQL in fast mode with the node's default settings (its log
goes to a file, as a service's does).

    bench/like_peak.py                 one build, 3 runs -> bench/results/like-peak.json
    bench/like_peak.py --compare OLD   OLD and this tree's release build alternating
                                       (A B A B ...), each on stores of its own
                                       -> bench/results/like-peak-compare.json
    bench/like_peak.py --smoke         seconds, on the debug build (TALLY_BIN) -> target/bench-smoke/

Per run: likes/s, p50/p99 (wrk), answers other than 200, the write-behind's
lag sampled every 250 ms from /metrics (median, p99, max) and how long after
the load the backlog took to drain. At the end every post's likeCount is
proved equal to its likers (the durable store).
"""
import json, os, platform, statistics, subprocess, sys, tempfile, threading, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import like_http as lh  # noqa: E402

ROOT = lh.ROOT
SMOKE = "--smoke" in sys.argv
COMPARE = sys.argv[sys.argv.index("--compare") + 1] if "--compare" in sys.argv else None
CFG = dict(duration="2s", users=200, posts=20, hot=5, hot_share=0.8, threads=1, connections=8, rounds=1) if SMOKE \
    else dict(duration="20s", users=2000, posts=1000, hot=100, hot_share=0.8, threads=2, connections=64,
              rounds=3 if COMPARE else 3)
OUT = (ROOT / "target/bench-smoke") if SMOKE else (ROOT / "bench/results")
# The node's defaults: no RUST_LOG, rate limits on. Only shutdown is hurried.
NODE_ENV = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
NODE_ENV["TALLY_DRAIN_GRACE_MS"] = "0"


def log(msg):
    print(f"[like_peak] {msg}", file=sys.stderr, flush=True)


class Node(lh.Backend):
    """A production node whose log goes to a file."""

    def serve(self, env=None):
        self.logfile = open(self.work / f"{self.name}.log", "w")
        self.proc = subprocess.Popen([self.bin, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(self.data), *self.args],
                                     stdout=subprocess.PIPE, stderr=self.logfile, env=NODE_ENV, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("tally listening on "), f"{self.name} did not start: {line!r}"
        self.base = line.strip().removeprefix("tally listening on ")


def create_posts(node, work):
    """CFG['posts'] posts with consecutive ids (a fresh database), 4 uploads at a time, each by another
    user (the per-user write limit stays on: default settings)."""
    tokens = [l.split(" ", 1)[1] for l in (work / f"{node.name}.tokens").read_text().splitlines() if l.strip()]
    lh.png(work / "post.png")
    (work / f"{node.name}.uploaders").write_text("\n".join(tokens[i % len(tokens)] for i in range(CFG["posts"])) + "\n")
    cmd = (f"xargs -P 4 -I{{}} curl -sf -o /dev/null -H 'Authorization: Bearer {{}}' "
           f"-F image=@{work / 'post.png'} -F caption=peak {node.base}/v1/posts < {work / f'{node.name}.uploaders'}")
    subprocess.run(cmd, shell=True, check=True)
    ids, cursor = [], ""
    while True:
        page = lh.get_json(f"{node.base}/v1/posts?limit=100{cursor}")
        ids += [p["id"] for p in page["items"]]
        if not page["nextCursor"]:
            break
        cursor = "&cursor=" + page["nextCursor"]
    ids.sort()
    assert ids == list(range(ids[0], ids[0] + CFG["posts"])), "post ids are not consecutive"
    node.posts = ids


def wrk(node, work):
    out = subprocess.run(["wrk", f"-t{CFG['threads']}", f"-c{CFG['connections']}", f"-d{CFG['duration']}", "--latency",
                          "-s", str(ROOT / "bench/toggle.lua"), node.base, "--", str(work / f"{node.name}.tokens"),
                          str(CFG["posts"]), str(node.posts[0]), str(CFG["hot"]), str(CFG["hot_share"])],
                         check=True, capture_output=True, text=True).stdout
    print(out, file=sys.stderr)
    import re
    ms = lambda t: float(re.match(r"([\d.]+)", t).group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[re.search(r"(us|ms|s)$", t).group(1)]
    pct = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"likes_per_sec": round(rps * (1 - non2xx / max(total, 1)), 1), "requests_per_sec": rps, "p50_ms": pct["50"],
            "p99_ms": pct["99"], "non_200": non2xx, "requests": total}


def cpu_seconds(pid):
    """User + system CPU of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(node, work):
    samples, stop = [], threading.Event()
    cpu_before = cpu_seconds(node.proc.pid)

    def sample():
        while not stop.is_set():
            try:
                samples.append(lh.metrics(node.base).get("tally_sync_lag_seconds", 0.0))
            except OSError:
                pass
            stop.wait(0.25)

    t = threading.Thread(target=sample)
    t.start()
    r = wrk(node, work)
    ended = time.time()
    # The node's own CPU per answered like: what a change to the node saves
    # even while Redis or the machine's cores are the bottleneck.
    r["node_cpu_us_per_like"] = round((cpu_seconds(node.proc.pid) - cpu_before) * 1e6 / max(r["requests"], 1), 1)
    stop.set()
    t.join()
    # The write-behind's catching up after the load: until the backlog is empty.
    while lh.metrics(node.base).get("tally_sync_backlog_events", 0.0) > 0 and time.time() - ended < 120:
        time.sleep(0.05)
    r["drained_after_s"] = round(time.time() - ended, 2)
    lags = sorted(samples) or [0.0]
    r["sync_lag_median_s"] = round(statistics.median(lags), 3)
    r["sync_lag_p99_s"] = round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 3)
    r["sync_lag_max_s"] = round(lags[-1], 3)
    return r


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    lh.build_release()
    work = Path(tempfile.mkdtemp(prefix="tally-peak-"))
    builds = [("before", COMPARE), ("after", lh.BIN)] if COMPARE else [("this", lh.BIN)]
    tenants, nodes = [], []
    try:
        for name, binary in builds:
            tenant = lh.Tenant()
            tenants.append(tenant)
            node = Node(name, work, tenant.args, binary)
            node.cli("users", "seed", "--count", str(CFG["users"]), "--tokens-out", str(work / f"{name}.tokens"))
            node.serve()
            nodes.append(node)
            create_posts(node, work)
        results = {n.name: {"runs": []} for n in nodes}
        for rnd in range(CFG["rounds"]):
            for node in nodes:
                log(f"round {rnd + 1}/{CFG['rounds']}: {node.name}")
                r = one_run(node, work)
                log(f"{node.name}: {r['likes_per_sec']} likes/s, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                    f"node CPU {r['node_cpu_us_per_like']} us/like, "
                    f"non-200 {r['non_200']}, lag p99 {r['sync_lag_p99_s']} s, drained after {r['drained_after_s']} s")
                results[node.name]["runs"].append(r)
        for node in nodes:
            results[node.name]["consistency"] = lh.prove_counts(node, node.posts)
            log(f"{node.name}: consistency {results[node.name]['consistency']}")
            runs = results[node.name]["runs"]
            results[node.name]["median"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        if COMPARE:
            b, a = results["before"]["median"], results["after"]["median"]
            results["after_over_before"] = {"likes_per_sec": round(a["likes_per_sec"] / b["likes_per_sec"], 3),
                                            "p99_ms": round(a["p99_ms"] / b["p99_ms"], 3),
                                            "node_cpu_us_per_like": round(a["node_cpu_us_per_like"] / b["node_cpu_us_per_like"], 3)}
        ceiling = ROOT / "bench/results/redis-ceiling.json"
        if ceiling.exists():
            p1 = json.loads(ceiling.read_text())["results"]["P1"]["likes_per_sec"]
            for node in nodes:
                results[node.name]["share_of_script_ceiling_p1"] = round(results[node.name]["median"]["likes_per_sec"] / p1, 3)
    finally:
        for n in nodes:
            n.stop()
        for t in tenants:
            t.drop()
        subprocess.run(["rm", "-rf", str(work)])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    doc = {"benchmark": "like path at its peak: wrk toggles, 2,000 users, 1,000 posts, 80 % on 100 hot, Redis + PostgreSQL fast, default settings",
           "command": "bench/like_peak.py" + (f" --compare {COMPARE}" if COMPARE else "") + (" --smoke" if SMOKE else ""),
           "config": CFG, "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}, "results": results}
    name = "like-peak-compare.json" if COMPARE else "like-peak.json"
    (OUT / name).write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: v.get("median", v) if isinstance(v, dict) else v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
