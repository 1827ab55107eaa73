//! Property tests: random strongly connected topologies (up to 12 processes), random traffic,
//! snapshots started at random moments from random processes. Every snapshot verifies exactly
//! and conserves money; afterwards nothing is left in the runtime.
//!
//! proptest prints the smallest failing case (topology, traffic, plan) and saves its seed under
//! `proptest-regressions/`, which replays it on the next run. Thread scheduling is not part of
//! the input, so a replay reruns the same inputs under a fresh interleaving.

mod common;

use chandy_lamport::{Runtime, Topology};
use common::{branches, check_bank, wait_for_traffic, wait_until_clean, PATIENCE};
use proptest::prelude::*;

/// A strongly connected topology: a one-way ring through a random order of the processes, plus
/// random extra channels.
fn topology() -> impl Strategy<Value = Topology> {
    (2usize..=12)
        .prop_flat_map(|n| {
            (
                Just(n),
                Just((0..n).collect::<Vec<_>>()).prop_shuffle(),
                prop::collection::vec((0..n, 0..n), 0..n * 3),
            )
        })
        .prop_map(|(n, order, extra)| {
            let mut edges: Vec<(usize, usize)> =
                (0..n).map(|i| (order[i], order[(i + 1) % n])).collect();
            for (a, b) in extra {
                if a != b && !edges.contains(&(a, b)) {
                    edges.push((a, b));
                }
            }
            Topology::from_edges(n, edges)
        })
}

/// When and where to start each snapshot: (deliveries to wait for first, initiator).
fn plan() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((0u64..200, any::<usize>()), 1..10)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(256),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_snapshot_verifies_and_conserves(
        topology in topology(),
        in_flight in 1u64..5,
        traffic_seed in any::<u64>(),
        plan in plan(),
    ) {
        let n = topology.processes();
        let (procs, traffic) = branches(n, 100, in_flight, traffic_seed);
        let runtime = Runtime::new(topology, procs).unwrap();
        let mut tickets = Vec::new();
        for (wait, initiator) in plan {
            wait_for_traffic(&traffic, wait);
            tickets.push(runtime.start_snapshot(initiator % n).unwrap());
        }
        for ticket in tickets {
            let s = ticket.wait_timeout(*PATIENCE).unwrap();
            check_bank(&s, n as u64 * 100, n as u64 * in_flight);
        }
        wait_until_clean(&runtime);
        let stopped = runtime.shutdown().unwrap();
        let in_transit: u64 = stopped.in_flight().map(|(_, m)| *m).sum();
        let held: u64 = stopped.into_processes().unwrap().iter().map(|b| b.balance).sum();
        prop_assert_eq!(held + in_transit, n as u64 * 100);
    }
}
