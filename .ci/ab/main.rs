//! The A/B harness behind BENCHMARKS.md's "B/A" figures (run by `.ci/ab/ab.sh`): two builds of
//! the crate linked into one binary (A, an earlier commit renamed by version; B, the working
//! tree) and the tuned bare program, run alternating run by run on the criterion workload
//! (`benches/workload`), medians of each. Alternating in one process keeps the machine's drift
//! out of the ratio; two identical builds measured this way land within 2% of each other.
//!
//! `ab ROUNDS [N...]` (default 15 rounds at N = 16 and 64).

#[allow(dead_code)]
mod wa;
#[allow(dead_code)]
mod wb;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rounds = args.first().copied().unwrap_or(15);
    let ns = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![16, 64]
    };
    for n in ns {
        let hops = wb::hops_for(n, 4, 400_000);
        let deliveries = (n * 4) as f64 * hops as f64;
        let mut rates = vec![Vec::new(); 3];
        for _ in 0..rounds {
            let tuned = wb::run_edge_bitmap_tuned(n, 4, hops);
            let a = wa::run_runtime(n, 4, hops, wa::Snapshots::Off).0;
            let b = wb::run_runtime(n, 4, hops, wb::Snapshots::Off).0;
            for (r, t) in rates.iter_mut().zip([tuned, a, b]) {
                r.push(deliveries / t.as_secs_f64());
            }
        }
        let m: Vec<f64> = rates.into_iter().map(median).collect();
        println!(
            "N={n}: tuned {:.2}M A {:.2}M B {:.2}M | A/tuned {:.3} B/tuned {:.3} B/A {:.3}",
            m[0] / 1e6,
            m[1] / 1e6,
            m[2] / 1e6,
            m[1] / m[0],
            m[2] / m[0],
            m[2] / m[1]
        );
    }
}
