//! The simulator's speed: simulated deliveries per second on one core, for the bank workload at
//! N = 16 (complete graph, 4 transfers in flight per process), without and with snapshots (one
//! started every 50 steps). `cargo bench --bench simulator`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use chandy_lamport::sim::Simulation;
use chandy_lamport::Topology;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const N: usize = 16;
const DELIVERIES: u64 = 200_000;

fn run(seed: u64, snapshot_every: Option<u64>) -> Duration {
    let (procs, _) = common::branches(N, 1000, 4, seed);
    let mut sim = Simulation::new(Topology::complete(N), procs, seed).unwrap();
    let began = Instant::now();
    let mut step = 0u64;
    while sim.deliveries() < DELIVERIES {
        if let Some(every) = snapshot_every {
            if step.is_multiple_of(every) {
                sim.start_snapshot((step / every) as usize % N).unwrap();
            }
        }
        sim.step();
        step += 1;
    }
    began.elapsed()
}

fn simulator(c: &mut Criterion) {
    let mut group = c.benchmark_group("simulator_bank_N=16");
    group.throughput(Throughput::Elements(DELIVERIES));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("deliveries", |b| {
        b.iter_custom(|iters| (0..iters).map(|i| run(i, None)).sum())
    });
    group.bench_function("deliveries_with_snapshots", |b| {
        b.iter_custom(|iters| (0..iters).map(|i| run(i, Some(50))).sum())
    });
    group.finish();
}

criterion_group!(benches, simulator);
criterion_main!(benches);
