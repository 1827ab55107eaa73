//! The pure marker core alone: cost of `Recorder::on_message` per application message with 0, 1
//! and 8 snapshots recording the channel. `cargo bench --bench recorder`.

use std::time::{Duration, Instant};

use chandy_lamport::recorder::Recorder;
use chandy_lamport::SnapshotId;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

const INCOMING: usize = 4;
/// Messages between two resets (completing and restarting the snapshots, not timed), so the
/// recordings do not grow without bound.
const ROUND: u64 = 4096;

fn on_message(c: &mut Criterion) {
    let mut group = c.benchmark_group("recorder_on_message");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    for recording in [0usize, 1, 8] {
        group.bench_function(format!("{recording}_recording"), |b| {
            b.iter_custom(|iters| {
                let mut rec: Recorder<u64, u64> = Recorder::new(0, INCOMING);
                let mut ids: Vec<SnapshotId> = Vec::new();
                let mut seq = 0u64;
                let mut timed = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    for _ in 0..recording {
                        let id = SnapshotId::random();
                        let _ = rec.initiate(id, 0, &[0]).unwrap();
                        ids.push(id);
                    }
                    let batch = left.min(ROUND);
                    let began = Instant::now();
                    for _ in 0..batch {
                        seq += 1;
                        rec.on_message(0, seq, black_box(&seq));
                    }
                    timed += began.elapsed();
                    left -= batch;
                    for id in ids.drain(..) {
                        for channel in 0..INCOMING {
                            let _ = rec.on_marker(channel, id, || 0, &[0]).unwrap();
                        }
                    }
                }
                timed
            })
        });
    }
    group.finish();
}

/// A process's part of one snapshot at a time with [`MARKED`] incoming channels: the first
/// marker (which records the state and opens every other channel), then a marker on each other
/// channel, the last completing the part. Per marker, with nothing received meanwhile: the
/// rules' own cost of a marker, which every channel of every snapshot pays.
const MARKED: usize = 47;

fn on_marker(c: &mut Criterion) {
    let mut group = c.benchmark_group("recorder_on_marker");
    group.throughput(Throughput::Elements(MARKED as u64));
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(2));
    let sent = vec![7u64; MARKED];
    group.bench_function(format!("{MARKED}_channels"), |b| {
        let mut rec: Recorder<u64, u64> = Recorder::new(0, MARKED);
        b.iter(|| {
            let id = SnapshotId::random();
            let mut completed = 0;
            for channel in 0..MARKED {
                // Looked at where it lies, as the runtime's driver does (`Host::marker`).
                let progress = rec.on_marker(channel, id, || 1, &sent);
                completed +=
                    usize::from(black_box(&progress).as_ref().unwrap().completed.is_some());
            }
            assert_eq!(completed, 1, "the last marker completes the part");
        })
    });
    group.finish();
}

criterion_group!(benches, on_message, on_marker);
criterion_main!(benches);
