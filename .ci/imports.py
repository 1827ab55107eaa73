#!/usr/bin/env python3
"""Checks the crate's module structure: no import circle between the top-level modules of src/;
the simulator (sim/) and the threaded runtime (runtime/) do not import each other; the cluster
(cluster/) is a layer over the runtime (it may import runtime/, which must not import it) and
imports nothing of the simulator, which imports nothing of it; detect.rs imports no driver; and
error.rs imports only the ids module. Reads `crate::NAME` paths outside comments and test
modules.

    python3 .ci/imports.py
"""
import re, os, sys
# Top-level module of each file under src/, and the crate modules it names (use crate::X, crate::X::...).
mods = {}
for root, _, files in os.walk("src"):
    for f in files:
        if not f.endswith(".rs"): continue
        path = os.path.join(root, f)
        rel = os.path.relpath(path, "src")
        top = rel.split(os.sep)[0].removesuffix(".rs")
        if top in ("lib", "main"): continue
        text = open(path).read()
        # drop test modules: the graph is about the library's own code
        text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
        text = "\n".join(l for l in text.splitlines() if not l.strip().startswith("//"))
        deps = set(re.findall(r"crate::([a-z_]+)", text))
        if rel.startswith("runtime") or rel.startswith("sim"):
            pass
        mods.setdefault(top, set()).update(d for d in deps if d != top)
for m in sorted(mods): print(f"{m:12} -> {', '.join(sorted(mods[m]))}")
# cycles
def dfs(n, stack, seen):
    for d in mods.get(n, ()):
        if d in stack:
            print("CYCLE:", " -> ".join(stack[stack.index(d):] + [d])); return True
        if d not in seen:
            seen.add(d)
            if dfs(d, stack + [d], seen): return True
    return False
found = any(dfs(m, [m], set()) for m in mods)
print("no import circle" if not found else "circle found")
rules = [
    ("sim imports nothing from runtime", "runtime" not in mods["sim"]),
    ("runtime imports nothing from sim", "sim" not in mods["runtime"]),
    ("runtime imports nothing from cluster (the cluster is a layer over it)",
     "cluster" not in mods["runtime"]),
    ("sim imports nothing from cluster", "cluster" not in mods["sim"]),
    ("cluster imports nothing from sim", "sim" not in mods.get("cluster", set())),
    ("detect imports no driver", not {"runtime", "sim", "cluster"} & mods["detect"]),
    ("error imports only ids", mods["error"] <= {"ids"}),
    ("ids imports nothing of the crate", not mods["ids"]),
]
for what, ok in rules:
    print(("ok: " if ok else "BROKEN: ") + what)
if found or not all(ok for _, ok in rules):
    sys.exit(1)
