#!/usr/bin/env bash
# Failures on a real network: the bank on 3 nodes in 3 network namespaces, joined pairwise by
# veth pairs, each node on its own address of a private /24 that this script makes. Mid-run it
# takes links down (`ip link set ... down`: packets stop, nothing is closed, as a pulled cable):
#   1. both of node 2's links: every node must decide node 2 failed;
#   2. only the link between nodes 0 and 1: every node must decide node 1 failed (the higher
#      end of the one broken link, by the cluster's membership rule).
# Each time it checks that every node says so within the failure timeout and the nine twentieths
# after it that the survivors take to hear each other (plus slack for a loaded machine), that all
# three agree, and that all three exit 1 without a panic. It removes everything it made, even
# on failure. Needs root (network namespaces); where they cannot be made it says so and stops
# with success: `tests/cluster_failures.rs` checks the same with a proxy that stops forwarding.
set -euo pipefail
cd "$(dirname "$0")/.."

bank=${BANK:-target/release/examples/bank}
[ -x "$bank" ] || cargo build --release --example bank
bank=$(realpath "$bank")

timeout_s=2        # the nodes' failure timeout
slack_s=1.5        # on top of 1.45 x the timeout: a shared 2-core machine
tag="cl$$"         # every name made here starts with it (interface names: at most 15 bytes)
net="10.231.$((RANDOM % 200 + 20))"   # the /24
dir=$(mktemp -d)
pids=()

ns() { echo "${tag}n$1"; }
addr() { echo "$net.$(($1 + 1))"; }
veth() { echo "${tag}v$1$2"; }

teardown() {
  for pid in "${pids[@]:-}"; do
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  done
  pids=()
  for k in 0 1 2; do
    ip netns del "$(ns "$k")" 2>/dev/null || true
  done
}
trap 'teardown; rm -rf "$dir"' EXIT

if ! ip netns add "$(ns probe)" 2>/dev/null; then
  echo "SKIPPED: cannot make network namespaces here (not root, or not allowed)"
  exit 0
fi
ip netns del "$(ns probe)"

# Three namespaces; node k's address on its loopback; a veth pair per pair of nodes, with a
# route to the peer's address over it.
setup() {
  for k in 0 1 2; do
    ip netns add "$(ns "$k")"
    ip -n "$(ns "$k")" link set lo up
    ip -n "$(ns "$k")" addr add "$(addr "$k")/32" dev lo
  done
  for pair in "0 1" "0 2" "1 2"; do
    set -- $pair
    ip link add "$(veth "$1" "$2")" netns "$(ns "$1")" type veth \
      peer name "$(veth "$2" "$1")" netns "$(ns "$2")"
    ip -n "$(ns "$1")" link set "$(veth "$1" "$2")" up
    ip -n "$(ns "$2")" link set "$(veth "$2" "$1")" up
    ip -n "$(ns "$1")" route add "$(addr "$2")/32" dev "$(veth "$1" "$2")" src "$(addr "$1")"
    ip -n "$(ns "$2")" route add "$(addr "$1")/32" dev "$(veth "$2" "$1")" src "$(addr "$2")"
  done
  cat >"$dir/cluster.toml" <<TOML
keys = "keys"

[[node]]
address = "$(addr 0):7101"
processes = [0, 3, 6]

[[node]]
address = "$(addr 1):7101"
processes = [1, 4, 7]

[[node]]
address = "$(addr 2):7101"
processes = [2, 5, 8]
TOML
  rm -rf "$dir/keys"
  "$bank" --cluster "$dir/cluster.toml" --keygen "$dir/keys"
}

# scenario NAME EXPECTED-FAILED LINK...: runs the bank, takes the links (namespace:interface)
# down once snapshots complete across the cluster, and checks what every node says.
scenario() {
  local name=$1 expect=$2
  shift 2
  echo "-- $name: expect every node to decide node $expect failed"
  setup
  for k in 0 1 2; do
    : >"$dir/$k.out"
    ip netns exec "$(ns "$k")" "$bank" --cluster "$dir/cluster.toml" --node "$k" \
      --processes 9 --transfers 1000000000000 --snapshots 100000000 --concurrency 4 \
      --failure-timeout "$timeout_s" --seed 7 >"$dir/$k.out" 2>"$dir/$k.err" &
    pids[k]=$!
  done
  # Running across the cluster: node 0 prints a line per completed snapshot.
  local waited=0
  until [ "$(wc -l <"$dir/0.out")" -ge 20 ]; do
    sleep 0.1
    waited=$((waited + 1))
    if [ "$waited" -gt 300 ]; then
      cat "$dir"/*.err >&2
      echo "$name: the cluster did not get going in 30 s" >&2
      return 1
    fi
  done
  local cut
  cut=$(date +%s.%N)
  for link in "$@"; do
    ip -n "${link%%:*}" link set "${link#*:}" down
  done
  local rc
  for k in 0 1 2; do
    # Every node ends on its own: bounded by the stop's own timeouts; 60 s is a hang.
    for _ in $(seq 600); do
      kill -0 "${pids[k]}" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "${pids[k]}" 2>/dev/null; then
      cat "$dir/$k.err" >&2
      echo "$name: node $k still running 60 s after the cut" >&2
      return 1
    fi
    set +e
    wait "${pids[k]}"
    rc=$?
    set -e
    pids[k]=
    if [ "$rc" -ne 1 ]; then
      cat "$dir/$k.err" >&2
      echo "$name: node $k exited $rc, not 1" >&2
      return 1
    fi
    if grep -q panicked "$dir/$k.err"; then
      cat "$dir/$k.err" >&2
      echo "$name: node $k panicked" >&2
      return 1
    fi
    local said at
    said=$(grep -o 'decided failed nodes \[[0-9, ]*\] at [0-9.]*' "$dir/$k.err" || true)
    if [ "$(grep -c 'at the stop, failed nodes \['"$expect"'\]$' "$dir/$k.err")" -ne 1 ] \
      || [ "${said% at *}" != "decided failed nodes [$expect]" ]; then
      cat "$dir/$k.err" >&2
      echo "$name: node $k does not say node $expect alone failed" >&2
      return 1
    fi
    at=${said##* at }
    python3 - "$name" "$k" "$cut" "$at" "$timeout_s" "$slack_s" <<'PY'
import sys
name, k, cut, at, timeout, slack = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
took = at - cut
bound = 1.45 * timeout + slack
print(f"{name}: node {k} decided {took:.2f} s after the cut (timeout {timeout:g} s, bound {bound:g} s)")
if took > bound:
    sys.exit(f"{name}: node {k} took {took:.2f} s, over {bound:g} s")
PY
  done
  teardown
}

scenario "node 2 cut off" 2 "$(ns 2):$(veth 2 0)" "$(ns 2):$(veth 2 1)"
scenario "link 0-1 down" 1 "$(ns 0):$(veth 0 1)"
echo "ok: every node decided the same node failed, in time, and exited 1"
