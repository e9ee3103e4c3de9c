#!/usr/bin/env python3
"""Live counts at scale: idle subscribers per node and their memory, like-to-push
latency, and pushes delivered per second.

    bench/live.py            100,000 WebSocket subscribers over 6 nodes -> bench/results/live.json
    bench/live.py --smoke    200 subscribers on 1 node -> target/bench-smoke/live.json
    bench/live.py --subscribers 1000   another size -> bench/results/live-1000.json

    The million (bench/results/live-1000000.json; live-<N>.json with the N reached if it stops short):
    bench/live.py --subscribers 1000000 --redis-url redis+cluster://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002 \\
        --client py --parallel 2 --posts 1000 --like-rate 20

Open files are capped at 20,000 per process here, so the subscribers are
spread over several `tally serve` nodes (production backend: one Redis or a
Redis Cluster, one PostgreSQL, live counts crossing nodes over (sharded)
Pub/Sub), at most --per-node (18,000) each, and one client process per node,
each from its own loopback source address: bench/live_clients.mjs (`ws`
objects, or bare sockets with --client lean) or, with --client py, `live.py
client` (bare sockets and epoll, ~0.3 KB per subscriber instead of ~6 KB for a
bare Node socket: what lets a million fit next to the servers).

Nodes start as their clients do: --parallel clients connect at once (default:
all), the next node and client start when one has finished. A memory guard
stops adding subscribers when MemAvailable drops under --mem-guard-mib (and
kills the clients if it falls to half of that); --ramp-limit bounds the ramp
in seconds. The result then says how far it got and what stopped it.

Memory per subscriber: server side = (node anonymous RSS with its subscribers
- after start) / its subscribers, median over nodes (VmRSS deltas are kept too,
but they also count the binary's mapped pages, which the kernel evicts when
memory runs low); client side = the same for the client processes; all in =
the drop of MemAvailable / subscribers (both ends, kernel included).
Latency: a probe (its own process) likes and unlikes a quiet post every ~150 ms
through the last node and times the push on a subscriber of node 0, first
idle, then while likes flow on the subscribed posts (closed-loop wrk with 16
connections, or --like-rate likes/s), which is also when pushes/s is measured.
Nodes other than node 0 run without write-behind workers and with one
PostgreSQL connection (55 nodes must fit PostgreSQL's 100 connections).
"""
import errno, json, os, select, signal, socket, sys, time

# ---- the Python client process ------------------------------------------------
def own_rss(field="VmRSS"):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0

def client_process(url, count, octet, posts, inflight):
    """`live.py client <ws url> <connections> <first source octet> <posts csv>`: the same subscribers and JSON lines as
    live_clients.mjs (without the probe), on bare non-blocking sockets and epoll, a few hundred bytes each
    (a Node `ws` object is tens of KB, a bare Node socket ~6 KB; at a million subscribers that decides
    whether they fit)."""
    hostport, path = url.split("://", 1)[1].split("/", 1)
    host, port = hostport.rsplit(":", 1)
    port = int(port)
    request = (f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    frames = []
    for p in posts:
        payload = json.dumps({"type": "subscribe", "postIds": [p]}, separators=(",", ":")).encode()
        frames.append(bytes([0x81, 0x80 | len(payload), 0, 0, 0, 0]) + payload)
    rss0, anon0 = own_rss(), own_rss("RssAnon")
    ep = select.epoll()
    IN, OUT, ERRS = select.EPOLLIN, select.EPOLLOUT, select.EPOLLERR | select.EPOLLHUP
    # per fd: phase 1 connecting, 2 handshaking, 3 open; rem: payload bytes left to skip
    phase, rem, post_of, partial, fresh = {}, {}, {}, {}, set()
    stopping = [False]
    signal.signal(signal.SIGUSR1, lambda *_: stopping.__setitem__(0, True))
    connected = errors = closed = messages = subscribed = 0
    nxt = pending = 0
    started = last = time.time()
    done_reported = False
    out = sys.stdout

    source = [octet, 10000]  # address, last port

    def opn(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        # Source ports counted up from 10,000 (below the ephemeral range, past the ones taken): bind(addr, 0)
        # searches for a free port, slower with every socket bound on the address (most of the ramp's
        # kernel time at 18,000 per address), and connect() picking the port runs out early.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAITs of an earlier run
        while True:
            source[1] += 1
            if source[1] > 32000:
                source[0], source[1] = source[0] + 1, 10001
            try:
                s.bind((f"127.0.0.{source[0]}", source[1]))
                break
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    s.close()
                    raise
        s.connect_ex((host, port))
        fd = s.detach()
        phase[fd] = 1
        post_of[fd] = i % len(frames)
        fresh.add(fd)
        ep.register(fd, OUT | ERRS)

    def fail(fd):
        nonlocal errors, closed, pending
        ph = phase.pop(fd, 0)
        if ph == 3:
            closed += 1
        else:
            errors += 1
            pending -= 1
        rem.pop(fd, None); post_of.pop(fd, None); partial.pop(fd, None); fresh.discard(fd)
        try:
            ep.unregister(fd)
        except OSError:
            pass
        os.close(fd)

    while True:
        while not done_reported and not stopping[0] and nxt < count and pending < inflight:
            try:
                opn(nxt)
            except OSError as e:
                errors += 1
                if errors <= 5:
                    print(f"connect: {e}", file=sys.stderr)
            else:
                pending += 1
            nxt += 1
        if not done_reported and pending == 0 and (nxt >= count or stopping[0]):
            done_reported = True
            out.write(json.dumps({"connected": connected, "errors": errors, "seconds": time.time() - started, "rss0": rss0,
                                  "rss": own_rss(), "anon0": anon0, "stopped": stopping[0]}) + "\n"); out.flush()
        for fd, ev in ep.poll(0.2):
            ph = phase.get(fd)
            if ph is None:
                continue
            if ph == 1:
                if ev & ERRS:
                    fail(fd); continue
                try:
                    os.write(fd, request)
                except OSError:
                    fail(fd); continue
                phase[fd] = 2
                partial[fd] = b""
                ep.modify(fd, IN | ERRS)
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                fail(fd); continue
            if not data:
                fail(fd); continue
            if ph == 2:
                buf = partial[fd] + data
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    partial[fd] = buf; continue
                if not buf.startswith(b"HTTP/1.1 101"):
                    if errors < 5:
                        print("handshake: " + buf.split(b"\r\n")[0].decode("latin1"), file=sys.stderr)
                    fail(fd); continue
                del partial[fd]
                phase[fd] = 3
                rem[fd] = 0
                connected += 1
                pending -= 1
                os.write(fd, frames[post_of.pop(fd)])
                data = buf[end + 4:]
                if not data:
                    continue
            # frames
            if fd in partial:
                data = partial.pop(fd) + data
            i, n, r = 0, len(data), rem[fd]
            while i < n:
                if r:
                    k = min(r, n - i); r -= k; i += k; continue
                if n - i < 2:
                    partial[fd] = data[i:]; break
                op, ln, head = data[i] & 15, data[i + 1] & 127, 2
                if ln == 126:
                    if n - i < 4:
                        partial[fd] = data[i:]; break
                    ln, head = int.from_bytes(data[i + 2:i + 4], "big"), 4
                elif ln == 127:
                    if n - i < 10:
                        partial[fd] = data[i:]; break
                    ln, head = int.from_bytes(data[i + 2:i + 10], "big"), 10
                if op == 1:
                    messages += 1
                    if fd in fresh:
                        fresh.discard(fd)
                        subscribed += 1
                elif op == 8:
                    r = -1; break
                i += head; r = ln
            if r < 0:
                fail(fd); continue
            rem[fd] = r
        now = time.time()
        if now - last >= 1:
            last = now
            if done_reported:
                out.write(json.dumps({"messages": messages, "subscribed": subscribed, "closed": closed}) + "\n")
            else:
                out.write(json.dumps({"progress": connected, "errors": errors}) + "\n")
            out.flush()


if len(sys.argv) > 1 and sys.argv[1] == "client":
    client_process(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), [int(p) for p in sys.argv[5].split(",")],
                   int(os.environ.get("LIVE_INFLIGHT", 200)))
    sys.exit(0)

import argparse, math, platform, queue, re, resource, statistics, subprocess, tempfile, threading  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from like_http import BIN, ENV, ROOT, Backend, Tenant, build_release, png, wrk, CFG as HTTP_CFG  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--smoke", action="store_true", help="200 subscribers, 1 node, seconds")
ap.add_argument("--subscribers", type=int, help="subscribers to connect (default 100,000; smoke 200)")
ap.add_argument("--per-node", type=int, default=18_000, help="most subscribers per node (and client process)")
ap.add_argument("--redis-url", help="Redis of the nodes, e.g. redis+cluster://127.0.0.1:7000,127.0.0.1:7001 (default: the test Redis)")
ap.add_argument("--posts", type=int, help="posts the subscribers spread over (default 100; smoke 10)")
ap.add_argument("--parallel", type=int, default=0, help="clients connecting at once (default: all)")
ap.add_argument("--client", choices=("ws", "lean", "py"), default="ws",
                help="subscriber processes: live_clients.mjs with `ws` objects (default) or bare sockets (lean), "
                     "or `live.py client` (py: bare sockets and epoll, the least memory)")
ap.add_argument("--inflight", type=int, default=200, help="lean, py: handshakes in flight per client")
ap.add_argument("--like-rate", type=float, default=0, help="likes/s during the load phase (default: closed-loop wrk, 16 connections)")
ap.add_argument("--phase", type=int, help="seconds of each measured phase (default 15; smoke 3)")
ap.add_argument("--mem-guard-mib", type=int, default=1536, help="stop adding subscribers below this MemAvailable")
ap.add_argument("--ramp-limit", type=float, default=0, help="stop adding subscribers after this many seconds (0: no limit)")
OPTS = ap.parse_args()

SMOKE = OPTS.smoke
SUBSCRIBERS = OPTS.subscribers or (200 if SMOKE else 100_000)
PER_NODE = OPTS.per_node
POSTS = OPTS.posts or (10 if SMOKE else 100)
PHASE_S = OPTS.phase or (3 if SMOKE else 15)
OUT = (ROOT / "target/bench-smoke") if SMOKE else (ROOT / "bench/results")
GUARD_KB = OPTS.mem_guard_mib * 1024


def log(msg):
    print(f"[live] {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)


def rss_kb(pid, field="VmRSS"):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def anon_kb(pid):
    """Anonymous RSS: what the process allocated. VmRSS also counts mapped file pages (the binary,
    libraries), which the kernel evicts under memory pressure, so a VmRSS delta can even go down."""
    return rss_kb(pid, "RssAnon")


def meminfo_kb(field):
    for line in open("/proc/meminfo"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def percentile(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else None


class Client:
    """A live_clients.mjs process; a thread reads its JSON lines."""

    def __init__(self, cmd, env, node):
        self.node = node
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
        self.started = time.time()
        self.done = None  # its {"connected": ...} line
        self.progress = self.messages = self.subscribed = self.closed = 0
        self.lat = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "connected" in msg:
                self.done = msg
                self.done["at"] = time.time()
            elif "progress" in msg:
                self.progress = msg["progress"]
            elif "messages" in msg:
                self.messages, self.subscribed, self.closed = msg["messages"], msg.get("subscribed", 0), msg.get("closed", 0)
            elif "latencies" in msg:
                self.lat.put(msg)

    def connected(self):
        return self.done["connected"] if self.done else self.progress

    def latencies(self):
        self.proc.send_signal(signal.SIGUSR2)
        return self.lat.get(timeout=60)


def cluster_cleanup(url, prefix):
    """Deletes the run's keys on every master of the Redis Cluster `url` names."""
    first = url.split("://", 1)[1].split("@")[-1].split(",")[0].split("/")[0]
    host, port = first.rsplit(":", 1)
    nodes = subprocess.run(["redis-cli", "-h", host, "-p", port, "CLUSTER", "NODES"], capture_output=True, text=True).stdout
    for line in nodes.splitlines():
        f = line.split()
        if len(f) > 2 and "master" in f[2] and "fail" not in f[2]:
            h, p = f[1].split("@")[0].rsplit(":", 1)
            subprocess.run(f"redis-cli -h {h} -p {p} --scan --pattern '{prefix}:*' | sed 's/^/DEL /' | redis-cli -h {h} -p {p} > /dev/null",
                           shell=True)


def wrk_rate(base, tokens, nposts, first_post, rate, seconds, work):
    """Likes at about `rate`/s: wrk with like.lua and a delay between each connection's requests."""
    conns = max(2, math.ceil(rate / 5))  # each waits 1000 * conns / rate ms between likes, plus the like's own time
    script = work / "like_rate.lua"
    script.write_text(f'dofile("{ROOT / "bench/like.lua"}")\nfunction delay() return {conns * 1000 / rate:.1f} end\n')
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script), base, "--",
                          str(tokens), str(nposts), str(first_post)], check=True, capture_output=True, text=True).stdout
    print(out, file=sys.stderr)
    # Counted, not fatal: on a saturated box a like whose Redis reply is late answers 503 (outcome unknown).
    non_2xx = int((re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out) or [0, 0])[1])
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    ms = lambda t: float(re.match(r"([\d.]+)", t).group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[re.search(r"(us|ms|s)$", t).group(1)]
    pct = {p: ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return {"likes_per_sec": rps, "p50_ms": pct["50"], "p99_ms": pct["99"], "connections": conns, "target_rate": rate,
            "requests": requests, "non_2xx": non_2xx}


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    build_release()
    started_at = datetime.now(timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="tally-live-"))
    tenant = Tenant()
    args = list(tenant.args)
    if OPTS.redis_url:
        args[args.index("--redis-url") + 1] = OPTS.redis_url
    n_nodes = max(1, math.ceil(SUBSCRIBERS / PER_NODE))
    per_client = math.ceil(SUBSCRIBERS / n_nodes)
    nodes = [Backend(f"node{i}", work, args) for i in range(n_nodes)]
    # Node 0 runs the write-behind; the others only serve (no workers, one
    # PostgreSQL connection: PostgreSQL allows 100 in all here).
    node_env = [dict(ENV, TALLY_PG_MAX_CONNECTIONS="4")] + \
        [dict(ENV, TALLY_PG_MAX_CONNECTIONS="1", TALLY_SYNC__IN_PROCESS="false")] * (n_nodes - 1)
    client_env = dict(os.environ, LIVE_LEAN="1" if OPTS.client == "lean" else "0", LIVE_INFLIGHT=str(OPTS.inflight))
    clients, probe = [], None
    png(work / "post.png")
    result, timings = {}, {}
    stop_reason = None
    failure = None
    try:
        t0 = time.time()
        nodes[0].cli("users", "seed", "--count", "1000", "--tokens-out", str(work / "tokens"))
        tokens = [l.split(" ", 1)[1] for l in (work / "tokens").read_text().split("\n") if l]
        nodes[0].serve(env=node_env[0])

        def create_post(_):
            out = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {tokens[0]}", "-F", f"image=@{work / 'post.png'}",
                                  "-F", "caption=live", f"{nodes[0].base}/v1/posts"], check=True, capture_output=True, text=True).stdout
            return json.loads(out)["id"]

        with ThreadPoolExecutor(4) as pool:
            posts = sorted(pool.map(create_post, range(POSTS)))
        assert posts == list(range(posts[0], posts[0] + POSTS)), "post ids not contiguous (wrk's like.lua needs a range)"
        probe_post = create_post(0)
        timings["setup_seconds"] = round(time.time() - t0, 1)
        log(f"{POSTS} posts created; {SUBSCRIBERS} subscribers over {n_nodes} nodes ({per_client} each), "
            f"{OPTS.parallel or n_nodes} connecting at once, {OPTS.client} clients")
        time.sleep(1)

        # ---- the ramp -------------------------------------------------------
        before, before_anon = {}, {}
        avail_before, slab_before = meminfo_kb("MemAvailable"), meminfo_kb("Slab")
        parallel = OPTS.parallel or n_nodes
        ramping, pending, timeline = [], list(range(n_nodes)), []
        ramp_started = last_mark = time.time()
        while True:
            now = time.time()
            avail = meminfo_kb("MemAvailable")
            if stop_reason is None:
                dead = [n.name for n in nodes if n.proc and n.proc.poll() is not None]
                if avail < GUARD_KB:
                    stop_reason = f"memory guard: MemAvailable {avail // 1024} MiB < {OPTS.mem_guard_mib} MiB"
                elif OPTS.ramp_limit and now - ramp_started > OPTS.ramp_limit:
                    stop_reason = f"ramp time limit ({OPTS.ramp_limit:.0f} s)"
                elif dead:
                    stop_reason = f"node(s) exited: {dead}"
                if stop_reason:
                    log(f"stopping the ramp: {stop_reason}")
                    for c in ramping:
                        c.proc.send_signal(signal.SIGUSR1)
            for c in list(ramping):
                if c.done or c.proc.poll() is not None:
                    ramping.remove(c)
                    if not c.done:
                        stop_reason = stop_reason or f"client of node {c.node} exited ({c.proc.returncode}) before connecting"
                    else:
                        d = c.done
                        log(f"node {c.node}: {d['connected']} connected in {d['seconds']:.1f}s ({d['errors']} errors); "
                            f"total {sum(x.connected() for x in clients)}, MemAvailable {avail // 1024} MiB")
            while stop_reason is None and pending and len(ramping) < parallel:
                i = pending.pop(0)
                if nodes[i].proc is None:
                    nodes[i].serve(env=node_env[i])
                    time.sleep(0.3)
                before[i] = rss_kb(nodes[i].proc.pid)
                before_anon[i] = anon_kb(nodes[i].proc.pid)
                program = [sys.executable, __file__, "client"] if OPTS.client == "py" else ["node", str(ROOT / "bench/live_clients.mjs")]
                cmd = program + [nodes[i].base.replace("http://", "ws://") + "/v1/live", str(per_client), str(2 + i), ",".join(map(str, posts))]
                c = Client(cmd, client_env, i)
                clients.append(c)
                ramping.append(c)
            if not ramping and (stop_reason or not pending):
                break
            if now - last_mark >= 5:
                last_mark = now
                timeline.append({"t": round(now - ramp_started, 1), "connected": sum(c.connected() for c in clients),
                                 "mem_available_mib": avail // 1024, "load1": os.getloadavg()[0]})
            time.sleep(0.2)
        ramp_end = max([c.done["at"] for c in clients if c.done] or [time.time()])
        connect_s = ramp_end - ramp_started
        connected = sum(c.done["connected"] for c in clients if c.done)
        used = [n for n in nodes if n.proc]
        log(f"{connected} subscribers connected in {connect_s:.1f}s over {len(used)} nodes ({connected / connect_s:.0f}/s)"
            + (f"; stopped: {stop_reason}" if stop_reason else ""))
        timeline.append({"t": round(connect_s, 1), "connected": connected, "mem_available_mib": meminfo_kb("MemAvailable") // 1024})

        # Emergency brake for the measured phases: kill the clients if memory runs out.
        brake = threading.Event()

        def watchdog():
            while not brake.wait(0.5):
                if meminfo_kb("MemAvailable") < GUARD_KB // 2:
                    log("MemAvailable under half the guard: killing the clients")
                    result["emergency_stop"] = f"MemAvailable under {OPTS.mem_guard_mib // 2} MiB during the measured phases"
                    for c in clients + ([probe] if probe else []):
                        c.proc.kill()
                    return
        threading.Thread(target=watchdog, daemon=True).start()

        time.sleep(3)
        after = {i: rss_kb(n.proc.pid) for i, n in enumerate(nodes) if n.proc}
        after_anon = {i: anon_kb(n.proc.pid) for i, n in enumerate(nodes) if n.proc}
        avail_after, slab_after = meminfo_kb("MemAvailable"), meminfo_kb("Slab")
        subs = {c.node: c.done["connected"] for c in clients if c.done}
        # Per subscriber: the growth of anonymous memory (see anon_kb); VmRSS deltas are kept alongside.
        server_kb = [(after_anon[i] - before_anon[i]) / subs[i] for i in after if subs.get(i)]
        server_vmrss_kb = [(after[i] - before[i]) / subs[i] for i in after if subs.get(i)]
        # live_clients.mjs reports no anon0: VmRSS there.
        client_kb = [((anon_kb(c.proc.pid) - c.done["anon0"] // 1024) if "anon0" in c.done else (rss_kb(c.proc.pid) - c.done["rss0"] // 1024))
                     / c.done["connected"] for c in clients if c.done and c.done["connected"]]
        per_client_stats = [{"node": c.node, "connected": c.done["connected"], "errors": c.done["errors"], "seconds": round(c.done["seconds"], 1),
                             "per_sec": round(c.done["connected"] / c.done["seconds"]) if c.done["seconds"] else None,
                             "rss_mb_before": round(c.done["rss0"] / 2**20, 1), "rss_mb_after": round(rss_kb(c.proc.pid) / 1024, 1),
                             "anon_mb_before": round(c.done["anon0"] / 2**20, 1) if "anon0" in c.done else None,
                             "anon_mb_after": round(anon_kb(c.proc.pid) / 1024, 1)}
                            for c in clients if c.done]
        result["subscribers"] = {
            "connected": connected, "target": SUBSCRIBERS, "reached_target": connected >= SUBSCRIBERS,
            "stop_reason": stop_reason, "nodes": len(used), "nodes_planned": n_nodes, "per_node": per_client,
            "connect_seconds": round(connect_s, 1), "connect_rate_per_sec": round(connected / connect_s) if connect_s else None,
            "client_errors": sum(c.done["errors"] for c in clients if c.done),
            "subscriptions_confirmed": sum(c.subscribed for c in clients) if OPTS.client != "ws" else None,
            "node_rss_mb_before": [round(before[i] / 1024, 1) for i in sorted(after)],
            "node_rss_mb_after": [round(after[i] / 1024, 1) for i in sorted(after)],
            "bytes_per_connection_median": round(statistics.median(server_kb) * 1024) if server_kb else None,
            "server_kb_per_subscriber_median": round(statistics.median(server_kb), 2) if server_kb else None,
            "server_kb_per_subscriber_range": [round(min(server_kb), 2), round(max(server_kb), 2)] if server_kb else None,
            "server_kb_per_subscriber_vmrss_median": round(statistics.median(server_vmrss_kb), 2) if server_vmrss_kb else None,
            "node_anon_mb_before": [round(before_anon[i] / 1024, 1) for i in sorted(after)],
            "node_anon_mb_after": [round(after_anon[i] / 1024, 1) for i in sorted(after)],
            "client_kb_per_subscriber_median": round(statistics.median(client_kb), 2) if client_kb else None,
            "client_kb_per_subscriber_range": [round(min(client_kb), 2), round(max(client_kb), 2)] if client_kb else None,
            "server_rss_gib_total": round(sum(after.values()) / 2**20, 2),
            "client_rss_gib_total": round(sum(rss_kb(c.proc.pid) for c in clients) / 2**20, 2),
            "mem_available_mib_before": avail_before // 1024, "mem_available_mib_after": avail_after // 1024,
            "all_in_kb_per_subscriber": round((avail_before - avail_after) / connected, 2) if connected else None,
            "slab_mib_before": slab_before // 1024, "slab_mib_after": slab_after // 1024,
            "clients": per_client_stats, "timeline": timeline,
        }
        log(f"memory per subscriber: server {result['subscribers']['server_kb_per_subscriber_median']} KB, "
            f"client {result['subscribers']['client_kb_per_subscriber_median']} KB, "
            f"all in {result['subscribers']['all_in_kb_per_subscriber']} KB; MemAvailable {avail_after // 1024} MiB")

        # ---- like-to-push latency, idle then under likes ----------------------
        # The probe's subscriber is on node 0, its likes go through the last node.
        probe = Client(["node", str(ROOT / "bench/live_clients.mjs"), nodes[0].base.replace("http://", "ws://") + "/v1/live", "0", "1",
                        str(probe_post), used[-1].base, tokens[1], str(probe_post)], dict(os.environ), 0)
        t1 = time.time()
        time.sleep(PHASE_S)
        got = probe.latencies()
        idle = got["latencies"]
        result["like_to_push_idle_ms"] = {"samples": len(idle), "missed": got["missed"], "p50": percentile(idle, 0.5),
                                          "p99": percentile(idle, 0.99), "seconds": round(time.time() - t1, 1)}
        log(f"idle like-to-push: {result['like_to_push_idle_ms']}")
        messages = lambda: sum(c.messages for c in clients)
        closed = lambda: sum(c.closed for c in clients)
        time.sleep(1)
        m0, tm0 = messages(), time.time()
        if OPTS.like_rate:
            load = wrk_rate(nodes[0].base, work / "tokens", len(posts), posts[0], OPTS.like_rate, PHASE_S, work)
        else:
            HTTP_CFG.update(duration=f"{PHASE_S}s", posts=len(posts), connections=16, threads=1)
            load = wrk(nodes[0].base, work / "tokens", posts[0])
        time.sleep(1.2)  # the clients report every second
        m1, tm1 = messages(), time.time()
        got2 = probe.latencies()
        under = got2["latencies"][len(idle):]
        result["load"] = {"likes_per_sec": load["likes_per_sec"], "like_p50_ms": load["p50_ms"], "like_p99_ms": load["p99_ms"],
                          "like_load": f"wrk -c{load['connections']} at ~{OPTS.like_rate:g} likes/s" if OPTS.like_rate else "wrk -c16, closed loop",
                          "likes_sent": load.get("requests"), "likes_answered_non_2xx": load.get("non_2xx", 0),
                          "pushes_delivered_per_sec": round((m1 - m0) / (tm1 - tm0)),
                          "subscribers_per_post": round(connected / len(posts))}
        result["like_to_push_under_load_ms"] = {"samples": len(under), "missed": got2["missed"] - got["missed"],
                                                "p50": percentile(under, 0.5), "p99": percentile(under, 0.99)}
        result["subscribers"]["closed_by_server_by_end"] = closed()
        log(f"under load: {result['load']}, like-to-push {result['like_to_push_under_load_ms']}")
        timings["measure_seconds"] = round(time.time() - t1, 1)
        brake.set()
    except BaseException as e:  # the results so far are still written, then it fails
        failure = e
        result["error"] = f"{type(e).__name__}: {e}"
        log(f"failed: {result['error']}")
    finally:
        t2 = time.time()
        for c in clients + ([probe] if probe else []):
            c.proc.kill()
        for c in clients + ([probe] if probe else []):
            c.proc.wait()
        for n in nodes:
            if n.proc:
                n.proc.send_signal(signal.SIGTERM)
        for n in nodes:
            if n.proc:
                try:
                    n.proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    n.proc.kill()
                    n.proc.wait()
                n.proc = None
        tenant.drop()
        if OPTS.redis_url and OPTS.redis_url.startswith("redis+cluster://"):
            cluster_cleanup(OPTS.redis_url, tenant.prefix)
        subprocess.run(["rm", "-rf", str(work)])
        timings["teardown_seconds"] = round(time.time() - t2, 1)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    node_version = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    doc = {"benchmark": "live counts: idle WebSocket subscribers, memory, like-to-push latency, pushes/s",
           "command": " ".join(["bench/live.py", *sys.argv[1:]]),
           "started_utc": started_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
           "config": {"subscribers": SUBSCRIBERS, "per_node": PER_NODE, "posts": POSTS, "phase_seconds": PHASE_S,
                      "redis": OPTS.redis_url or "default (TALLY_TEST_REDIS_URL or 127.0.0.1:6379)",
                      "client": {"ws": "live_clients.mjs, ws objects", "lean": "live_clients.mjs, bare sockets",
                                 "py": "live.py client: bare sockets, epoll"}[OPTS.client], "parallel": OPTS.parallel or n_nodes,
                      "inflight": OPTS.inflight if OPTS.client != "ws" else 500, "mem_guard_mib": OPTS.mem_guard_mib,
                      "ramp_limit_seconds": OPTS.ramp_limit or None, "like_rate": OPTS.like_rate or None,
                      "node_env": "TALLY_DRAIN_GRACE_MS=0 TALLY_RECONCILE_INTERVAL_SECS=0 TALLY_RATE_LIMITS__USER_WRITES_PER_SEC=0 "
                                  "RUST_LOG=warn; node 0 TALLY_PG_MAX_CONNECTIONS=4, the others TALLY_PG_MAX_CONNECTIONS=1 "
                                  "TALLY_SYNC__IN_PROCESS=false"},
           "binary": {"path": BIN, "built": datetime.fromtimestamp(os.path.getmtime(BIN), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                      if os.path.exists(BIN) else None},
           "git_head": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
           "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                       "mem_total_gib": round(meminfo_kb("MemTotal") / 2**20, 1), "node": node_version,
                       "open_files_per_process": resource.getrlimit(resource.RLIMIT_NOFILE)[0]},
           "timings": timings, "results": result}
    connected = result.get("subscribers", {}).get("connected", 0)
    if SMOKE or SUBSCRIBERS == 100_000:
        name = "live.json"
    else:
        name = f"live-{SUBSCRIBERS if connected >= SUBSCRIBERS else connected}.json"
    (OUT / name).write_text(json.dumps(doc, indent=2))
    log(f"wrote {OUT / name}")
    print(json.dumps({k: v for k, v in result.items() if k != "subscribers"} | {
        "subscribers": {k: v for k, v in result.get("subscribers", {}).items() if k not in ("clients", "timeline")}}, indent=1))
    if failure:
        raise failure


if __name__ == "__main__":
    main()
