#!/usr/bin/env python3
"""The cost of each durability mode of the production backend, side by side.

    bench/durability.py           full run, results in bench/results/durability.json
    bench/durability.py --smoke   seconds, results in target/bench-smoke/

Starts a private Redis master and a replica of it on free ports, then one
`tally serve` per mode (fast, replicated, strict), each with a database and
key prefix of its own on that master. wrk runs alternate between the three
(like_http.py's load: random users liking random posts), and every mode ends
by proving each post's count equals its likers. `replicated` answers after
`WAIT 1` on the replica; `strict` after PostgreSQL's commit.
"""
import os, socket, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import like_http as lh  # noqa: E402

MODES = ["fast", "replicated", "strict"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server(work, name, *args):
    port = free_port()
    d = work / name
    d.mkdir()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(d), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while subprocess.run(["redis-cli", "-p", str(port), "PING"], capture_output=True, text=True).stdout.strip() != "PONG":
        assert time.time() < deadline and proc.poll() is None, f"{name} redis-server did not start"
        time.sleep(0.05)
    return proc, port


def main():
    lh.OUT.mkdir(parents=True, exist_ok=True)
    lh.build_release()
    work = Path(tempfile.mkdtemp(prefix="tally-durability-"))
    master, master_port = redis_server(work, "master")
    replica, replica_port = redis_server(work, "replica", "--replicaof", "127.0.0.1", str(master_port))
    deadline = time.time() + 20
    while "master_link_status:up" not in subprocess.run(["redis-cli", "-p", str(replica_port), "INFO", "replication"],
                                                         capture_output=True, text=True).stdout:
        assert time.time() < deadline, "the replica did not sync"
        time.sleep(0.05)
    tenants, backends = [], []
    try:
        for mode in MODES:
            t = lh.Tenant()
            tenants.append(t)
            args = [a if a != lh.REDIS else f"redis://127.0.0.1:{master_port}" for a in t.args]
            backends.append(lh.Backend(mode, work, args + ["--durability", mode]))
        results = lh.prepare(backends, work)
        lh.alternate(backends, work, results, lambda b: True)
        fast = results["fast"]["median"]["likes_per_sec"]
        for mode in MODES[1:]:
            results[f"{mode}_over_fast"] = round(results[mode]["median"]["likes_per_sec"] / fast, 3)
    finally:
        for b in backends:
            b.stop()
        for t in tenants:
            t.drop()
        for p in (replica, master):
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", str(work)])
    lh.write_results("durability.json",
                     "PUT /v1/posts/{id}/like with wrk: durability fast vs replicated (WAIT 1 on a replica) "
                     "vs strict, alternating runs, one private Redis master + replica",
                     "bench/durability.py", results)


if __name__ == "__main__":
    main()
