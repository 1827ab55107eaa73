//! The runtime against the tuned bare program, alternating run by run in one process, with the
//! same amount of work each time: a steadier ratio than two criterion groups measured one after
//! the other on a shared machine. `cargo bench --bench ratio [-- ROUNDS [N...] [--only VARIANT]]`
//! (default 15 rounds at N = 4, 16, 64); `--only` runs one variant alone (for `perf stat`).
//! Prints each variant's median deliveries per second and the ratios of medians.

mod workload;

use std::time::Duration;

use workload::{hops_for, run_edge_bitmap_tuned, run_runtime, Snapshots};

const DELIVERIES: u64 = 400_000;
const IN_FLIGHT: usize = 4;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|k| args.get(k + 1).cloned());
    let numbers: Vec<u64> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let rounds = numbers.first().copied().unwrap_or(15) as usize;
    let ns: Vec<usize> = if numbers.len() > 1 {
        numbers[1..].iter().map(|&n| n as usize).collect()
    } else {
        vec![4, 16, 64]
    };
    type Run = fn(usize, u32) -> Duration;
    let variants: [(&str, Run); 3] = [
        ("tuned", |n, hops| run_edge_bitmap_tuned(n, IN_FLIGHT, hops)),
        ("runtime", |n, hops| {
            run_runtime(n, IN_FLIGHT, hops, Snapshots::Off).0
        }),
        ("runtime, 1 snapshot/ms", |n, hops| {
            run_runtime(
                n,
                IN_FLIGHT,
                hops,
                Snapshots::Every(Duration::from_millis(1)),
            )
            .0
        }),
    ];
    for n in ns {
        let hops = hops_for(n, IN_FLIGHT, DELIVERIES);
        let deliveries = (n * IN_FLIGHT) as f64 * hops as f64;
        let mut rates = vec![Vec::new(); variants.len()];
        for _ in 0..rounds {
            for (k, (name, run)) in variants.iter().enumerate() {
                if only.as_deref().is_some_and(|o| o != *name) {
                    continue;
                }
                rates[k].push(deliveries / run(n, hops).as_secs_f64());
            }
        }
        let medians: Vec<Option<f64>> = rates
            .into_iter()
            .map(|r| (!r.is_empty()).then(|| median(r)))
            .collect();
        let show = |k: usize| medians[k].map_or("-".into(), |m| format!("{:.2}M", m / 1e6));
        let ratio = |a: usize, b: usize| match (medians[a], medians[b]) {
            (Some(x), Some(y)) => format!("{:.3}", x / y),
            _ => "-".into(),
        };
        println!(
            "N={n}: tuned {} runtime {} runtime+1/ms {} | runtime/tuned {} | 1/ms / none {} ({rounds} rounds, medians)",
            show(0),
            show(1),
            show(2),
            ratio(1, 0),
            ratio(2, 1)
        );
    }
}
