#!/usr/bin/env python3
"""Scale-out on one machine: three `tally serve` nodes on a Redis Cluster behind
HAProxy vs one node on one Redis, side by side, plus a Redis master killed under load.

    bench/scale_out.py            full run (release build), results in bench/results/scale-out.json
    bench/scale_out.py --smoke    seconds, one round, results in target/bench-smoke/

A: one `tally serve` on the machine's Redis (6379) with a fresh key prefix and a
   fresh PostgreSQL database (like_http.py's Tenant), driven directly.
B: `deploy/topology.sh start 3` on free ports with a state dir of its own: a
   6-process Redis Cluster (3 masters, 3 replicas), database tally_topology,
   three nodes, HAProxy; driven through the balancer.

The same `tally bench` load (closed loop, likes only, uniform posts, seeded
users) alternates between A and B (A, B, then B, A, ...) and every run must
end `consistency: exact`. Per run: likes/s and like p50/p99 from the report;
Redis commands and bytes per like (INFO stats deltas over the load window,
summed over the masters for B, this script's own INFO calls subtracted); rows/s
the write-behind applied to PostgreSQL over the load window (the nodes'
`tally_sync_events_total`).

Then one more B run with a failover: a probe likes its own post through the
balancer every 20 ms while the Redis master of that post's partition is
killed with SIGKILL; it records how long that post answers non-200, when the
replica is promoted, and the run must still end `exact` (503s are allowed
outcomes). The killed node is restarted and must rejoin as a replica.
Everything started is stopped, the databases dropped, the key prefix deleted.
"""
import json, os, platform, signal, socket, statistics, subprocess, sys, tempfile, threading, time
import http.client
import random
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import like_http as lh  # noqa: E402

ROOT = lh.ROOT
SMOKE = lh.SMOKE
CFG = dict(users=2_000, posts=20, concurrency=16, duration="3s", rounds=1, partitions=64, idle_seconds=1) if SMOKE \
    else dict(users=100_000, posts=100, concurrency=64, duration="20s", rounds=3, partitions=64, idle_seconds=3)
LOAD = ["--mix", "like=100", "--zipf", "0"]
OUT = lh.OUT
BIN = lh.BIN
PG_SERVER = lh.ADMIN_DB.rsplit("/", 1)[0]
TOPOLOGY = ROOT / "deploy/topology.sh"
# Like like_http.py: no per-user write limit (a few users would hit it), no
# periodic reconciliation during the runs.
NODE_ENV = dict(os.environ, TALLY_RATE_LIMITS__USER_WRITES_PER_SEC="0", RUST_LOG="warn",
                TALLY_RECONCILE_INTERVAL_SECS="0")
SAMPLE_S = 0.2
PROBE_EVERY_S = 0.02


def log(msg):
    print(f"[scale_out] {msg}", file=sys.stderr, flush=True)


def fail(msg):
    raise SystemExit(f"[scale_out] FAILED: {msg}")


# --- ports -------------------------------------------------------------------

def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_base(lo, hi, offsets):
    """A port base in [lo, hi) with base + every offset free (below the ephemeral range where possible)."""
    for _ in range(500):
        base = random.randrange(lo, hi)
        if all(port_free(base + o) for o in offsets):
            return base
    fail(f"no free ports in {lo}..{hi}")


# --- Redis -------------------------------------------------------------------

class Resp:
    """A minimal RESP client that counts the bytes it sends and reads, so that its own INFO calls can be
    subtracted from the server's counters."""

    def __init__(self, port, host="127.0.0.1"):
        self.port = port
        self.sock = socket.create_connection((host, port), timeout=5)
        self.file = self.sock.makefile("rb")
        self.sent = self.read = self.calls = 0

    def _line(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError(f"redis {self.port} closed the connection")
        self.read += len(line)
        return line[:-2]

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            self.read += len(data)
            return data[:-2].decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def cmd(self, *args):
        req = f"*{len(args)}\r\n" + "".join(f"${len(str(a).encode())}\r\n{a}\r\n" for a in args)
        data = req.encode()
        self.sock.sendall(data)
        self.sent += len(data)
        self.calls += 1
        return self._reply()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def parse_info(text):
    return dict(l.split(":", 1) for l in text.splitlines() if ":" in l and not l.startswith("#"))


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *map(str, args)], capture_output=True, text=True, timeout=10).stdout


def cluster_nodes(port):
    """[(id, port, flags, master_id, slot ranges)] as the node on `port` sees it."""
    out = []
    for line in cli(port, "CLUSTER", "NODES").splitlines():
        f = line.split()
        if len(f) < 8:
            continue
        out.append(dict(id=f[0], port=int(f[1].split("@")[0].rsplit(":", 1)[1]), flags=f[2].split(","),
                        master=f[3], slots=f[8:]))
    return out


def serves_slot(node, slot):
    for r in node["slots"]:
        if r.startswith("["):
            continue
        lo, _, hi = r.partition("-")
        if int(lo) <= slot <= int(hi or lo):
            return True
    return False


# --- sampling ----------------------------------------------------------------

class Sampler:
    """Every SAMPLE_S: INFO stats of each Redis in `redis_ports` (cumulative, minus this sampler's own
    traffic) and /metrics of each node in `node_urls`."""

    def __init__(self, redis_ports, node_urls):
        self.conns = [Resp(p) for p in redis_ports]
        self.node_urls = node_urls
        self.samples = []  # (t, {port: (cmds, in, out)}, sync_events, like_ops)
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def take(self):
        t = time.time()
        red = {}
        for c in self.conns:
            # Counters as the server saw them before this call: this sampler's earlier calls removed.
            calls, sent, read = c.calls, c.sent, c.read
            info = parse_info(c.cmd("INFO", "stats"))
            red[c.port] = (int(info["total_commands_processed"]) - calls,
                           int(info["total_net_input_bytes"]) - sent,
                           int(info["total_net_output_bytes"]) - read)
        events, ops = 0.0, []
        for url in self.node_urls:
            m = lh.metrics(url)
            events += m.get("tally_sync_events_total", 0.0)
            ops.append(sum(v for k, v in m.items() if k.startswith("tally_like_ops_total")))
        self.samples.append((t, red, events, ops))

    def loop(self):
        while not self.stop_ev.is_set():
            try:
                self.take()
            except (OSError, RuntimeError, ConnectionError):
                pass  # a killed master (the failover run): its samples stop
            self.stop_ev.wait(SAMPLE_S)

    def start(self):
        self.take()
        self.thread.start()

    def stop(self):
        self.stop_ev.set()
        self.thread.join()
        try:
            self.take()
        except (OSError, RuntimeError, ConnectionError):
            pass
        for c in self.conns:
            c.close()

    def at(self, t, get):
        """get(sample) linearly interpolated at time t."""
        s = self.samples
        for a, b in zip(s, s[1:]):
            if a[0] <= t <= b[0]:
                va, vb = get(a), get(b)
                return va + (vb - va) * (t - a[0]) / max(b[0] - a[0], 1e-9)
        return get(s[0]) if t < s[0][0] else get(s[-1])


# --- load --------------------------------------------------------------------

def run_bench(name, target, tokens, data_dir, backend_args, on_load=None):
    """One `tally bench` run; returns its report and the load window (start, end) in wall time."""
    out_dir = Path(tempfile.mkdtemp(prefix=f"scale-out-{name}-", dir=lh_work))
    cmd = [BIN, "bench", "--target", target, "--tokens", str(tokens), "--data-dir", str(data_dir), *backend_args,
           "--posts", str(CFG["posts"]), "--duration", CFG["duration"], "--concurrency", str(CFG["concurrency"]),
           *LOAD, "--out", str(out_dir)]
    started = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=NODE_ENV)
    if on_load:
        threading.Thread(target=on_load, args=(started,), daemon=True).start()
    load_done, err = None, []
    for line in proc.stderr:
        err.append(line)
        if "load done" in line and load_done is None:
            load_done = time.time()
    stdout = proc.stdout.read()
    rc = proc.wait()
    if rc not in (0, 4) or load_done is None:
        fail(f"{name}: tally bench exited {rc}:\n{''.join(err)[-3000:]}\n{stdout[-2000:]}")
    report = json.loads(next(out_dir.glob("bench-*.json")).read_text())
    verdict = report["consistency"]["verdict"]
    if verdict != "exact" or rc != 0:
        fail(f"{name}: consistency {verdict} (exit {rc}): {report['consistency']['differences'][:5]}\n{stdout[-2000:]}")
    return report, (load_done - report["seconds"], load_done), time.time() - started


def summarize(name, report, window, sampler, masters, idle):
    t0, t1 = window
    secs = t1 - t0
    like = report["summary"]["per_op"]["like"]
    likes = like["count"]

    def delta(get):
        return sampler.at(t1, get) - sampler.at(t0, get)

    cmds = sum(delta(lambda s, p=p: s[1][p][0]) for p in masters)
    bytes_in = sum(delta(lambda s, p=p: s[1][p][1]) for p in masters)
    bytes_out = sum(delta(lambda s, p=p: s[1][p][2]) for p in masters)
    events = delta(lambda s: s[2])
    row = {
        "likes_per_sec": round(like["per_sec"], 1),
        "p50_ms": like["p50_ms"], "p90_ms": like["p90_ms"], "p99_ms": like["p99_ms"], "p999_ms": like["p999_ms"],
        "likes": likes,
        "errors": report["summary"]["errors"],
        "load_seconds": round(secs, 2),
        "redis_commands_per_like": round(cmds / likes, 2),
        "redis_bytes_in_per_like": round(bytes_in / likes, 1),
        "redis_bytes_out_per_like": round(bytes_out / likes, 1),
        "redis_bytes_per_like": round((bytes_in + bytes_out) / likes, 1),
        "redis_commands_per_sec": round(cmds / secs),
        # The same, less what the servers did idle (measured just before the run) over as long.
        "redis_idle_commands_per_sec": round(idle[0], 1),
        "redis_idle_bytes_per_sec": round(idle[1], 1),
        "redis_commands_per_like_net_of_idle": round((cmds - idle[0] * secs) / likes, 2),
        "redis_bytes_per_like_net_of_idle": round((bytes_in + bytes_out - idle[1] * secs) / likes, 1),
        "pg_rows_per_sec": round(events / secs, 1),
        # Like requests each node served over the load window: how evenly the balancer spread them.
        "likes_per_node": [round(delta(lambda s, i=i: s[3][i])) for i in range(len(sampler.node_urls))],
        "consistency": report["consistency"]["verdict"],
        "likes_proved": report["consistency"]["likes_expected"],
        "drain_seconds": round(report["consistency"]["drain_seconds"], 2),
        "stores_checked_directly": report["consistency"]["stores_checked_directly"],
    }
    log(f"{name}: {row['likes_per_sec']:.0f} likes/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
        f"{row['redis_commands_per_like']} cmds/like, {row['redis_bytes_per_like']} B/like, "
        f"{row['pg_rows_per_sec']} PG rows/s, {row['consistency']}")
    return row


def idle_rate(ports, seconds):
    """Commands and bytes per second the Redis servers see with the nodes idle: the write-behind's polls and
    lease renewals, and on the shared 6379 any other tenant's traffic."""
    conns = [Resp(p) for p in ports]

    def read():
        out = []
        for c in conns:
            calls, sent, got = c.calls, c.sent, c.read
            info = parse_info(c.cmd("INFO", "stats"))
            out.append((int(info["total_commands_processed"]) - calls, int(info["total_net_input_bytes"]) - sent,
                        int(info["total_net_output_bytes"]) - got))
        return out

    first = read()
    time.sleep(seconds)
    last = read()
    for c in conns:
        c.close()
    return (sum(b[0] - a[0] for a, b in zip(first, last)) / seconds,
            sum(b[1] + b[2] - a[1] - a[2] for a, b in zip(first, last)) / seconds)


# --- variant A: one node, one Redis ------------------------------------------

class Single:
    name = "one_node_one_redis"

    def __init__(self, work):
        self.tenant = lh.Tenant()
        self.node = lh.Backend("single", work, self.tenant.args)
        self.redis_port = int(lh.REDIS.rsplit(":", 1)[1].split("/")[0])
        self.tokens = work / "single.tokens"

    def start(self):
        self.node.cli("users", "seed", "--count", str(CFG["users"]), "--tokens-out", str(self.tokens))
        self.node.serve()
        check_ready(self.node.base)
        self.target, self.node_urls, self.args = self.node.base, [self.node.base], self.tenant.args

    def masters(self):
        return [self.redis_port]

    def stop(self):
        self.node.stop()
        self.tenant.drop()


# --- variant B: three nodes, Redis Cluster, HAProxy --------------------------

class Topology:
    name = "three_nodes_cluster_haproxy"

    def __init__(self, work):
        self.state = work / "topology"
        self.redis_port = free_base(23000, 25990, [o + b for o in range(6) for b in (0, 10000)])
        self.node_port = free_base(26000, 27990, [1, 2, 3])
        self.lb_port = free_base(28000, 28999, [0])
        self.env = dict(NODE_ENV, TALLY_BIN=BIN, TALLY_TOPOLOGY_DIR=str(self.state),
                        TALLY_TOPOLOGY_REDIS_PORT=str(self.redis_port), TALLY_TOPOLOGY_NODE_PORT=str(self.node_port),
                        TALLY_TOPOLOGY_LB_PORT=str(self.lb_port), TALLY_TOPOLOGY_PG=PG_SERVER)
        ports = range(self.redis_port, self.redis_port + 3)
        self.args = ["--redis-url", "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports),
                     "--database-url", f"{PG_SERVER}/tally_topology", "--key-prefix", "tally"]
        self.target = f"http://127.0.0.1:{self.lb_port}"
        self.node_urls = [f"http://127.0.0.1:{self.node_port + k}" for k in (1, 2, 3)]
        self.tokens = self.state / "tokens.txt"
        self.started = False

    def topology(self, *args, check=True):
        p = subprocess.run([str(TOPOLOGY), *args], env=self.env, capture_output=True, text=True)
        if check and p.returncode != 0:
            fail(f"deploy/topology.sh {' '.join(args)} exited {p.returncode}:\n{p.stderr[-3000:]}")
        return p

    def start(self):
        # topology.sh's database has a fixed name: never take over someone else's.
        if lh.psql(f"{PG_SERVER}/postgres", "SELECT 1 FROM pg_database WHERE datname = 'tally_topology'") == "1":
            fail("database tally_topology exists: a deploy/topology.sh deployment runs on this machine; "
                 "not touching it (deploy/topology.sh clean, with its TALLY_TOPOLOGY_DIR, removes it)")
        log(f"topology: Redis {self.redis_port}..{self.redis_port + 5}, nodes {self.node_port + 1}..{self.node_port + 3}, "
            f"HAProxy {self.lb_port}, state {self.state}")
        self.started = True
        t = time.time()
        self.topology("start", "3")
        self.start_seconds = round(time.time() - t, 1)
        for url in self.node_urls + [self.target]:
            check_ready(url)
        subprocess.run([BIN, "users", "seed", "--count", str(CFG["users"]), "--tokens-out", str(self.tokens),
                        "--data-dir", str(self.state / "seed"), *self.args],
                       env=NODE_ENV, check=True, capture_output=True, text=True)

    def masters(self):
        nodes = cluster_nodes(self.redis_port)
        ms = sorted(n["port"] for n in nodes if "master" in n["flags"] and "fail" not in n["flags"] and n["slots"])
        if len(ms) != 3:
            fail(f"expected 3 masters, CLUSTER NODES says {ms}")
        return ms

    def redis_cmdline(self, port):
        d = self.state / "redis" / str(port)
        # The same flags as deploy/topology.sh's start_redis.
        return ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                "--cluster-config-file", str(d / "nodes.conf"), "--dir", str(d), "--cluster-node-timeout", "2000",
                "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
                "--daemonize", "yes", "--logfile", str(d / "redis.log")]

    def stop(self):
        if self.started:
            self.topology("clean", check=False)
            if lh.psql(f"{PG_SERVER}/postgres", "SELECT 1 FROM pg_database WHERE datname = 'tally_topology'") == "1":
                log("WARNING: tally_topology still exists after topology.sh clean")


def check_ready(url, timeout=60):
    deadline = time.time() + timeout
    while True:
        try:
            conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
            conn.request("GET", "/readyz")
            status = conn.getresponse().status
            conn.close()
            if status == 200:
                return
        except OSError:
            status = None
        if time.time() > deadline:
            fail(f"{url}/readyz: {status}, not ready after {timeout} s")
        time.sleep(0.1)


# --- the failover run --------------------------------------------------------

def create_post(target, token, work):
    lh.png(work / "post.png")
    out = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {token}", "-F", f"image=@{work / 'post.png'}",
                          "-F", "caption=scale-out probe", f"{target}/v1/posts"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)["id"]


class Probe:
    """A like of one post by a different user every PROBE_EVERY_S, each on its own connection and thread
    (so that a stalled request does not delay the next), through the balancer."""

    def __init__(self, host, post, tokens):
        self.host, self.post, self.tokens = host, post, tokens
        self.results = []  # (start, end, status or error)
        self.lock = threading.Lock()
        self.stop_ev = threading.Event()
        self.threads = []

    def one(self, token):
        start = time.time()
        try:
            conn = http.client.HTTPConnection(self.host, timeout=30)
            conn.request("PUT", f"/v1/posts/{self.post}/like", headers={"Authorization": f"Bearer {token}"})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
            conn.close()
        except (OSError, http.client.HTTPException) as e:
            status = type(e).__name__
        with self.lock:
            self.results.append((start, time.time(), status))

    def loop(self):
        i = 0
        nxt = time.time()
        while not self.stop_ev.is_set():
            t = threading.Thread(target=self.one, args=(self.tokens[i % len(self.tokens)],), daemon=True)
            t.start()
            self.threads.append(t)
            i += 1
            nxt += PROBE_EVERY_S
            self.stop_ev.wait(max(0.0, nxt - time.time()))

    def start(self):
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_ev.set()
        self.thread.join()
        for t in self.threads:
            t.join(timeout=40)


def failover_run(topo, work, results):
    """One B run during which the Redis master of the probe post's partition is killed with SIGKILL."""
    tokens = [l.split(" ", 1) for l in topo.tokens.read_text().splitlines() if l.strip()]
    post = create_post(topo.target, tokens[0][1], work)
    key = f"tally:{{p{post % CFG['partitions']}}}:post:{post}:n"
    slot = int(cli(topo.redis_port, "CLUSTER", "KEYSLOT", key).strip())
    nodes = cluster_nodes(topo.redis_port)
    master = next(n for n in nodes if "master" in n["flags"] and serves_slot(n, slot))
    replica = next(n for n in nodes if n["master"] == master["id"])
    pid = int(parse_info(cli(master["port"], "INFO", "server"))["process_id"])
    survivor = next(n["port"] for n in nodes if n["port"] not in (master["port"], replica["port"]))
    log(f"failover: probe post {post} ({key}, slot {slot}) on master {master['port']} (pid {pid}), "
        f"replica {replica['port']}")
    probe = Probe(topo.target.removeprefix("http://"), post, [t for _, t in tokens[-1000:]])
    events = {}

    def kill_and_watch(bench_started):
        # Kill once the load runs (the run creates its posts first): likes counted by the nodes, then a
        # quarter of the run more.
        def like_ops():
            return sum(v for url in topo.node_urls for k, v in lh.metrics(url).items() if k.startswith("tally_like_ops_total"))
        base, deadline = like_ops(), time.time() + 60
        while like_ops() < base + 2 * CFG["concurrency"]:
            if time.time() > deadline:
                return
            time.sleep(0.05)
        time.sleep(float(CFG["duration"].rstrip("s")) * 0.25)
        os.kill(pid, signal.SIGKILL)
        events["killed"] = time.time()
        deadline = events["killed"] + 60
        while time.time() < deadline:
            try:
                now = {n["id"]: n for n in cluster_nodes(survivor)}
                r = now.get(replica["id"])
                if r and "master" in r["flags"] and serves_slot(r, slot) and "promoted" not in events:
                    events["promoted"] = time.time()
                if "promoted" in events and "cluster_state:ok" in cli(survivor, "CLUSTER", "INFO"):
                    events["cluster_ok"] = time.time()
                    return
            except (subprocess.SubprocessError, ValueError):
                pass
            time.sleep(0.05)

    probe.start()
    report, _, _ = run_bench("failover", topo.target, topo.tokens, topo.state / "seed", topo.args, on_load=kill_and_watch)
    time.sleep(1.0)
    probe.stop()
    if "killed" not in events:
        fail("the master was never killed")
    if "promoted" not in events or "cluster_ok" not in events:
        fail(f"the replica {replica['port']} was not promoted within 60 s")
    killed = events["killed"]
    rs = sorted(probe.results)
    after = [r for r in rs if r[1] >= killed]
    bad = [r for r in after if r[2] != 200]
    # Recovered: the first probe sent after the kill from which on every answer is 200.
    recovered = next((r[0] for i, r in enumerate(rs) if r[0] >= killed and all(x[2] == 200 for x in rs[i:])), None)
    if recovered is None:
        fail(f"the probe post never answered 200 again after the kill ({len(bad)} non-200)")
    statuses = {}
    for r in after:
        statuses[str(r[2])] = statuses.get(str(r[2]), 0) + 1
    ok_before = [r[1] - r[0] for r in rs if r[1] < killed and r[2] == 200]
    slow_ok = [r for r in after if r[2] == 200 and r[0] < recovered]
    like = report["summary"]["per_op"]["like"]
    # The killed node comes back with its nodes.conf and must rejoin as a replica.
    t = time.time()
    subprocess.run(topo.redis_cmdline(master["port"]), check=True, capture_output=True)
    deadline = t + 60
    while True:
        info = parse_info(cli(master["port"], "INFO", "replication"))
        if info.get("role") == "slave" and info.get("master_link_status") == "up" \
                and "cluster_state:ok" in cli(master["port"], "CLUSTER", "INFO"):
            break
        if time.time() > deadline:
            fail(f"the restarted node {master['port']} did not rejoin as a replica: {info}")
        time.sleep(0.1)
    rejoin = time.time() - t

    row = {
        "killed_master_port": master["port"], "promoted_replica_port": replica["port"], "probe_post": post,
        "probe_key": key, "slot": slot,
        "replica_promoted_after_s": round(events["promoted"] - killed, 2),
        "cluster_ok_after_s": round(events["cluster_ok"] - killed, 2),
        # Answers other than 200 to the probe post: the first and last such answer, after the kill.
        "probe_first_non200_answer_after_s": round(min(r[1] for r in bad) - killed, 2) if bad else None,
        "probe_last_non200_answer_after_s": round(max(r[1] for r in bad) - killed, 2) if bad else None,
        "probe_non200_window_s": round(max(r[1] for r in bad) - min(r[1] for r in bad), 2) if bad else 0.0,
        # From the kill to the first probe sent that answered 200, as did every one after it.
        "probe_recovered_after_s": round(recovered - killed, 2),
        "probe_requests_after_kill": len(after),
        "probe_answers_after_kill": statuses,
        "probe_slowest_200_before_recovery_ms": round(max((r[1] - r[0] for r in slow_ok), default=0.0) * 1000, 1),
        "probe_p50_ms_before_kill": round(statistics.median(ok_before) * 1000, 2) if ok_before else None,
        "bench_likes_per_sec": round(like["per_sec"], 1),
        "bench_like_p99_ms": like["p99_ms"],
        "bench_like_max_ms": like["max_ms"],
        "bench_errors": report["summary"]["errors"],
        "bench_unknown_outcomes_resolved": report["consistency"]["resolved_unknown"],
        "consistency": report["consistency"]["verdict"],
        "likes_proved": report["consistency"]["likes_expected"],
        "drain_seconds": round(report["consistency"]["drain_seconds"], 2),
        "killed_node_rejoined_as_replica_after_s": round(rejoin, 2),
    }
    log(f"failover: replica promoted after {row['replica_promoted_after_s']} s, probe non-200 for "
        f"{row['probe_non200_window_s']} s (from {row['probe_first_non200_answer_after_s']} to "
        f"{row['probe_last_non200_answer_after_s']} s after the kill; every probe sent from "
        f"{row['probe_recovered_after_s']} s on answered 200; {statuses}), "
        f"bench {row['consistency']}, errors {row['bench_errors']}, rejoined after {row['killed_node_rejoined_as_replica_after_s']} s")
    results["failover"] = row


# --- main --------------------------------------------------------------------

lh_work = None
GIT = None


def main():
    global lh_work, GIT
    t_start = time.time()
    OUT.mkdir(parents=True, exist_ok=True)
    GIT = git_state()
    lh.build_release()
    if not Path(BIN).is_file():
        fail(f"no tally binary at {BIN}")
    work = Path(tempfile.mkdtemp(prefix="tally-scale-out-"))
    lh_work = work
    variants = []
    results = {}
    try:
        a = Single(work)
        variants.append(a)
        b = Topology(work)
        variants.append(b)
        for v in variants:
            v.start()
        results["topology_start_seconds"] = b.start_seconds
        for v in variants:
            results[v.name] = {"runs": []}
        for rnd in range(CFG["rounds"]):
            order = variants if rnd % 2 == 0 else variants[::-1]
            for v in order:
                log(f"round {rnd + 1}/{CFG['rounds']}: {v.name}")
                masters = v.masters()
                idle = idle_rate(masters, CFG["idle_seconds"])
                sampler = Sampler(masters, v.node_urls)
                sampler.start()
                data_dir = v.node.data if v is a else v.state / "seed"
                report, window, _ = run_bench(v.name, v.target, v.tokens, data_dir, v.args)
                sampler.stop()
                row = summarize(v.name, report, window, sampler, masters, idle)
                results[v.name]["runs"].append(row)
        for v in variants:
            runs = results[v.name]["runs"]
            results[v.name]["median"] = {k: statistics.median(r[k] for r in runs) for k in runs[0]
                                         if isinstance(runs[0][k], (int, float)) and not isinstance(runs[0][k], bool)}
            results[v.name]["median"]["runs"] = len(runs)
            results[v.name]["consistency"] = [r["consistency"] for r in runs]
        ma, mb = results[a.name]["median"], results[b.name]["median"]
        results["b_over_a"] = {k: round(mb[k] / ma[k], 3) for k in
                               ("likes_per_sec", "p50_ms", "p99_ms", "redis_commands_per_like", "redis_bytes_per_like",
                                "redis_commands_per_like_net_of_idle", "redis_bytes_per_like_net_of_idle",
                                "pg_rows_per_sec") if ma.get(k)}
        failover_run(b, work, results)
    finally:
        for v in reversed(variants):
            try:
                v.stop()
            except Exception as e:  # noqa: BLE001 - keep cleaning the others
                log(f"cleanup of {v.name}: {e}")
        subprocess.run(["rm", "-rf", str(work)])
    results["wall_seconds"] = round(time.time() - t_start, 1)
    write_results(results)
    log(f"done in {results['wall_seconds']} s")


def git_state():
    run = lambda *a: subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout
    return {"head": run("rev-parse", "--short", "HEAD").strip(), "uncommitted": run("status", "--porcelain", "crates").splitlines()}


def write_results(results):
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.split()[2]
    doc = {
        "benchmark": "tally bench (likes only, closed loop) on one node + one Redis (A) vs three nodes on a 3-master "
                     "Redis Cluster behind HAProxy (B), alternating runs; then a Redis master killed under load (B)",
        "command": "bench/scale_out.py" + (" --smoke" if SMOKE else ""),
        "config": dict(CFG, load=LOAD, bin=BIN),
        # The tree the binary was built from: HEAD, and files changed but not committed (another change in progress).
        "git": GIT,
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(), "redis": redis, "haproxy": haproxy},
        "results": results,
    }
    (OUT / "scale-out.json").write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: v.get("median", v) if isinstance(v, dict) else v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
