#!/usr/bin/env python3
"""Where the CPU goes per delivery, the runtime against the tuned bare program (BENCHMARKS.md,
"The account, after").

    cargo bench --bench ratio --no-run        # then, with the binary it names as RATIO:
    perf record -F 6000 -o /tmp/acc.runtime.16.data $RATIO 11 16 --only runtime
    perf record -F 6000 -o /tmp/acc.tuned.16.data   $RATIO 11 16 --only tuned
    python3 .ci/perf_account.py 16 RUNTIME_M TUNED_M   # the two rates ratio printed, in M/s

Every sample's source line goes into a group (kernel, crossbeam, atomics, idle, the runtime's
own files...); a group's share of the samples times 2 cores / throughput is its ns of CPU per
delivery. Both programs keep the 2 cores busy, so that product is the CPU a delivery costs.
"""
import collections
import re
import subprocess
import sys


def rows(path):
    out = subprocess.run(
        ["perf", "report", "-i", path, "--no-children", "--sort", "sym,srcline", "--stdio",
         "-F", "overhead,sym,srcline"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s+([0-9.]+)%\s+\[(.)\]\s+(.*?)\s{2,}(\S+)\s*$", line)
        if m:
            yield float(m.group(1)), m.group(2), m.group(3), m.group(4)


def group(kind, sym, src):
    f = src.split(":")[0]
    if kind == "k":
        return "kernel: switches, yields, futex"
    if "sched_yield" in sym or "syscall" in sym or f.startswith("syscall"):
        return "idle: libc's yield and park"
    if "wait" in sym and ("Doorbell" in sym or "BitmapEnd" in sym):
        return "idle: the wait loop, spinning"
    if "malloc" in f or "malloc" in sym or "free" in sym or "calloc" in sym or "alloc" in f:
        return "allocation (channel blocks)"
    if f in ("list.rs", "channel.rs", "waker.rs", "counter.rs", "backoff.rs", "utils.rs"):
        return "crossbeam send and receive"
    if f == "atomic.rs":
        return "atomics (channel and bitmap)"
    if f == "outbox.rs":
        return "runtime: outbox (link, closed flag)"
    if f == "doorbell.rs":
        return "runtime: doorbell (ring, take, bits)"
    if f == "event_loop.rs":
        return "runtime: the loop (drain, pass)"
    if f in ("host.rs", "outgoing.rs", "recorder.rs", "process.rs", "own_lines.rs", "envelope.rs",
             "peers.rs"):
        return "runtime: core (host, numbering, recorder counter)"
    if f == "mod.rs":
        return "the application, and the bare program's inlined loop"
    return "other (" + f + ")"


def account(path, rate):
    ns = 2e9 / rate
    shares = collections.Counter()
    for pct, kind, sym, src in rows(path):
        shares[group(kind, sym, src)] += pct
    return ns, shares


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    n, runtime_rate, tuned_rate = sys.argv[1], float(sys.argv[2]) * 1e6, float(sys.argv[3]) * 1e6
    nr, cr = account(f"/tmp/acc.runtime.{n}.data", runtime_rate)
    nt, ct = account(f"/tmp/acc.tuned.{n}.data", tuned_rate)
    print(f"N={n}: ns of CPU per delivery, runtime {nr:.0f}, tuned bare {nt:.0f}")
    for k in sorted(set(cr) | set(ct), key=lambda k: -cr[k] * nr):
        r, t = cr[k] * nr / 100, ct[k] * nt / 100
        if max(r, t) >= 0.5:
            print(f"  {k:55s} {r:6.1f} {t:6.1f}  {r - t:+6.1f}")


if __name__ == "__main__":
    main()
