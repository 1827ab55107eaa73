#!/usr/bin/env python3
"""Teeth: break the marker rules on purpose, one mutation at a time, and list the tests that fail.

Each mutation is a set of exact text replacements in the marker core or the event loop. The
runner copies the repository to a scratch directory, applies one mutation, runs `cargo test
--no-fail-fast` there, and reports which tests failed. A mutation no test catches is a hole in
the suite: the script exits 1.

    python3 .ci/mutations.py            # every mutation
    python3 .ci/mutations.py M2 M6      # some of them

Not part of the CI run (it builds the test suite once per mutation); rerun it when the marker
core, the event loop or the tests change. Each replacement must match exactly once, so a
refactor that makes a mutation stale is reported rather than silently skipped.
"""
import os
import re
import shutil
import signal
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRATCH = "/tmp/chandy-lamport-mutants"
TARGET = "/tmp/chandy-lamport-mutants-target"
HANG = 600  # seconds: a suite run longer than this is stuck

MUTATIONS = {
    "M1": (
        "not recording messages on a channel that is being recorded",
        [(
            "src/recorder.rs",
            "        if inbound.recorders != 0 {\n            inbound.log.push_back(",
            "        if inbound.recorders != 0 && seq == 0 {\n            inbound.log.push_back(",
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
                "LATE.with(|l| l.get().is_none()) => LATE.with(|l| l.set(Some((i, id)))),\n"
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
            "        if snapshot.recorded[channel].is_some() {\n            return Err(MarkerError::DuplicateMarker {",
            "        let channel = (0..snapshot.recorded.len()).find(|&c| c != channel && "
            "snapshot.recorded[c].is_none()).unwrap_or(channel);\n"
            "        if snapshot.recorded[channel].is_some() {\n            return Err(MarkerError::DuplicateMarker {",
        )],
    ),
    "M4": (
        "a returning marker making the initiator record its state again",
        [(
            "src/recorder.rs",
            "        if snapshot.recorded[channel].is_some() {\n            return Err(MarkerError::DuplicateMarker {",
            "        if snapshot.initiated {\n            snapshot.state = record();\n        }\n"
            "        if snapshot.recorded[channel].is_some() {\n            return Err(MarkerError::DuplicateMarker {",
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
        "delivering an application message ahead of a marker sent before it (in both drivers' "
        "channel handling)",
        [
            (
                "src/runtime/event_loop.rs",
                "                Ok(envelope) => self.host.on_envelope(i, envelope, &mut wire),",
                "                Ok(envelope @ Envelope::Marker(_)) => match self.inbound[i].try_recv() {\n"
                "                    Ok(next @ Envelope::Message { .. }) => { self.host.on_envelope(i, next, &mut wire); self.host.on_envelope(i, envelope, &mut wire) }\n"
                "                    Ok(next) => { self.host.on_envelope(i, envelope, &mut wire); self.host.on_envelope(i, next, &mut wire) }\n"
                "                    Err(_) => self.host.on_envelope(i, envelope, &mut wire),\n"
                "                },\n"
                "                Ok(envelope) => self.host.on_envelope(i, envelope, &mut wire),",
            ),
            (
                "src/sim/mod.rs",
                "            let item = self.net.lanes[c]\n                .queue\n                .pop_front()\n"
                "                .expect(\"due lanes are not empty\");",
                "            let mut item = self.net.lanes[c].queue.pop_front().expect(\"due lanes are not empty\");\n"
                "            if matches!(item.envelope, Envelope::Marker(_)) && matches!(self.net.lanes[c].queue.front().map(|x| &x.envelope), Some(Envelope::Message { .. })) {\n"
                "                let next = self.net.lanes[c].queue.pop_front().unwrap();\n"
                "                self.net.lanes[c].queue.push_front(item);\n"
                "                item = next;\n"
                "            }",
            ),
        ],
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


def run_tests():
    """Runs the suite on the mutant; returns the failing tests (a hang counts as a failure)."""
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET, TEST_PATIENCE_SECS="5", PROPTEST_CASES="64",
               PROPTEST_MAX_SHRINK_ITERS="8", PROPTEST_MAX_SHRINK_TIME="10000")
    proc = subprocess.Popen(
        ["cargo", "test", "--no-fail-fast", "--", "--test-threads", "4"],
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
    return failed


def main():
    chosen = sys.argv[1:] or list(MUTATIONS)
    holes = []
    for key in chosen:
        what, edits = MUTATIONS[key]
        prepare()
        apply(edits)
        failed = run_tests()
        print(f"{key}: {what}")
        if failed:
            print(f"  caught by {len(failed)} tests:")
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
