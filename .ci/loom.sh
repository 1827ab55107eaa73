#!/usr/bin/env bash
# Model-checks the doorbell's wake-up protocol (src/runtime/doorbell.rs, `mod loom_tests`) with
# loom: every interleaving of a few threads ringing, taking, sleeping, stopping and closing. A
# lost wake-up shows as a loom "deadlock" panic; one model breaks the protocol on purpose
# (clears a bit after the drain) and must be caught, so a model too weak to find a lost wake-up
# fails CI too.
#
# Built with `--cfg loom` in its own target directory: RUSTFLAGS changes rebuild everything, so
# sharing target/ would throw away the normal build. Unoptimised on purpose: the models are
# exhaustive and run in about a second, and the build is what costs (about 1 min from scratch
# on 2 cores, against 2 min in release with this crate's LTO).
#
#   bash .ci/loom.sh                      # what CI runs
#   LOOM_MAX_PREEMPTIONS=3 bash .ci/loom.sh   # bound the search if a model grows too big
#   LOOM_TARGET_DIR=/tmp/x bash .ci/loom.sh   # another build directory
set -euo pipefail
cd "$(dirname "$0")/.."

target=${LOOM_TARGET_DIR:-target/loom}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# One test thread so each model's lines stay together; LOOM_LOG=info makes loom print
# "Completed in N iterations" per model (and much else, filtered out below).
set +e
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$target" LOOM_LOG=info RUST_BACKTRACE=0 \
  cargo test --lib loom_tests -- --test-threads 1 --nocapture >"$log" 2>&1
rc=$?
set -e

# Colours stripped; loom's INFO lines left out of what a failure shows.
if [ "$rc" -ne 0 ]; then
  sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -v ' INFO \|^ *$' | tail -60 >&2
  echo "loom: FAILED (exit $rc)" >&2
  exit "$rc"
fi
python3 - "$log" <<'PY'
import re, sys

text = re.sub(r"\x1b\[[0-9;]*m", "", open(sys.argv[1]).read())
# libtest prints "test NAME ... " before a test runs, and loom's lines follow on the same line.
models = re.findall(r"^test runtime::doorbell::loom_tests::(\w+)( - should panic)? \.\.\. ", text, re.M)
iterations = re.findall(r"Completed in (\d+) iterations", text)
deadlock = re.search(r"^deadlock; threads = .*$", text, re.M)
result = re.search(r"^test result: ok\. (\d+) passed", text, re.M)
# Tests run one at a time, in name order; the should-panic model never completes.
passing = [name for name, panics in models if not panics]
for name, n in zip(passing, iterations):
    print(f"  {name}: {n} interleavings checked")
for name, panics in models:
    if panics:
        found = deadlock.group(0) if deadlock else "nothing"
        print(f"  {name}: broken ordering caught: {found}")
assert result and int(result.group(1)) == len(models) >= 5, "fewer loom models ran than expected"
assert len(iterations) == len(passing), (iterations, passing)
assert deadlock, "the broken-ordering model did not report a deadlock"
print(f"loom: {len(models)} models ran, all as expected")
PY
