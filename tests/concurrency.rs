//! Many snapshots at once: from one initiator, from every process at the same instant, from
//! inside application code while others run, and over heavy traffic. Every snapshot must verify
//! exactly, conserve money and find every transfer; afterwards nothing is left in the runtime.

mod common;

use chandy_lamport::{Runtime, Topology};
use common::{branches, check_bank, seed, wait_for_traffic, wait_until_clean, PATIENCE};
use std::collections::HashSet;
use std::sync::{Arc, Barrier};

#[test]
fn many_snapshots_from_one_initiator() {
    let (seed, _guard) = seed("many_snapshots_from_one_initiator");
    let (procs, traffic) = branches(6, 1000, 3, seed);
    let runtime = Runtime::new(Topology::complete(6), procs).unwrap();
    wait_for_traffic(&traffic, 100);
    let tickets: Vec<_> = (0..200)
        .map(|_| runtime.start_snapshot(2).unwrap())
        .collect();
    let mut ids = HashSet::new();
    for ticket in tickets {
        let s = ticket.wait_timeout(*PATIENCE).unwrap();
        assert_eq!(s.initiator, 2);
        assert!(ids.insert(s.id), "ids are unique");
        check_bank(&s, 6000, 18);
    }
    wait_until_clean(&runtime);
}

#[test]
fn every_process_starts_a_snapshot_at_the_same_instant_from_inside() {
    let (seed, _guard) = seed("every_process_starts_a_snapshot_at_the_same_instant_from_inside");
    let n = 8;
    let (procs, traffic) = branches(n, 1000, 2, seed);
    let runtime = Runtime::new(Topology::ring(n), procs).unwrap();
    let events = runtime.subscribe();
    wait_for_traffic(&traffic, 100);
    for _round in 0..5 {
        // Every process thread waits at the barrier inside a callback, then starts a snapshot.
        let barrier = Arc::new(Barrier::new(n));
        let callers: Vec<_> = (0..n)
            .map(|p| {
                let runtime = runtime.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    runtime
                        .with_process(p, move |_, ctx| {
                            barrier.wait();
                            ctx.start_snapshot()
                        })
                        .unwrap()
                })
            })
            .collect();
        let started: HashSet<_> = callers.into_iter().map(|c| c.join().unwrap()).collect();
        assert_eq!(started.len(), n);
        for _ in 0..n {
            let event = events.recv_timeout(*PATIENCE).unwrap();
            assert!(started.contains(&event.id));
            check_bank(&event.outcome.unwrap(), n as u64 * 1000, n as u64 * 2);
        }
    }
    wait_until_clean(&runtime);
}

#[test]
fn every_process_starts_a_snapshot_at_the_same_instant_from_outside() {
    let (seed, _guard) = seed("every_process_starts_a_snapshot_at_the_same_instant_from_outside");
    let n = 8;
    let (procs, _) = branches(n, 1000, 2, seed);
    let runtime = Runtime::new(Topology::complete(n), procs).unwrap();
    for _round in 0..10 {
        let barrier = Arc::new(Barrier::new(n));
        let starters: Vec<_> = (0..n)
            .map(|p| {
                let runtime = runtime.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    runtime.start_snapshot(p).unwrap()
                })
            })
            .collect();
        for starter in starters {
            let s = starter.join().unwrap().wait_timeout(*PATIENCE).unwrap();
            check_bank(&s, n as u64 * 1000, n as u64 * 2);
        }
    }
    wait_until_clean(&runtime);
}

#[test]
fn snapshots_from_application_code_while_others_run() {
    let (seed, _guard) = seed("snapshots_from_application_code_while_others_run");
    let n = 6;
    let (mut procs, _) = branches(n, 1000, 3, seed);
    procs[1].snapshot_every = 97;
    procs[4].snapshot_every = 131;
    let runtime = Runtime::new(Topology::star(n), procs).unwrap();
    let events = runtime.subscribe();
    let mut from_outside = HashSet::new();
    let mut from_inside = 0;
    let mut tickets = Vec::new();
    while from_inside < 40 || tickets.len() < 40 {
        if tickets.len() < 40 {
            let t = runtime.start_snapshot(tickets.len() % n).unwrap();
            from_outside.insert(t.id());
            tickets.push(t);
        }
        let event = events.recv_timeout(*PATIENCE).unwrap();
        check_bank(&event.outcome.unwrap(), n as u64 * 1000, n as u64 * 3);
        if !from_outside.contains(&event.id) {
            assert!([1, 4].contains(&event.initiator));
            from_inside += 1;
        }
    }
    for t in tickets {
        check_bank(
            &t.wait_timeout(*PATIENCE).unwrap(),
            n as u64 * 1000,
            n as u64 * 3,
        );
    }
}

#[test]
fn snapshots_overlapping_heavy_traffic() {
    let (seed, _guard) = seed("snapshots_overlapping_heavy_traffic");
    let n = 12;
    let (procs, traffic) = branches(n, 1_000_000, 16, seed);
    let runtime = Runtime::new(Topology::complete(n), procs).unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut running = std::collections::VecDeque::new();
    for _ in 0..300 {
        if running.len() == 16 {
            let t: chandy_lamport::PendingSnapshot<u64, u64> = running.pop_front().unwrap();
            check_bank(
                &t.wait_timeout(*PATIENCE).unwrap(),
                n as u64 * 1_000_000,
                n as u64 * 16,
            );
        }
        running.push_back(runtime.start_snapshot(rng.usize(..n)).unwrap());
    }
    for t in running {
        check_bank(
            &t.wait_timeout(*PATIENCE).unwrap(),
            n as u64 * 1_000_000,
            n as u64 * 16,
        );
    }
    wait_for_traffic(&traffic, 1000);
    wait_until_clean(&runtime);
}
