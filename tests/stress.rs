//! The stress test: a bank on the complete graph of 32 processes under full traffic, with 64
//! snapshots always in flight. Every snapshot must verify exactly, conserve money and find every
//! transfer; afterwards no per-snapshot state may be left anywhere in the runtime.
//!
//! Sized by one constant: small under plain `cargo test`; `STRESS_SNAPSHOTS=10000 cargo test
//! --release --test stress -- --nocapture` runs the full size (and prints counts and times).

mod common;

use std::collections::VecDeque;
use std::time::Instant;

use chandy_lamport::{Runtime, RuntimeStats, Topology};
use common::{branches, check_bank, seed, wait_until_clean, PATIENCE};

/// Snapshots taken by the stress test unless `STRESS_SNAPSHOTS` says otherwise.
const SNAPSHOTS: usize = 300;
const PROCESSES: usize = 32;
const IN_FLIGHT: usize = 64;
const TRANSFERS_PER_BRANCH: u64 = 4;

fn snapshots() -> usize {
    common::env_or("STRESS_SNAPSHOTS", SNAPSHOTS as u64) as usize
}

#[test]
fn concurrent_snapshots_under_full_traffic_leave_nothing_behind() {
    let (seed, _guard) = seed("concurrent_snapshots_under_full_traffic_leave_nothing_behind");
    let total_snapshots = snapshots();
    let (procs, traffic) = branches(PROCESSES, 1000, TRANSFERS_PER_BRANCH, seed);
    let runtime = Runtime::new(Topology::complete(PROCESSES), procs).unwrap();
    let total = PROCESSES as u64 * 1000;
    let transfers = PROCESSES as u64 * TRANSFERS_PER_BRANCH;
    let mut rng = fastrand::Rng::with_seed(seed);
    let start = Instant::now();
    let mut running = VecDeque::new();
    let mut latencies = Vec::with_capacity(total_snapshots);
    let mut peak = RuntimeStats::default();
    let mut recorded_in_flight = 0;
    for started in 0..total_snapshots + IN_FLIGHT {
        if running.len() == IN_FLIGHT || started >= total_snapshots {
            let Some(ticket) = running.pop_front() else {
                break;
            };
            let ticket: chandy_lamport::PendingSnapshot<u64, u64> = ticket;
            let s = ticket.wait_timeout(*PATIENCE).unwrap();
            check_bank(&s, total, transfers);
            recorded_in_flight += s.in_flight().count();
            latencies.push(s.latency());
        }
        if started < total_snapshots {
            running.push_back(runtime.start_snapshot(rng.usize(..PROCESSES)).unwrap());
            if started % 64 == 0 {
                let now = runtime.stats();
                peak.recording = peak.recording.max(now.recording);
                peak.collecting = peak.collecting.max(now.collecting);
            }
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(latencies.len(), total_snapshots);
    // Every snapshot has ended, so every process has forgotten its part: nothing may remain.
    wait_until_clean(&runtime);
    let delivered = traffic.load(std::sync::atomic::Ordering::Relaxed);
    let stopped = runtime.shutdown().unwrap();
    assert!(stopped.failures.is_empty());
    latencies.sort();
    eprintln!(
        "stress: {total_snapshots} snapshots of {PROCESSES} processes ({} channels), {IN_FLIGHT} in \
         flight, in {:.2} s; {delivered} transfers delivered meanwhile; {recorded_in_flight} \
         in-flight transfers recorded; latency p50 {:?} p99 {:?} max {:?}; peak local parts {} \
         and assemblies {}",
        PROCESSES * (PROCESSES - 1),
        elapsed.as_secs_f64(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies[latencies.len() - 1],
        peak.recording,
        peak.collecting,
    );
    assert!(delivered > 0, "traffic ran during the snapshots");
}
