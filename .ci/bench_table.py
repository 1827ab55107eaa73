#!/usr/bin/env python3
"""Prints the benchmark page's tables from criterion's results (target/criterion).

    cargo bench --bench throughput --bench latency --bench recorder --bench concurrent
    python3 .ci/bench_table.py

Throughput figures are deliveries per second from criterion's median (its `estimates.json`);
ratios are taken between figures of the same run.
"""
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "criterion")


def estimate(*path):
    """Median time per iteration in seconds, and elements per iteration (if a throughput)."""
    base = os.path.join(ROOT, *path, "new")
    try:
        est = json.load(open(os.path.join(base, "estimates.json")))
        bench = json.load(open(os.path.join(base, "benchmark.json")))
    except FileNotFoundError:
        return None, None
    elements = (bench.get("throughput") or {}).get("Elements")
    return est["median"]["point_estimate"] / 1e9, elements


def rate(*path):
    t, elements = estimate(*path)
    return None if t is None or not elements else elements / t


def fmt_rate(r):
    return "-" if r is None else f"{r / 1e6:.2f}M"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}"


def main():
    if not os.path.isdir(ROOT):
        sys.exit("no criterion results: run cargo bench first")
    print("| N | bare inbox | bare edge+Select | bare edge+bitmap, tuned | runtime | "
          "runtime, 4 snapshots always running | runtime, 1000 snapshots/s | "
          "runtime, 1000 snapshots/s from a tick | runtime / inbox | "
          "runtime / edge+Select | runtime / tuned | 4 always running / none | 1000/s / none | "
          "1000/s from a tick / none |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in (4, 16, 64):
        g = f"closed_loop_N={n}"
        inbox, select = rate(g, "bare_inbox"), rate(g, "bare_edge_select")
        tuned = rate(g, "bare_edge_bitmap_tuned")
        rt, snap = rate(g, "runtime"), rate(g, "runtime_4_snapshots")
        paced = rate(g, "runtime_1000_snapshots_per_s")
        ticked = rate(g, "runtime_1000_snapshots_per_s_from_tick")
        print(f"| {n} | {fmt_rate(inbox)} | {fmt_rate(select)} | {fmt_rate(tuned)} | {fmt_rate(rt)} | "
              f"{fmt_rate(snap)} | {fmt_rate(paced)} | {fmt_rate(ticked)} | {ratio(rt, inbox)} | "
              f"{ratio(rt, select)} | {ratio(rt, tuned)} | {ratio(snap, rt)} | {ratio(paced, rt)} | "
              f"{ratio(ticked, rt)} |")
    print()
    # The bare program carrying the runtime's wire (24-byte numbered messages): what the wire
    # costs any program, and the runtime's own cost with the wire equal.
    print("| N | bare tuned | bare tuned, numbered | runtime | numbered / tuned | runtime / numbered |")
    print("|---|---|---|---|---|---|")
    for n in (4, 16, 64):
        g = f"closed_loop_N={n}"
        tuned, numbered = rate(g, "bare_edge_bitmap_tuned"), rate(g, "bare_edge_bitmap_tuned_numbered")
        rt = rate(g, "runtime")
        print(f"| {n} | {fmt_rate(tuned)} | {fmt_rate(numbered)} | {fmt_rate(rt)} | "
              f"{ratio(numbered, tuned)} | {ratio(rt, numbered)} |")
    print()
    print("| N | idle latency | loaded latency |")
    print("|---|---|---|")
    for n in (4, 16, 64):
        idle, _ = estimate("snapshot_latency", f"idle_N={n}")
        loaded, _ = estimate("snapshot_latency", f"loaded_N={n}")
        show = lambda t: "-" if t is None else f"{t * 1e6:.0f} us"
        print(f"| {n} | {show(idle)} | {show(loaded)} |")
    print()
    print("| snapshots recording | ns per message |")
    print("|---|---|")
    for k in (0, 1, 8):
        t, _ = estimate("recorder_on_message", f"{k}_recording")
        print(f"| {k} | {'-' if t is None else f'{t * 1e9:.1f}'} |")
    print()
    part, _ = estimate("recorder_on_marker", "47_channels")
    if part is not None:
        print(f"A part of 47 incoming channels (47 markers): {part * 1e9:.0f} ns, "
              f"{part * 1e9 / 47:.1f} ns a marker")
        print()
    print("| N | k in flight | runtime, us per snapshot | simulator, us per snapshot |")
    print("|---|---|---|---|")
    for n in (4, 8):
        for k in (1, 100, 10_000, 100_000):
            g = f"concurrent_snapshots_N={n}"
            per = lambda t: "-" if t is None else f"{t * 1e6 / k:.1f}"
            rt, _ = estimate(g, f"runtime_k={k}")
            sim, _ = estimate(g, f"simulator_k={k}")
            print(f"| {n} | {k:,} | {per(rt)} | {per(sim)} |")


if __name__ == "__main__":
    main()
