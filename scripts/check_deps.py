#!/usr/bin/env python3
"""Fails if a crate of the workspace depends on one it must not.

The rules are docs/ARCHITECTURE.md's "Crates": dependencies point one way
(tally -> tally-server -> tally-bench -> tally-client, and everything ->
tally-store), and the store knows nothing of HTTP, the command line or live
push. Only normal dependencies count: tests may use anything.

    scripts/check_deps.py        (the test command runs it)
"""
import json, subprocess, sys

# crate: (Tally crates it may use, external crates it must not use)
HTTP = {"axum", "tower", "tower-http", "utoipa", "utoipa-axum", "utoipa-swagger-ui", "reqwest",
        "tokio-tungstenite", "socketioxide", "rust-embed"}
RULES = {
    "tally-store": (set(), HTTP | {"clap", "figment", "image"}),
    "tally-client": (set(), {"axum", "sqlx", "redis", "clap", "socketioxide"}),
    "tally-bench": ({"tally-store", "tally-client"}, {"axum", "clap", "socketioxide", "utoipa"}),
    "tally-server": ({"tally-store", "tally-bench", "tally-client"}, {"clap"}),
    "tally": ({"tally-store", "tally-bench", "tally-server", "tally-client"}, set()),
}

def violations(packages):
    """What breaks the rules, for `cargo metadata`'s packages."""
    members = {p["name"]: p for p in packages}
    errors = []
    if set(members) != set(RULES):
        errors.append(f"workspace crates {sorted(members)} differ from the rules' {sorted(RULES)}")
    for name, package in members.items():
        allowed, banned = RULES.get(name, (set(), set()))
        for dep in package["dependencies"]:
            if dep["kind"] is not None:  # dev and build dependencies
                continue
            dep_name = dep["name"]
            if dep_name in RULES and dep_name not in allowed:
                errors.append(f"{name} must not depend on {dep_name}")
            if dep_name in banned:
                errors.append(f"{name} must not depend on {dep_name}")
    return errors


meta = json.loads(subprocess.run(
    ["cargo", "metadata", "--format-version", "1", "--no-deps", "--offline"],
    check=True, capture_output=True, text=True).stdout)
packages = meta["packages"]

# The check must be able to fail: the real metadata plus a store that uses
# the server and axum, and a test-only use that is allowed, must give
# exactly those two errors.
planted = json.loads(json.dumps(packages))
for p in planted:
    if p["name"] == "tally-store":
        p["dependencies"] += [{"name": "tally-server", "kind": None}, {"name": "axum", "kind": None},
                              {"name": "axum", "kind": "dev"}]
assert violations(planted) == ["tally-store must not depend on tally-server",
                               "tally-store must not depend on axum"], violations(planted)

errors = violations(packages)
for e in errors:
    print(f"check_deps: {e}", file=sys.stderr)
if errors:
    sys.exit(1)
print(f"check_deps: {len(packages)} crates keep their dependency rules (and a planted violation is caught)")
