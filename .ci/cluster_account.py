#!/usr/bin/env python3
"""Where the CPU goes per delivery across nodes, the cluster against the bare program
(BENCHMARKS.md, "The cluster against a bare TCP program"):

    cargo bench --bench cluster_ratio --no-run            # the binary it names: CR
    perf record -F 3000 -g -o /tmp/acc.cluster $CR 3 --only cluster --sizes 2x4
    perf record -F 3000 -g -o /tmp/acc.bare    $CR 3 --only bare --sizes 2x4
    python3 .ci/cluster_account.py CLUSTER_NS BARE_NS

CLUSTER_NS and BARE_NS: each program's CPU per delivery, 2 cores / its rate (both keep the
two cores busy), from a run of the bench without perf. Each group's share of the samples
times that is its ns per delivery.
"""
import collections, re, subprocess, sys
def rows(path):
    out = subprocess.run(["perf","report","-i",path,"--no-children","--sort","dso,sym","--stdio","-g","none"],capture_output=True,text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if m: yield float(m.group(1)), m.group(2), m.group(3), m.group(4).strip()
NET = re.compile(r"tcp|ip_|__ip|dev_|loopback|net_|skb|sock|sendto|recvfrom|sendmsg|recvmsg|copy_user|csum|nf_|__netif|inet|__sys_send|__sys_recv|_copy_to_iter|_copy_from_iter|rep_movs|neigh|validate_xmit|__kfree_skb|kmem|kmalloc|__alloc|slab|fdget|__x64_sys_(read|write)|ksys_(read|write)|vfs_(read|write)|sock_")
def group(dso, kind, sym):
    if kind == "k":
        return "kernel: network (TCP, loopback, copies)" if NET.search(sym) else "kernel: scheduling, wake-ups, yields"
    if re.search(r"chacha|poly1305|snow|blake|x25519|curve25519|_mm256|avx2|core_arch", sym): return "encryption (ChaCha20-Poly1305)"
    if re.search(r"postcard|serde", sym): return "encoding, decoding"
    if re.search(r"__mem(cpy|move|set)", sym): return "copies (memcpy, memset)"
    if "sched_yield" in sym or "__libc_recv" in sym or "__send" in sym or "syscall" in sym or "futex" in sym or "pthread" in sym: return "libc: system call stubs"
    if "crossbeam" in sym: return "crossbeam channels"
    if "malloc" in sym or "free" in sym or "alloc" in sym: return "allocation"
    if "chandy_lamport" in sym: return "the runtime and cluster code"
    return "other user code (the bench's loop, std)"
ns_per = {"cluster": float(sys.argv[1]), "bare": float(sys.argv[2])}
acc = {}
for name in ("cluster","bare"):
    g = collections.Counter()
    for pct, dso, kind, sym in rows(f"/tmp/acc.{name}"):
        g[group(dso,kind,sym)] += pct
    acc[name] = g
keys = sorted(set(acc["cluster"]) | set(acc["bare"]), key=lambda k: -acc["cluster"][k])
print(f"| where | cluster ns | bare ns |\n|---|---|---|")
for k in keys:
    print(f"| {k} | {acc['cluster'][k]*ns_per['cluster']/100:.0f} | {acc['bare'][k]*ns_per['bare']/100:.0f} |")
print(f"| total | {ns_per['cluster']:.0f} | {ns_per['bare']:.0f} |")
