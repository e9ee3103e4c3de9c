#!/usr/bin/env python3
"""The raw ceiling of the like script: redis-benchmark running EVALSHA of the
exact script Tally runs (crates/tally-store/src/production/like.lua), with a
random user per call, so almost every call changes state and appends to the
stream, as a real like does.

    bench/redis_ceiling.py            full run -> bench/results/redis-ceiling.json
    bench/redis_ceiling.py --smoke    a short run -> target/bench-smoke/

Two shapes: 50 connections with one command in flight each (-P 1), and the
same with 16 pipelined per connection (-P 16), which is closer to how Tally's
multiplexed connection sends concurrent likes.
"""
import json, os, platform, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SMOKE = "--smoke" in sys.argv
N = 20_000 if SMOKE else 500_000
OUT = (ROOT / "target/bench-smoke") if SMOKE else (ROOT / "bench/results")
HOST, PORT = "127.0.0.1", "6379"


def redis(*args):
    return subprocess.run(["redis-cli", "-h", HOST, "-p", PORT, *args], check=True, capture_output=True, text=True).stdout.strip()


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    sha = redis("SCRIPT", "LOAD", (ROOT / "crates/tally-store/src/production/like.lua").read_text())
    prefix = "ceiling_" + os.urandom(4).hex()
    # KEYS as Tally passes them: count, likers, stream, seq, then the
    # trending buckets of the current minute and hour (crates/tally-store/
    # src/production/scripts.rs); ARGV ends with the buckets' TTLs in ms.
    now = int(time.time())
    keys = [f"{prefix}:{{p0}}:post:1:n", f"{prefix}:{{p0}}:post:1:u", f"{prefix}:{{p0}}:events", f"{prefix}:{{p0}}:seq",
            f"{prefix}:{{p0}}:trend:m:{now // 60}", f"{prefix}:{{p0}}:trend:h:{now // 3600}"]
    ttls = [str(61 * 60_000), str(25 * 3_600_000)]
    results = {}
    try:
        for pipeline in (1, 16):
            redis("DEL", *keys)
            redis("SET", keys[0], "0")
            out = subprocess.run(["redis-benchmark", "-h", HOST, "-p", PORT, "-n", str(N), "-c", "50", "-P", str(pipeline),
                                  "-r", "100000000", "--csv", "EVALSHA", sha, str(len(keys)), *keys, "__rand_int__", "like", "1", "0", f"{prefix}:live", "0", *ttls],
                                 check=True, capture_output=True, text=True).stdout
            row = [c.strip('"') for c in out.strip().splitlines()[-1].split(",")]
            stream_len = int(redis("XLEN", keys[2]))
            results[f"P{pipeline}"] = {"likes_per_sec": float(row[1]), "avg_ms": float(row[2]), "p50_ms": float(row[4]),
                                       "p99_ms": float(row[6]), "events_appended": stream_len}
            print(f"-P {pipeline}: {results[f'P{pipeline}']}", file=sys.stderr)
    finally:
        redis("DEL", *keys)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    doc = {"benchmark": "redis-benchmark EVALSHA of the like script, 50 connections, random users on one post",
           "command": "bench/redis_ceiling.py" + (" --smoke" if SMOKE else ""), "calls": N,
           "redis": redis("INFO", "server").split("redis_version:")[1].split()[0],
           "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release()}, "results": results}
    (OUT / "redis-ceiling.json").write_text(json.dumps(doc, indent=2))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
