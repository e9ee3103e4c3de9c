#!/usr/bin/env python3
"""Live counts at scale: idle subscribers per node and their memory, like-to-push
latency, and pushes delivered per second.

    bench/live.py            100,000 WebSocket subscribers over 6 nodes -> bench/results/live.json
    bench/live.py --smoke    200 subscribers on 1 node -> target/bench-smoke/live.json
    bench/live.py --subscribers 1000   another size -> bench/results/live-1000.json

Open files are capped at 20,000 per process here, so the subscribers are
spread over several `tally serve` nodes (production backend: one Redis, one
PostgreSQL, live counts crossing nodes over Pub/Sub) and one client process per
node (bench/live_clients.mjs), each from its own loopback source address.
Memory per connection = (node RSS with its subscribers - RSS before) / subscribers.
Latency: a probe likes and unlikes a quiet post every ~150 ms through node 0 and
times the push on a subscriber, first idle, then while wrk drives likes on the
subscribed posts (which is also when pushes/s is measured).
"""
import json, math, os, platform, signal, statistics, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from like_http import ROOT, Backend, Tenant, build_release, png, wrk, CFG as HTTP_CFG  # noqa: E402

SMOKE = "--smoke" in sys.argv
SUBSCRIBERS = 200 if SMOKE else 100_000
if "--subscribers" in sys.argv:
    SUBSCRIBERS = int(sys.argv[sys.argv.index("--subscribers") + 1])
PER_NODE = 18_000
POSTS = 10 if SMOKE else 100
PHASE_S = 3 if SMOKE else 15
OUT = (ROOT / "target/bench-smoke") if SMOKE else (ROOT / "bench/results")


def log(msg):
    print(f"[live] {msg}", file=sys.stderr, flush=True)


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else None


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    build_release()
    work = Path(tempfile.mkdtemp(prefix="tally-live-"))
    tenant = Tenant()
    args = tenant.args
    n_nodes = max(1, math.ceil(SUBSCRIBERS / PER_NODE))
    nodes = [Backend(f"node{i}", work, args) for i in range(n_nodes)]
    clients = []
    png(work / "post.png")
    result = {}
    try:
        nodes[0].cli("users", "seed", "--count", "1000", "--tokens-out", str(work / "tokens"))
        tokens = [l.split(" ", 1)[1] for l in (work / "tokens").read_text().split("\n") if l]
        for n in nodes:
            n.serve()
        posts = []
        for i in range(POSTS + 1):
            out = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {tokens[0]}", "-F", f"image=@{work / 'post.png'}",
                                  "-F", "caption=live", f"{nodes[0].base}/v1/posts"], check=True, capture_output=True, text=True).stdout
            posts.append(json.loads(out)["id"])
        probe_post, posts = posts[-1], posts[:-1]
        time.sleep(1)
        before = [rss_kb(n.proc.pid) for n in nodes]
        per_client = math.ceil(SUBSCRIBERS / n_nodes)
        started = time.time()
        for i, n in enumerate(nodes):
            cmd = ["node", str(ROOT / "bench/live_clients.mjs"), n.base.replace("http://", "ws://") + "/v1/live",
                   str(per_client), str(2 + i), ",".join(map(str, posts))]
            if i == 0:
                cmd += [nodes[-1].base, tokens[1], str(probe_post)]  # like on the last node, pushed from node 0
            clients.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
        connected = 0
        for c in clients:
            for line in c.stdout:
                msg = json.loads(line)
                if "connected" in msg:
                    connected += msg["connected"]
                    break
        connect_s = time.time() - started
        log(f"{connected} subscribers connected in {connect_s:.1f}s over {n_nodes} nodes")
        time.sleep(2)
        after = [rss_kb(n.proc.pid) for n in nodes]
        per_conn = [(a - b) * 1024 / per_client for a, b in zip(after, before)]
        result["subscribers"] = {"connected": connected, "target": SUBSCRIBERS, "nodes": n_nodes, "connect_seconds": round(connect_s, 1),
                                 "node_rss_mb_before": [round(b / 1024, 1) for b in before],
                                 "node_rss_mb_after": [round(a / 1024, 1) for a in after],
                                 "bytes_per_connection_median": round(statistics.median(per_conn))}

        def messages():
            total = 0
            for c in clients:
                last = None
                os.set_blocking(c.stdout.fileno(), False)
                for line in iter(c.stdout.readline, ""):
                    last = json.loads(line)
                total += (last or {}).get("messages", c.__dict__.setdefault("last_messages", 0))
                if last and "messages" in last:
                    c.last_messages = last["messages"]
            return total

        def latencies():
            clients[0].send_signal(signal.SIGUSR2)
            time.sleep(0.5)
            os.set_blocking(clients[0].stdout.fileno(), True)
            for line in clients[0].stdout:
                msg = json.loads(line)
                if "latencies" in msg:
                    return msg["latencies"]
                if "messages" in msg:
                    clients[0].last_messages = msg["messages"]

        time.sleep(PHASE_S)
        idle = latencies()
        result["like_to_push_idle_ms"] = {"samples": len(idle), "p50": percentile(idle, 0.5), "p99": percentile(idle, 0.99)}
        log(f"idle like-to-push: {result['like_to_push_idle_ms']}")
        m0 = messages()
        HTTP_CFG.update(duration=f"{PHASE_S}s", posts=len(posts), connections=16, threads=1)
        load = wrk(nodes[0].base, work / "tokens", posts[0])
        m1 = messages()
        under = latencies()[len(idle):]
        result["load"] = {"likes_per_sec": load["likes_per_sec"], "like_p99_ms": load["p99_ms"],
                          "pushes_delivered_per_sec": round((m1 - m0) / PHASE_S)}
        result["like_to_push_under_load_ms"] = {"samples": len(under), "p50": percentile(under, 0.5), "p99": percentile(under, 0.99)}
        log(f"under load: {result['load']}, like-to-push {result['like_to_push_under_load_ms']}")
    finally:
        for c in clients:
            c.kill()
        for n in nodes:
            n.stop()
        tenant.drop()
        subprocess.run(["rm", "-rf", str(work)])
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    doc = {"benchmark": "live counts: idle WebSocket subscribers, memory, like-to-push latency, pushes/s",
           "command": "bench/live.py" + (" --smoke" if SMOKE else ""),
           "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}, "results": result}
    name = "live.json" if SUBSCRIBERS in (100_000, 200) else f"live-{SUBSCRIBERS}.json"
    (OUT / name).write_text(json.dumps(doc, indent=2))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
