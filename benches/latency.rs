//! Snapshot latency, start to complete, on the complete graph: idle, and under the closed-loop
//! bank load (T = 4 tokens per process that never retire). `cargo bench --bench latency`.

mod workload;

use std::time::Duration;

use chandy_lamport::{Context, Process, ProcessId, Runtime, Topology};
use criterion::{criterion_group, criterion_main, Criterion};
use workload::idle_runtime;

/// Keeps `t` tokens moving to random neighbours forever.
struct Busy {
    t: usize,
    rng: u64,
}

impl Process for Busy {
    type Message = u64;
    type State = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
        for _ in 0..self.t {
            self.pass(1, ctx);
        }
    }
    fn on_message(&mut self, _: ProcessId, m: u64, ctx: &mut Context<'_, u64>) {
        self.pass(m, ctx);
    }
    fn record(&self) -> u64 {
        self.rng
    }
}

impl Busy {
    fn pass(&mut self, m: u64, ctx: &mut Context<'_, u64>) {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let to = ctx.neighbours()[(self.rng % ctx.neighbours().len() as u64) as usize];
        ctx.send(to, m).unwrap();
    }
}

fn latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_latency");
    group.sample_size(20);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(3));
    for n in [4, 16, 64] {
        let idle = idle_runtime(n);
        group.bench_function(format!("idle/N={n}"), |b| {
            b.iter(|| idle.snapshot(0).unwrap())
        });
        drop(idle);
        let busy = Runtime::new(
            Topology::complete(n),
            (0..n).map(|i| Busy {
                t: 4,
                rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1),
            }),
        )
        .unwrap();
        group.bench_function(format!("loaded/N={n}"), |b| {
            b.iter(|| busy.snapshot(0).unwrap())
        });
        drop(busy);
    }
    group.finish();
}

criterion_group!(benches, latency);
criterion_main!(benches);
