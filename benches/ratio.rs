//! The runtime against the tuned bare program, alternating run by run in one process, with the
//! same amount of work each time: a steadier ratio than two criterion groups measured one after
//! the other on a shared machine. `cargo bench --bench ratio [-- ROUNDS [N...] [--only VARIANT]]`
//! (default 15 rounds at N = 4, 16, 64); `--only A,B` runs only the variants named (for `perf
//! stat`, or to leave the snapshot variants out). Prints each variant's median deliveries per
//! second and the ratios of medians.
//!
//! Snapshots one per millisecond come two ways: started by the main thread (`1/ms`), which must
//! wake every millisecond for it, and started by process 0 on its own tick (`1/ms tick`), where
//! no thread outside the runtime wakes. `woken` is the runtime with the main thread waking
//! every millisecond and starting nothing, `tuned woken` the bare program with the same main
//! thread: on 2 cores those wake-ups alone cost any program there throughput (`tuned woken /
//! tuned` says how much), so `1/ms / woken` is what the snapshots themselves cost. Likewise
//! `ticking` is the runtime with every process ticking every millisecond and no snapshots.
//!
//! `numbered` is the tuned bare program carrying what the runtime's wire carries: each message
//! with its number on its channel (24 bytes; the number the exact cut check and the FIFO check
//! rest on), counted per destination by the sender. `counted` counts but sends the plain
//! 16-byte token. `runtime / numbered` is the runtime's own cost with the wire's contents equal.

mod workload;

use std::time::Duration;

use workload::{
    hops_for, median, run_edge_bitmap_tuned, run_edge_bitmap_tuned_counted,
    run_edge_bitmap_tuned_numbered, run_edge_bitmap_tuned_woken, run_runtime, Snapshots,
};

const DELIVERIES: u64 = 400_000;
const IN_FLIGHT: usize = 4;

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
    const MS: Duration = Duration::from_millis(1);
    let variants: [(&str, Run); 9] = [
        ("tuned", |n, hops| run_edge_bitmap_tuned(n, IN_FLIGHT, hops)),
        ("runtime", |n, hops| {
            run_runtime(n, IN_FLIGHT, hops, Snapshots::Off).0
        }),
        ("1/ms", |n, hops| {
            run_runtime(n, IN_FLIGHT, hops, Snapshots::Every(MS)).0
        }),
        ("woken", |n, hops| {
            run_runtime(n, IN_FLIGHT, hops, Snapshots::WakeOnly(MS)).0
        }),
        ("1/ms tick", |n, hops| {
            run_runtime(n, IN_FLIGHT, hops, Snapshots::FromTick(MS)).0
        }),
        ("tuned woken", |n, hops| {
            run_edge_bitmap_tuned_woken(n, IN_FLIGHT, hops, MS)
        }),
        ("ticking", |n, hops| {
            run_runtime(n, IN_FLIGHT, hops, Snapshots::TickOnly(MS)).0
        }),
        ("numbered", |n, hops| {
            run_edge_bitmap_tuned_numbered(n, IN_FLIGHT, hops)
        }),
        ("counted", |n, hops| {
            run_edge_bitmap_tuned_counted(n, IN_FLIGHT, hops)
        }),
    ];
    for n in ns {
        let hops = hops_for(n, IN_FLIGHT, DELIVERIES);
        let deliveries = (n * IN_FLIGHT) as f64 * hops as f64;
        let mut rates = vec![Vec::new(); variants.len()];
        for _ in 0..rounds {
            for (k, (name, run)) in variants.iter().enumerate() {
                if only
                    .as_deref()
                    .is_some_and(|o| !o.split(',').any(|o| o == *name))
                {
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
        let rates: Vec<String> = (0..variants.len())
            .filter(|&k| medians[k].is_some())
            .map(|k| format!("{} {}", variants[k].0, show(k)))
            .collect();
        let ratios: Vec<String> = [
            ("runtime/tuned", 1, 0),
            ("1/ms / runtime", 2, 1),
            ("woken / runtime", 3, 1),
            ("1/ms / woken", 2, 3),
            ("1/ms tick / runtime", 4, 1),
            ("tuned woken / tuned", 5, 0),
            ("ticking / runtime", 6, 1),
            ("1/ms tick / ticking", 4, 6),
            ("counted / tuned", 8, 0),
            ("numbered / tuned", 7, 0),
            ("runtime / numbered", 1, 7),
        ]
        .iter()
        .filter(|&&(_, a, b)| medians[a].is_some() && medians[b].is_some())
        .map(|&(label, a, b)| format!("{label} {}", ratio(a, b)))
        .collect();
        println!(
            "N={n}: {} | {} ({rounds} rounds, medians)",
            rates.join(" "),
            ratios.join(" ")
        );
    }
}
