#!/usr/bin/env python3
"""The load generator's scenarios (10k, 100k, 1m users), each run ending with the
consistency proof, plus embedded vs Redis + PostgreSQL side by side.

    bench/scenarios.py            3 runs of each scenario on Redis + PostgreSQL, and the 10k
                                  scenario on both backends -> bench/results/scenarios.json
    bench/scenarios.py --smoke    a few seconds per backend -> target/bench-smoke/

Every run gets a fresh server, database and key prefix; `tally bench` seeds its
users itself (`tally users seed` path, no password hashing). Memory: peak RSS of
tally, and RSS of Redis and PostgreSQL (all backends' processes) at the end.
"""
import json, os, re, statistics, subprocess, sys, threading, time, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from like_http import BIN, ENV, ROOT, Backend, Tenant, build_release  # noqa: E402

SMOKE = "--smoke" in sys.argv
OUT = (ROOT / "target/bench-smoke") if SMOKE else (ROOT / "bench/results")
REPEAT = 1 if SMOKE else 3


def log(msg):
    print(f"[scenarios] {msg}", file=sys.stderr, flush=True)


def rss_mb(pids):
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def pss_mb(pids):
    """Proportional set size: shared memory (PostgreSQL's buffers) split among
    the processes that map it, so a sum over processes counts it once."""
    total = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/smaps_rollup"):
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 1024, 1)


def pids(name):
    return [int(p) for p in subprocess.run(["pgrep", "-x", name], capture_output=True, text=True).stdout.split()]


def one_run(kind, scenario_args, work):
    suffix = os.urandom(6).hex()
    tenant = Tenant() if kind == "redis_pg" else None
    args = tenant.args if tenant else []
    node = Backend(f"{kind}-{suffix}", work, args)
    try:
        node.serve()
        peak, lags, stop = [0.0], [], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb([node.proc.pid]))
                if kind == "redis_pg":
                    try:
                        text = urllib.request.urlopen(f"{node.base}/metrics", timeout=5).read().decode()
                        m = re.search(r"^tally_sync_lag_seconds (\S+)$", text, re.M)
                        if m:
                            lags.append(float(m.group(1)))
                    except OSError:
                        pass
                stop.wait(0.5)

        t = threading.Thread(target=sample)
        t.start()
        out_dir = work / f"out-{suffix}"
        started = time.time()
        proc = subprocess.run([BIN, "bench", "--target", node.base, "--data-dir", str(node.data), *args, *scenario_args,
                               "--out", str(out_dir), "--quiet"], env=ENV, capture_output=True, text=True)
        stop.set(); t.join()
        print(proc.stdout, file=sys.stderr)
        if proc.returncode not in (0, 4):
            raise SystemExit(f"tally bench failed: {proc.stderr[-2000:]}")
        report = json.loads(next(out_dir.glob("bench-*.json")).read_text())
        s = report["summary"]
        row = {
            "wall_seconds": round(time.time() - started, 1),
            "requests_per_sec": round(s["total"]["per_sec"]),
            "per_op": {k: {m: v[m] for m in ("count", "per_sec", "p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms")} for k, v in s["per_op"].items()},
            "errors": s["errors"],
            "rate_met": report["rate_met"],
            "missed": s["missed"],
            "consistency": report["consistency"]["verdict"],
            "likes_proved": report["consistency"]["likes_expected"],
            "drain_seconds": round(report["consistency"]["drain_seconds"], 2),
            "stores_checked_directly": report["consistency"]["stores_checked_directly"],
            "tally_peak_rss_mb": peak[0],
        }
        if kind == "redis_pg":
            row["redis_rss_mb"] = rss_mb(pids("redis-server"))
            row["postgres_pss_mb"] = pss_mb(pids("postgres"))
            row["sync_lag_median_s"] = statistics.median(lags) if lags else None
            row["sync_lag_max_s"] = max(lags) if lags else None
        return row
    finally:
        node.stop()
        if tenant:
            tenant.drop()


def main():
    import tempfile
    OUT.mkdir(parents=True, exist_ok=True)
    build_release()
    work = Path(tempfile.mkdtemp(prefix="tally-scenarios-"))
    plan = [("redis_pg", "10k"), ("embedded", "10k"), ("redis_pg", "100k"), ("redis_pg", "1m")]
    if SMOKE:
        plan = [("redis_pg", "smoke"), ("embedded", "smoke")]
    results = {}
    try:
        for kind, scenario in plan:
            args = ["--users", "300", "--posts", "5", "--duration", "2s", "--rate", "200"] if scenario == "smoke" else ["--scenario", scenario]
            runs = []
            for r in range(REPEAT if kind == "redis_pg" or SMOKE else 3):
                log(f"{scenario} on {kind}, run {r + 1}")
                runs.append(one_run(kind, args, work))
                log(f"  {runs[-1]['requests_per_sec']} req/s, like p99 {runs[-1]['per_op'].get('like', {}).get('p99_ms')} ms, {runs[-1]['consistency']}")
            med = lambda f: statistics.median(f(r) for r in runs)
            results[f"{scenario}/{kind}"] = {
                "runs": runs,
                "median": {
                    "requests_per_sec": med(lambda r: r["requests_per_sec"]),
                    "like_p50_ms": med(lambda r: r["per_op"]["like"]["p50_ms"]),
                    "like_p99_ms": med(lambda r: r["per_op"]["like"]["p99_ms"]),
                    "like_p999_ms": med(lambda r: r["per_op"]["like"]["p999_ms"]),
                    "drain_seconds": med(lambda r: r["drain_seconds"]),
                    "tally_peak_rss_mb": med(lambda r: r["tally_peak_rss_mb"]),
                },
                "consistency": sorted({r["consistency"] for r in runs}),
            }
            bad = [r for r in runs if r["consistency"] != "exact"]
            if bad:
                raise SystemExit(f"{scenario}/{kind}: consistency {bad[0]['consistency']}")
    finally:
        subprocess.run(["rm", "-rf", str(work)])
    doc = {"benchmark": "tally bench scenarios with the consistency proof",
           "command": "bench/scenarios.py" + (" --smoke" if SMOKE else ""), "results": results}
    (OUT / "scenarios.json").write_text(json.dumps(doc, indent=2))
    print(json.dumps({k: v["median"] for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()
