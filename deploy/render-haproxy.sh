#!/usr/bin/env bash
# Renders deploy/haproxy.cfg.in to stdout:
#
#   deploy/render-haproxy.sh LISTEN NODE...
#   deploy/render-haproxy.sh 127.0.0.1:8080 127.0.0.1:8101 127.0.0.1:8102
#
# Nodes are named node1, node2, ... in the order given, and the name is their
# stickiness cookie: append new nodes at the end so that existing cookies
# keep pointing at the same node. The one source of the balancer's config
# for deploy/topology.sh and the tests (crates/tally/tests/api/balancer.rs).

set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: $0 LISTEN_ADDR:PORT NODE_ADDR:PORT..." >&2
    exit 2
fi
template="$(dirname "$0")/haproxy.cfg.in"
[ -f "$template" ] || { echo "$0: missing $template" >&2; exit 1; }

listen="$1"
shift
servers=""
i=0
for node in "$@"; do
    case "$node" in
        *:[0-9]*) ;;
        *) echo "$0: not HOST:PORT: $node" >&2; exit 2 ;;
    esac
    i=$((i + 1))
    servers+="    server node$i $node cookie node$i"$'\n'
done

while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in
        @SERVERS@) printf '%s' "$servers" ;;
        *) printf '%s\n' "${line//@LISTEN@/$listen}" ;;
    esac
done <"$template"
