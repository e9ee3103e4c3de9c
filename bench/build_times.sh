#!/usr/bin/env bash
# Build times of a Tally tree: a clean release build, then the rebuild after
# touching one route file and one store file, in release and in debug.
#
#   bench/build_times.sh TREE ROUTE_FILE STORE_FILE OUT.json
#
# TREE is a checkout (e.g. a `git worktree` of an older commit, to compare);
# the files are paths inside it. It uses its own target directory under
# TREE, so nothing is shared with other builds: run it on an idle machine.
set -euo pipefail
tree=$(realpath "$1"); route=$2; store=$3; out=$4
export CARGO_TARGET_DIR="$tree/target-buildtimes"
cd "$tree"
rm -rf "$CARGO_TARGET_DIR"
cargo fetch --quiet

seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}
clean_release=$(seconds cargo build --release --bin tally)
touch "$route"; route_release=$(seconds cargo build --release --bin tally)
touch "$store"; store_release=$(seconds cargo build --release --bin tally)
clean_debug=$(seconds cargo build --bin tally)
touch "$route"; route_debug=$(seconds cargo build --bin tally)
touch "$store"; store_debug=$(seconds cargo build --bin tally)
cat > "$out" <<JSON
{
  "tree": "$(git -C "$tree" rev-parse --short HEAD)$(git -C "$tree" diff --quiet || echo +dirty)",
  "machine": "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(rustc --version)",
  "route_file": "$route",
  "store_file": "$store",
  "release": {"clean_s": $clean_release, "touch_route_s": $route_release, "touch_store_s": $store_release},
  "debug": {"clean_s": $clean_debug, "touch_route_s": $route_debug, "touch_store_s": $store_debug}
}
JSON
cat "$out"
