//! Time per snapshot with k snapshots in flight: k snapshots started at once from initiators
//! taken in turn, then waited for, on the complete graph of N idle processes (no application
//! traffic, so what is timed is the snapshot machinery alone), on the threaded runtime and on
//! the simulator. Flat figures across k mean no per-snapshot work grows with the number in
//! flight. `cargo bench --bench concurrent`; `python3 .ci/bench_table.py` prints the table.
//!
//! `CONCURRENT_MAX_K` leaves out the larger k (for code where they would take too long).

use std::time::{Duration, Instant};

use chandy_lamport::sim::Simulation;
use chandy_lamport::{Context, Process, ProcessId, Runtime, Topology};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

/// A process with no work of its own: the snapshots are all there is.
struct Idle;

impl Process for Idle {
    type Message = u64;
    type State = u64;
    fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {}
    fn record(&self) -> u64 {
        0
    }
}

fn idle(n: usize) -> impl Iterator<Item = Idle> {
    (0..n).map(|_| Idle)
}

/// Starts `k` snapshots on a fresh runtime and waits for all; the start of the runtime is not
/// timed.
fn runtime_round(n: usize, k: usize) -> Duration {
    let runtime = Runtime::new(Topology::complete(n), idle(n)).unwrap();
    let began = Instant::now();
    let tickets: Vec<_> = (0..k)
        .map(|i| runtime.start_snapshot(i % n).unwrap())
        .collect();
    for ticket in tickets {
        ticket.wait_timeout(Duration::from_secs(600)).unwrap();
    }
    let elapsed = began.elapsed();
    runtime.shutdown().unwrap();
    elapsed
}

/// The same on the simulator.
fn simulator_round(n: usize, k: usize) -> Duration {
    let mut sim = Simulation::new(Topology::complete(n), idle(n), k as u64).unwrap();
    let began = Instant::now();
    for i in 0..k {
        sim.start_snapshot(i % n).unwrap();
    }
    sim.run_until_snapshots_complete(u64::MAX).unwrap();
    let elapsed = began.elapsed();
    assert_eq!(sim.snapshots().len(), k);
    elapsed
}

fn concurrent(c: &mut Criterion) {
    let max_k = std::env::var("CONCURRENT_MAX_K")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    for n in [4, 8] {
        let mut group = c.benchmark_group(format!("concurrent_snapshots/N={n}"));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(3));
        for k in [1usize, 100, 10_000, 100_000] {
            if k > max_k {
                continue;
            }
            // Elements = snapshots, so criterion's throughput is snapshots per second.
            group.throughput(Throughput::Elements(k as u64));
            group.bench_function(format!("runtime/k={k}"), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| runtime_round(n, k)).sum())
            });
            group.bench_function(format!("simulator/k={k}"), |b| {
                b.iter_custom(|iters| (0..iters).map(|_| simulator_round(n, k)).sum())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, concurrent);
criterion_main!(benches);
