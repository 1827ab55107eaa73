//! Checkpoint and restart: restore a running system from a completed snapshot, after a crash or
//! from any snapshot of a run, and move snapshots through files.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use chandy_lamport::sim::Simulation;
use chandy_lamport::{
    checkpoint, BuildError, Channel, Error, ProcessId, RestoreError, Runtime, SnapshotOf, Topology,
};
use common::{
    branches, check_bank, final_total, seed, wait_for_traffic, Branch, Fragile, PATIENCE,
};

/// A branch rebuilt from its recorded balance: its transfers are the ones restored into the
/// channels, so it starts none of its own.
fn rebuilt(
    traffic: &Arc<std::sync::atomic::AtomicU64>,
    seed: u64,
) -> impl FnMut(ProcessId, &u64) -> Branch + '_ {
    move |p, balance| Branch::new(*balance, 0, seed ^ p as u64, traffic.clone())
}

#[test]
fn crash_then_recover_from_the_last_snapshot() {
    let (seed, _guard) = seed("crash_then_recover_from_the_last_snapshot");
    let n = 6;
    let (procs, traffic) = branches(n, 1000, 3, seed);
    let procs = Fragile::among(procs, 2, 2000);
    let runtime = Runtime::new(Topology::complete(n), procs).unwrap();
    let events = runtime.subscribe();
    // Keep taking snapshots until the crash makes them fail; remember the last good one.
    let mut last = None;
    for round in 0.. {
        assert!(round < 100_000, "the crash never came");
        match runtime.start_snapshot(round % n) {
            Ok(_) => {}
            Err(Error::ProcessFailed { process: 2, .. }) => break,
            Err(e) => panic!("{e}"),
        }
        let event = events.recv_timeout(*PATIENCE).unwrap();
        if let Ok(snapshot) = event.outcome {
            last = Some(snapshot);
        }
    }
    let last = last.expect("a snapshot completed before the crash");
    check_bank(&last, n as u64 * 1000, n as u64 * 3);
    drop(runtime);
    // Restart from it: the crashed branch too, from its recorded balance.
    let traffic2 = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let restored = Runtime::builder(Topology::complete(n))
        .restore(&last, rebuilt(&traffic2, seed))
        .unwrap();
    wait_for_traffic(&traffic2, 5_000);
    for p in 0..n {
        let s = restored.snapshot_timeout(p, *PATIENCE).unwrap();
        check_bank(&s, n as u64 * 1000, n as u64 * 3);
    }
    assert_eq!(final_total(restored), n as u64 * 1000);
    let _ = traffic;
}

#[test]
fn restore_from_every_snapshot_of_a_run() {
    let (seed, _guard) = seed("restore_from_every_snapshot_of_a_run");
    let n = 5;
    let (procs, traffic) = branches(n, 1000, 2, seed);
    let runtime = Runtime::new(Topology::ring(n), procs).unwrap();
    let mut taken: Vec<Arc<SnapshotOf<Branch>>> = Vec::new();
    for i in 0..8 {
        wait_for_traffic(&traffic, 300);
        taken.push(runtime.snapshot_timeout(i % n, *PATIENCE).unwrap());
    }
    drop(runtime);
    for (i, snapshot) in taken.iter().enumerate() {
        // Through a file, as a real restart would: written by one run, read by another.
        let text = checkpoint::encode(snapshot).unwrap();
        let loaded = checkpoint::decode::<u64, u64>(&text).unwrap();
        assert_eq!(&loaded, snapshot.as_ref());
        let traffic = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let restored = Runtime::builder(Topology::ring(n))
            .restore(&loaded, rebuilt(&traffic, seed + i as u64))
            .unwrap();
        // The counters continue: the restored channels deliver messages numbered after the
        // snapshot's, and later snapshots verify exactly against them.
        wait_for_traffic(&traffic, 500);
        let after = restored.snapshot_timeout(i % n, *PATIENCE).unwrap();
        check_bank(&after, n as u64 * 1000, n as u64 * 2);
        for (before, now) in snapshot.channels.iter().zip(&after.channels) {
            assert_eq!(before.channel, now.channel);
            assert!(now.sent >= before.sent && now.received >= before.received);
        }
        assert_eq!(final_total(restored), n as u64 * 1000);
    }
}

#[test]
fn a_snapshot_that_does_not_fit_starts_nothing() {
    let (procs, traffic) = branches(3, 100, 1, 1);
    let runtime = Runtime::new(Topology::complete(3), procs).unwrap();
    wait_for_traffic(&traffic, 100);
    let snapshot = runtime.snapshot_timeout(0, *PATIENCE).unwrap();
    drop(runtime);
    let built = Arc::new(AtomicUsize::new(0));
    let counting = |p: ProcessId, b: &u64| {
        built.fetch_add(1, Ordering::SeqCst);
        Branch::new(*b, 0, p as u64, traffic.clone())
    };
    let other_count = Runtime::builder(Topology::complete(4)).restore(&snapshot, counting);
    assert_eq!(
        other_count.unwrap_err(),
        BuildError::Restore(RestoreError::ProcessCount {
            snapshot: 3,
            topology: 4
        })
    );
    let other_shape = Runtime::builder(Topology::star(3)).restore(&snapshot, counting);
    assert!(matches!(
        other_shape.unwrap_err(),
        BuildError::Restore(RestoreError::MissingChannel(_) | RestoreError::ExtraChannel(_))
    ));
    let mut altered = (*snapshot).clone();
    altered.channels[0].sent += 1; // one message claimed sent that nobody recorded
    let inconsistent = Runtime::builder(Topology::complete(3)).restore(&altered, counting);
    assert!(matches!(
        inconsistent.unwrap_err(),
        BuildError::Restore(RestoreError::Inconsistent(_))
    ));
    assert_eq!(built.load(Ordering::SeqCst), 0, "no process was rebuilt");
    let _ = Channel::new(0, 1);
}

#[test]
fn the_simulator_restores_too_and_replays_exactly() {
    let (procs, _) = branches(4, 100, 2, 3);
    let mut sim = Simulation::new(Topology::complete(4), procs, 3).unwrap();
    sim.run_for(40);
    let id = sim.start_snapshot(1).unwrap();
    sim.run_until_snapshots_complete(10_000).unwrap();
    let snapshot = (**sim.completed_snapshot(id).unwrap()).clone();
    let traffic = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let run = || {
        let mut sim = Simulation::builder(Topology::complete(4))
            .seed(8)
            .trace(true)
            .restore(&snapshot, rebuilt(&traffic, 3))
            .unwrap();
        sim.run_for(30);
        let id = sim.start_snapshot(2).unwrap();
        sim.run_until_snapshots_complete(10_000).unwrap();
        check_bank(sim.completed_snapshot(id).unwrap(), 400, 8);
        sim.trace().to_vec()
    };
    assert_eq!(run(), run());
}
