#!/usr/bin/env bash
# The speed figures worth a lent many-core machine (the `device` tool some sessions get: 16
# cores, no network beyond itself, minutes of lease), prepared here so that the lease is spent
# measuring and not building (it cannot reach crates.io):
#
#   bash .ci/device.sh pack          # here: builds the benches, copies them to target/device/
#   # then one call of the device tool:
#   #   command: bash .ci/device.sh run     carry: ["target/device"]     timeout_s: 540
#
# `run` says what machine it is on, then runs, in this order (most wanted first, so a run cut
# short still answers the open question): the cluster against the bare TCP program at every
# size (is 3 x 16's gap on 2 cores a matter of 60 threads sharing 2 cores?), the runtime against
# the tuned bare program in process, and snapshot latency across three nodes. Every line goes
# to stdout and to $OUT/device.txt.
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
pack)
    out=target/device
    mkdir -p "$out"
    for bench in cluster_ratio ratio cluster_snapshots; do
        # The bench's executable, as cargo names it (the last line that says so).
        exe=$(cargo bench --features cluster --bench "$bench" --no-run 2>&1 |
            sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -1)
        cp "$exe" "$out/$bench"
    done
    ls -la "$out"
    ;;
run)
    log=${OUT:-/tmp}/device.txt
    bin=target/device
    {
        echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
        echo "== cluster_ratio 9 (cluster / bare; cluster 100 / cluster)"
        "$bin/cluster_ratio" 9
        echo "== ratio 9 4 16 64 (runtime / tuned bare, in process)"
        "$bin/ratio" 9 4 16 64 --only tuned,runtime,1/ms
        echo "== cluster_snapshots 3 (latency beside the round trip; many in flight)"
        "$bin/cluster_snapshots" 3
    } 2>&1 | tee "$log"
    ;;
*)
    echo "usage: bash .ci/device.sh pack|run" >&2
    exit 2
    ;;
esac
