#!/usr/bin/env python3
"""Where the time of a like goes, on the production backend (per-stage timings).

    bench/like_stages.py            -> bench/results/like-stages.json
    bench/like_stages.py --smoke    -> target/bench-smoke/

Drives PUT /like with wrk (as bench/like_http.py does) and reads the server's
own histograms from /metrics: the time in the Redis like script round trip
(`tally_redis_like_seconds`) inside the time of the whole request in the
server (`http_request_duration_seconds` for the like route). The remainder is
HTTP parsing, routing, token verification, rate limiting and JSON; what wrk
sees beyond the server's time is the client, the kernel and queueing.
"""
import json, re, subprocess, sys, tempfile, urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import like_http  # noqa: E402
from like_http import ROOT, Backend, Tenant, build_release, png, wrk  # noqa: E402

SMOKE = "--smoke" in sys.argv
OUT = (ROOT / "target/bench-smoke") if SMOKE else (ROOT / "bench/results")


def histogram(text, name, labels=""):
    s = c = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}_(sum|count)(\{{.*\}})?\s+(\S+)$", line)
        if m and labels in (m.group(2) or ""):
            if m.group(1) == "sum":
                s += float(m.group(3))
            else:
                c += float(m.group(3))
    return s, c


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    build_release()
    work = Path(tempfile.mkdtemp(prefix="tally-stages-"))
    tenant = Tenant()
    node = Backend("stages", work, tenant.args)
    png(work / "post.png")
    users, posts = (500, 5) if SMOKE else (100_000, 100)
    try:
        node.cli("users", "seed", "--count", str(users), "--tokens-out", str(work / "tokens"))
        node.serve()
        token = (work / "tokens").read_text().split("\n", 1)[0].split(" ", 1)[1]
        first = None
        for i in range(posts):
            out = subprocess.run(["curl", "-sf", "-H", f"Authorization: Bearer {token}", "-F", f"image=@{work / 'post.png'}",
                                  f"{node.base}/v1/posts"], check=True, capture_output=True, text=True).stdout
            first = first or json.loads(out)["id"]
        like_http.CFG.update(duration="2s" if SMOKE else "20s", posts=posts, connections=8 if SMOKE else 64, threads=1 if SMOKE else 2)
        before = urllib.request.urlopen(f"{node.base}/metrics").read().decode()
        client = wrk(node.base, work / "tokens", first)
        after = urllib.request.urlopen(f"{node.base}/metrics").read().decode()
        route = 'route="/v1/posts/{id}/like"'
        (hs0, hc0), (hs1, hc1) = histogram(before, "http_request_duration_seconds", route), histogram(after, "http_request_duration_seconds", route)
        (rs0, rc0), (rs1, rc1) = histogram(before, "tally_redis_like_seconds"), histogram(after, "tally_redis_like_seconds")
        server_ms = (hs1 - hs0) / max(hc1 - hc0, 1) * 1000
        redis_ms = (rs1 - rs0) / max(rc1 - rc0, 1) * 1000
        result = {
            "likes_per_sec": client["likes_per_sec"],
            "client_p50_ms": client["p50_ms"], "client_p99_ms": client["p99_ms"],
            "server_mean_ms": round(server_ms, 3),
            "redis_script_mean_ms": round(redis_ms, 3),
            "rest_of_server_mean_ms": round(server_ms - redis_ms, 3),
            "redis_share_of_server_time": round(redis_ms / server_ms, 3) if server_ms else None,
        }
    finally:
        node.stop()
        tenant.drop()
        subprocess.run(["rm", "-rf", str(work)])
    (OUT / "like-stages.json").write_text(json.dumps({"command": "bench/like_stages.py" + (" --smoke" if SMOKE else ""), "results": result}, indent=2))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
