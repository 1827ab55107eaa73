//! Closed-loop bank throughput through the runtime, beside the same workload on bare crossbeam
//! channels (one inbox per thread; one channel per edge with `Select`; one channel per edge with
//! a ready bitmap and the runtime's own idle schedule, the fairest rival), in the same run; and the
//! runtime again with 4 snapshots continuously in flight, and with one snapshot started every
//! millisecond (by the main thread, and by a process's own tick). `cargo bench --bench
//! throughput`;
//! `python3 .ci/bench_table.py` prints the ratios.

mod workload;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use workload::{
    hops_for, run_edge_bitmap_tuned, run_edge_bitmap_tuned_numbered, run_edge_select, run_inbox,
    run_runtime, Snapshots,
};

/// Deliveries per timed run (each run starts N threads fresh; the start is not timed).
const DELIVERIES: u64 = 400_000;
const IN_FLIGHT: usize = 4;

fn closed_loop(c: &mut Criterion) {
    for n in [4, 16, 64] {
        let hops = hops_for(n, IN_FLIGHT, DELIVERIES);
        let mut group = c.benchmark_group(format!("closed_loop/N={n}"));
        group.throughput(Throughput::Elements((n * IN_FLIGHT) as u64 * hops as u64));
        group.sample_size(10);
        group.warm_up_time(Duration::from_secs(1));
        group.measurement_time(Duration::from_secs(4));
        group.bench_function("bare_inbox", |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_inbox(n, IN_FLIGHT, hops)).sum())
        });
        group.bench_function("bare_edge_select", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_edge_select(n, IN_FLIGHT, hops))
                    .sum()
            })
        });
        group.bench_function("bare_edge_bitmap_tuned", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_edge_bitmap_tuned(n, IN_FLIGHT, hops))
                    .sum()
            })
        });
        group.bench_function("bare_edge_bitmap_tuned_numbered", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_edge_bitmap_tuned_numbered(n, IN_FLIGHT, hops))
                    .sum()
            })
        });
        // The runtime without snapshots, with 4 always in flight, one started every
        // millisecond by the main thread, and the same rate started by process 0's own tick, so
        // no thread outside the runtime wakes every millisecond (on 2 cores such wake-ups alone
        // cost any program throughput; `cargo bench --bench ratio` shows it on the bare one).
        let ms = Duration::from_millis(1);
        let runtime_variants = [
            ("runtime", Snapshots::Off),
            ("runtime_4_snapshots", Snapshots::Continuous(4)),
            ("runtime_1000_snapshots_per_s", Snapshots::Every(ms)),
            (
                "runtime_1000_snapshots_per_s_from_tick",
                Snapshots::FromTick(ms),
            ),
        ];
        for (name, snapshots) in runtime_variants {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run_runtime(n, IN_FLIGHT, hops, snapshots).0)
                        .sum()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, closed_loop);
criterion_main!(benches);
