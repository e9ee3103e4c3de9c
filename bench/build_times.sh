#!/usr/bin/env bash
# Build times of a Tally tree: a clean release build, then the rebuild after
# touching one route file and one store file, in release and in debug.
#
#   bench/build_times.sh TREE ROUTE_FILE STORE_FILE OUT.json
#   bench/build_times.sh --smoke   debug rebuilds only, in this tree's own
#                                  target dir (seconds; checks the script)
#
# TREE is a checkout (e.g. a `git worktree` of an older commit, to compare
# before and after); the files are paths inside it. A full run uses its own
# target directory under TREE, so nothing is shared with other builds: run
# it on an idle machine. Results: bench/results/build-times-*.json and
# docs/BENCHMARKS.md §7.
set -euo pipefail
smoke=false
if [[ "${1:-}" == "--smoke" ]]; then
    smoke=true
    root=$(cd "$(dirname "$0")/.." && pwd)
    set -- "$root" crates/tally-server/src/routes/likes.rs \
        crates/tally-store/src/production/likes/mod.rs "$root/target/bench-smoke/build-times.json"
    mkdir -p "$root/target/bench-smoke"
fi
tree=$(realpath "$1"); route=$2; store=$3; out=$4
cd "$tree"

seconds() {
    local start end
    start=$(date +%s%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s%N)
    printf '%d.%03d' $(((end - start) / 1000000000)) $(((end - start) / 1000000 % 1000))
}

if $smoke; then
    cargo build --bin tally --quiet
    clean_release=null route_release=null store_release=null clean_debug=null
else
    export CARGO_TARGET_DIR="$tree/target-buildtimes"
    rm -rf "$CARGO_TARGET_DIR"
    cargo fetch --quiet
    clean_release=$(seconds cargo build --release --bin tally)
    touch "$route"; route_release=$(seconds cargo build --release --bin tally)
    touch "$store"; store_release=$(seconds cargo build --release --bin tally)
    clean_debug=$(seconds cargo build --bin tally)
fi
touch "$route"; route_debug=$(seconds cargo build --bin tally)
touch "$store"; store_debug=$(seconds cargo build --bin tally)
cat > "$out" <<JSON
{
  "command": "bench/build_times.sh $*",
  "tree": "$(git -C "$tree" rev-parse --short HEAD)$(git -C "$tree" diff --quiet || echo +dirty)",
  "machine": "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(rustc --version)",
  "route_file": "$route",
  "store_file": "$store",
  "release": {"clean_s": $clean_release, "touch_route_s": $route_release, "touch_store_s": $store_release},
  "debug": {"clean_s": $clean_debug, "touch_route_s": $route_debug, "touch_store_s": $store_debug}
}
JSON
cat "$out"
