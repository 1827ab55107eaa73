#!/usr/bin/env python3
"""Teeth: break the marker rules on purpose, one mutation at a time, and list the tests that fail.

Each mutation is a set of exact text replacements in the marker core, the simulator or the event
loop. The runner copies the repository to a scratch directory, applies one mutation, runs the
tests there, and reports which failed. A mutation no test catches is a hole in the suite: the
script exits 1.

    python3 .ci/mutations.py                # every mutation, the whole suite (slow)
    python3 .ci/mutations.py M2 M6          # some of them
    python3 .ci/mutations.py --exhaustive   # fast mode: only the exhaustive checks
                                            # (tests/exhaustive.rs), only mutations in code
                                            # the simulator runs; prints each one's shortest
                                            # counterexample (in .ci/run)

The fast mode is the claim that the exhaustive checks alone catch every mutation of code the
simulator runs. The mutations marked runtime-only (the threaded event loop, which the simulator
does not run) are left to the full suite: their comment says which tests catch them.

Each replacement must match exactly once, so a refactor that makes a mutation stale is reported
rather than silently skipped.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRATCH = "/tmp/chandy-lamport-mutants"
TARGET = "/tmp/chandy-lamport-mutants-target"
HANG = 600  # seconds: a suite run longer than this is stuck

MUTATIONS = {
    "M1": (
        "not recording messages on a channel that is being recorded",
        [(
            "src/recorder.rs",
            "        if !self.recording[channel].open.is_empty() {\n            self.logs[channel].push_back(",
            "        if !self.recording[channel].open.is_empty() && seq == 0 {\n            self.logs[channel].push_back(",
        )],
    ),
    "M2": (
        "recording own state one application message late (a first marker waits until one more "
        "application message has been handled)",
        [
            (
                "src/host.rs",
                "/// What a driver does for a host",
                "thread_local! { static LATE: std::cell::Cell<Option<(usize, SnapshotId)>> = "
                "const { std::cell::Cell::new(None) }; }\n/// What a driver does for a host",
            ),
            (
                "src/host.rs",
                "            Envelope::Marker(id) => self.marker(i, id, driver),",
                "            Envelope::Marker(id) if !self.recorder.is_active(id) && "
                "LATE.with(|l| l.get().is_none()) => { LATE.with(|l| l.set(Some((i, id)))); false }\n"
                "            Envelope::Marker(id) => self.marker(i, id, driver),",
            ),
            (
                "src/host.rs",
                "        self.callback(|app, ctx| app.on_message(from, message, ctx), driver);\n    }",
                "        self.callback(|app, ctx| app.on_message(from, message, ctx), driver);\n"
                "        if let Some((j, late)) = LATE.with(|l| l.take()) { self.marker(j, late, driver); }\n    }",
            ),
        ],
    ),
    "M3": (
        "closing the wrong channel's recording (a later marker closes another open channel)",
        [(
            "src/recorder.rs",
            "        if snapshot.closed[channel] {\n            return Err(MarkerError::DuplicateMarker {",
            "        let channel = (0..snapshot.closed.len()).find(|&c| c != channel && "
            "!snapshot.closed[c]).unwrap_or(channel);\n"
            "        if snapshot.closed[channel] {\n            return Err(MarkerError::DuplicateMarker {",
        )],
    ),
    "M4": (
        "a returning marker making the initiator record its state again",
        [(
            "src/recorder.rs",
            "        if snapshot.closed[channel] {\n            return Err(MarkerError::DuplicateMarker {",
            "        if snapshot.initiated {\n            snapshot.state = record();\n        }\n"
            "        if snapshot.closed[channel] {\n            return Err(MarkerError::DuplicateMarker {",
        )],
    ),
    "M5": (
        "not delivering a recorded message to the application",
        [(
            "src/host.rs",
            "        self.recorder.on_message(i, seq, &message);\n",
            "        self.recorder.on_message(i, seq, &message);\n"
            "        if self.recorder.is_recording(i) {\n            return;\n        }\n",
        )],
    ),
    "M6": (
        "delivering an application message ahead of a marker sent before it (the simulator's "
        "delivery code)",
        [(
            "src/sim/mod.rs",
            "        let item = self.net.lanes[c]\n            .queue\n            .pop_front()\n"
            "            .expect(\"a channel is delivered from only when it has something in flight\");",
            "        let mut item = self.net.lanes[c].queue.pop_front().expect(\"x\");\n"
            "        if matches!(item.envelope, Envelope::Marker(_)) && matches!(self.net.lanes[c].queue.front().map(|x| &x.envelope), Some(Envelope::Message { .. })) {\n"
            "            let next = self.net.lanes[c].queue.pop_front().unwrap();\n"
            "            self.net.lanes[c].queue.push_front(item);\n"
            "            item = next;\n"
            "        }",
        )],
    ),
    # Runtime-only: the threaded event loop (`deliver_from`, which every visit of a channel or
    # an inbox runs), which the simulator does not run. Caught by the full suite: 44 tests that
    # check threaded runs' cuts, in process and across nodes (rules, concurrency, smoke, scale,
    # properties, trace, cluster, bank_cli...; `python3 .ci/mutations.py R6`, 2026-12-06).
    "R6": (
        "delivering an application message ahead of a marker sent before it (the threaded "
        "runtime's event loop)",
        [(
            "src/runtime/event_loop.rs",
            "        let weighty = host.on_envelope(i, envelope, driver);\n",
            "        let weighty = match envelope {\n"
            "            m @ Envelope::Marker(_) => match next() {\n"
            "                Some((j, n @ Envelope::Message { .. })) if j == i => { host.on_envelope(i, n, driver); host.on_envelope(i, m, driver) }\n"
            "                Some((j, n)) => { host.on_envelope(i, m, driver); host.on_envelope(j, n, driver) }\n"
            "                None => host.on_envelope(i, m, driver),\n"
            "            },\n"
            "            other => host.on_envelope(i, other, driver),\n"
            "        };\n",
        )],
    ),
    "M7": (
        "treating a marker of one snapshot as a marker of another",
        [(
            "src/recorder.rs",
            "        let Some(snapshot) = self.active.get_mut(&id) else {",
            "        let id = if self.active.contains_key(&id) { id } else { "
            "self.active.keys().next().copied().unwrap_or(id) };\n"
            "        let Some(snapshot) = self.active.get_mut(&id) else {",
        )],
    ),
    "M8": (
        "a process sending its markers on every outgoing channel but the first",
        [(
            "src/host.rs",
            "            for slot in 0..self.neighbours.len() {",
            "            for slot in 1..self.neighbours.len() {",
        )],
    ),
    "M9": (
        "the recorder trimming its log from the newest open recording, not the oldest",
        [(
            "src/recorder/open_starts.rs",
            "        (self.front_open > 0).then_some(self.front_start)",
            "        (self.front_open > 0).then(|| {\n"
            "            let newest = self.later.as_ref().and_then(|l| l.back());\n"
            "            newest.map_or(self.front_start, |&(start, _)| start)\n"
            "        })",
        )],
    ),
    "M10": (
        "a process failure leaving the running snapshots waiting, not failing them",
        [(
            "src/collector.rs",
            "        Some(self.abandon_all())",
            "        Some(Vec::new())",
        )],
    ),
    "M11": (
        "a restored process numbering its messages from 1 again, not from the snapshot's counts",
        [(
            "src/host.rs",
            "            .map(|&c| starts.map_or(0, |s| s[c].sent))",
            "            .map(|&c| starts.map_or(0, |s| s[c].sent * 0))",
        )],
    ),
}


def prepare():
    if os.path.exists(SCRATCH):
        shutil.rmtree(SCRATCH)
    shutil.copytree(REPO, SCRATCH, ignore=shutil.ignore_patterns("target", ".git"))


def apply(edits):
    for path, old, new in edits:
        full = os.path.join(SCRATCH, path)
        text = open(full).read()
        if text.count(old) != 1:
            raise SystemExit(f"stale mutation: {path} has {text.count(old)} copies of {old!r}")
        open(full, "w").write(text.replace(old, new))


def run_tests(fast):
    """Runs the suite (or, fast, the exhaustive checks) on the mutant; returns the failing tests
    (a hang counts as a failure) and the lengths of the counterexamples the checker printed."""
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET, TEST_PATIENCE_SECS="5", PROPTEST_CASES="64",
               PROPTEST_MAX_SHRINK_ITERS="8", PROPTEST_MAX_SHRINK_TIME="10000")
    which = ["--test", "exhaustive"] if fast else []
    proc = subprocess.Popen(
        ["cargo", "test", "--no-fail-fast", *which, "--", "--test-threads", "4"],
        cwd=SCRATCH, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=HANG)
        hung = False
    except subprocess.TimeoutExpired:
        # A test blocked forever (a blocking call without a timeout, on a broken core): kill
        # the whole run and keep what it printed.
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        hung = True
    failed, binary = [], "?"
    for line in out.splitlines():
        m = re.match(r"\s*Running (?:unittests )?(\S+)", line)
        if m:
            binary = os.path.basename(m.group(1)).replace(".rs", "")
        if "Doc-tests" in line:
            binary = "doc"
        m = re.match(r"test (.+) \.\.\. FAILED", line)
        if m:
            failed.append(f"{binary}::{m.group(1)}")
    if hung:
        failed.append(f"{binary}: hung (killed after {HANG} s)")
    if "error[E" in out:
        raise SystemExit("mutation does not compile:\n" + out[-3000:])
    lengths = [int(n) for n in re.findall(r"^after (\d+) choices?", out, re.M)]
    return failed, lengths


def main():
    args = sys.argv[1:]
    fast = "--exhaustive" in args
    chosen = [a for a in args if a != "--exhaustive"] or list(MUTATIONS)
    if fast:
        skipped = [k for k in chosen if k.startswith("R")]
        chosen = [k for k in chosen if not k.startswith("R")]
        if skipped:
            print(f"runtime-only, left to the full suite: {skipped}")
    holes = []
    for key in chosen:
        what, edits = MUTATIONS[key]
        prepare()
        apply(edits)
        began = time.time()
        failed, lengths = run_tests(fast)
        print(f"{key}: {what} ({time.time() - began:.0f} s)")
        if failed:
            shortest = f"; shortest counterexample: {min(lengths)} choices" if lengths else ""
            print(f"  caught by {len(failed)} tests{shortest}:")
            for t in failed:
                print(f"    {t}")
        else:
            print("  NOT CAUGHT")
            holes.append(key)
        sys.stdout.flush()
    if holes:
        print(f"not caught: {holes}")
        sys.exit(1)


if __name__ == "__main__":
    main()
