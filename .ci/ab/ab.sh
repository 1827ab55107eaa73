#!/usr/bin/env bash
# A/B of the runtime's message path: commit A (default HEAD) against the working tree (B), with
# the tuned bare program, alternating in one binary (see main.rs). Usage:
#   bash .ci/ab/ab.sh [COMMIT] [ROUNDS [N...]]
# e.g. `bash .ci/ab/ab.sh HEAD~2 31 64 16`. Builds under target/ab (a git worktree of COMMIT, its
# version renamed so that cargo links both; the harness crate). Do not compile anything else
# while it runs: the figures are only as quiet as the machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
commit=${1:-HEAD}
shift || true
work="$repo/target/ab"
mkdir -p "$work"
if [ -d "$work/a" ]; then
    git worktree remove --force "$work/a"
fi
git worktree prune
git worktree add --detach "$work/a" "$commit" >/dev/null
# The same package twice needs two versions.
sed -i '0,/^version = .*/s//version = "0.0.0-a"/' "$work/a/Cargo.toml"
mkdir -p "$work/harness/src"
cat >"$work/harness/Cargo.toml" <<TOML
[package]
name = "ab"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
cl_a = { package = "chandy-lamport", path = "$work/a" }
cl_b = { package = "chandy-lamport", path = "$repo" }
crossbeam-channel = "0.5"
# The workload's token derives serde's traits (the cluster bench sends it).
serde = { version = "1", features = ["derive"] }

# As the crate's bench profile.
[profile.release]
codegen-units = 1
lto = "thin"

[workspace]
TOML
cp .ci/ab/main.rs "$work/harness/src/main.rs"
# Each build runs the workload as it is in its own tree.
sed 's/chandy_lamport::/cl_a::/g' "$work/a/benches/workload/mod.rs" >"$work/harness/src/wa.rs"
sed 's/chandy_lamport::/cl_b::/g' benches/workload/mod.rs >"$work/harness/src/wb.rs"
cargo build --release --quiet --manifest-path "$work/harness/Cargo.toml"
"$work/harness/target/release/ab" "$@"
git worktree remove --force "$work/a"
