//! Concurrent snapshots at scale: a flood of snapshots started back to back on the runtime, ten
//! thousand at once on the simulator, every one verified exactly, nothing left behind; and the
//! limit on snapshots in flight, which refuses with a typed error and disturbs nothing else.
//!
//! Sized for a debug `cargo test` in seconds. `FLOOD_MILLIS` scales the runtime flood (how long
//! snapshots are started back to back; 200 by default) and `SIM_SNAPSHOTS` the simulator's
//! (10,000 by default); both print counts and times with `-- --nocapture`, e.g.
//! `FLOOD_MILLIS=2000 SIM_SNAPSHOTS=100000 cargo test --release --test scale -- --nocapture`.

mod common;

use std::time::{Duration, Instant};

use chandy_lamport::sim::Simulation;
use chandy_lamport::{Error, Runtime, RuntimeStats, Topology};
use common::{branches, check_bank, env_or, hold, seed, wait_until_clean, PATIENCE};

const PROCESSES: usize = 5;
const BALANCE: u64 = 1000;
const TRANSFERS_PER_BRANCH: u64 = 2;

#[test]
fn a_flood_of_snapshots_all_complete_and_verify_and_leave_nothing_behind() {
    let (seed, _guard) =
        seed("a_flood_of_snapshots_all_complete_and_verify_and_leave_nothing_behind");
    let flood = Duration::from_millis(env_or("FLOOD_MILLIS", 200));
    let (procs, traffic) = branches(PROCESSES, BALANCE, TRANSFERS_PER_BRANCH, seed);
    let runtime = Runtime::new(Topology::complete(PROCESSES), procs).unwrap();
    let total = PROCESSES as u64 * BALANCE;
    let transfers = PROCESSES as u64 * TRANSFERS_PER_BRANCH;
    let mut rng = fastrand::Rng::with_seed(seed);

    // Back to back, as fast as the handle takes them, from random initiators, while the bank
    // keeps moving money: far more start than complete meanwhile, so tens of thousands are in
    // flight at the peak.
    let began = Instant::now();
    let mut tickets = Vec::new();
    let mut peak = 0;
    while began.elapsed() < flood {
        for _ in 0..256 {
            tickets.push(runtime.start_snapshot(rng.usize(..PROCESSES)).unwrap());
        }
        peak = peak.max(runtime.stats().collecting);
    }
    let started = tickets.len();
    let mut recorded = 0;
    for ticket in tickets {
        let snapshot = ticket.wait_timeout(*PATIENCE).unwrap();
        check_bank(&snapshot, total, transfers);
        recorded += snapshot.in_flight().count();
    }
    let elapsed = began.elapsed();
    wait_until_clean(&runtime);
    let delivered = traffic.load(std::sync::atomic::Ordering::Relaxed);
    let stopped = runtime.shutdown().unwrap();
    assert!(stopped.failures.is_empty());
    eprintln!(
        "flood: {started} snapshots started in {flood:?} on {PROCESSES} processes, at most {peak} \
         in flight; all verified after {:.2} s ({:.1} us per snapshot); {recorded} in-flight \
         transfers recorded; {delivered} transfers delivered meanwhile",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / started as f64,
    );
    assert!(
        peak > 1,
        "the flood never had two snapshots in flight at once"
    );
    assert_eq!(recorded as u64, started as u64 * transfers);
}

#[test]
fn ten_thousand_concurrent_snapshots_on_the_simulator_all_verify() {
    let (seed, _guard) = seed("ten_thousand_concurrent_snapshots_on_the_simulator_all_verify");
    let count = env_or("SIM_SNAPSHOTS", 10_000) as usize;
    let (procs, _) = branches(PROCESSES, BALANCE, TRANSFERS_PER_BRANCH, seed);
    let mut sim = Simulation::new(Topology::complete(PROCESSES), procs, seed).unwrap();
    let total = PROCESSES as u64 * BALANCE;
    let transfers = PROCESSES as u64 * TRANSFERS_PER_BRANCH;
    let began = Instant::now();
    // All started within a few steps of each other while transfers move, so they all overlap
    // and interleave with messages on every channel.
    let mut ids = Vec::with_capacity(count);
    let mut step = 0u64;
    while ids.len() < count {
        for _ in 0..(count / 4).max(1).min(count - ids.len()) {
            ids.push(sim.start_snapshot(ids.len() % PROCESSES).unwrap());
        }
        sim.step();
        step += 1;
    }
    assert_eq!(sim.running_snapshots(), count - sim.snapshots().len());
    assert!(
        sim.running_snapshots() > count / 2,
        "most snapshots are in flight together ({} of {count})",
        sim.running_snapshots()
    );
    sim.run_until_snapshots_complete(1_000_000).unwrap();
    assert_eq!(sim.snapshots().len(), count);
    let mut recorded = 0;
    for id in &ids {
        let snapshot = sim
            .completed_snapshot(*id)
            .expect("every started snapshot completed");
        assert_eq!(snapshot.id, *id);
        check_bank(snapshot, total, transfers);
        recorded += snapshot.in_flight().count();
    }
    assert_eq!(recorded as u64, count as u64 * transfers);
    eprintln!(
        "simulator: {count} snapshots started over {step} steps on {PROCESSES} processes, all \
         verified in {:.2} s",
        began.elapsed().as_secs_f64()
    );
}

#[test]
fn past_the_limit_a_snapshot_is_refused_by_name_and_the_running_ones_complete() {
    const LIMIT: usize = 8;
    let (seed, _guard) =
        seed("past_the_limit_a_snapshot_is_refused_by_name_and_the_running_ones_complete");
    let (procs, _) = branches(3, BALANCE, 1, seed);
    let runtime = Runtime::builder(Topology::complete(3))
        .max_snapshots_in_flight(LIMIT)
        .build(procs)
        .unwrap();
    assert_eq!(runtime.max_snapshots_in_flight(), LIMIT);
    let events = runtime.subscribe();
    let release = hold(&runtime, 2);
    let tickets: Vec<_> = (0..LIMIT)
        .map(|k| runtime.start_snapshot(k % 2).unwrap())
        .collect();
    assert_eq!(runtime.stats().collecting, LIMIT);

    // From outside: refused at once, by name, with the limit.
    let refused = runtime.start_snapshot(0).unwrap_err();
    assert_eq!(refused, Error::TooManySnapshots { limit: LIMIT });
    assert!(refused
        .to_string()
        .contains("8 snapshots are already in flight"));
    // From application code: the id comes back, and subscribers hear of the refusal.
    let id = runtime
        .with_process(1, |_, ctx| ctx.start_snapshot())
        .unwrap();
    let event = events.recv_timeout(*PATIENCE).unwrap();
    assert_eq!(event.id, id);
    assert_eq!(
        event.outcome.unwrap_err(),
        Error::TooManySnapshots { limit: LIMIT }
    );
    // Neither refusal disturbed the running ones.
    assert_eq!(runtime.stats().collecting, LIMIT);
    assert!(tickets.iter().all(|t| t.try_get().is_none()));

    release.send(()).unwrap();
    for ticket in &tickets {
        check_bank(&ticket.wait_timeout(*PATIENCE).unwrap(), 3 * BALANCE, 3);
    }
    for _ in 0..LIMIT {
        let event = events.recv_timeout(*PATIENCE).unwrap();
        assert!(
            event.outcome.is_ok(),
            "a running snapshot failed: {event:?}"
        );
    }
    // Room again: a new one starts and completes.
    check_bank(
        &runtime.snapshot_timeout(0, *PATIENCE).unwrap(),
        3 * BALANCE,
        3,
    );
    wait_until_clean(&runtime);
    assert_eq!(runtime.stats(), RuntimeStats::default());
    runtime.shutdown().unwrap();
}

#[test]
fn the_default_limit_scales_with_the_channels() {
    let limit = |topology: Topology| {
        let n = topology.processes();
        let runtime = Runtime::new(topology, branches(n, 1, 0, 1).0).unwrap();
        let limit = runtime.max_snapshots_in_flight();
        runtime.shutdown().unwrap();
        limit
    };
    assert_eq!(limit(Topology::complete(5)), (1 << 24) / 20);
    assert_eq!(limit(Topology::complete(64)), (1 << 24) / (64 * 63));
    assert_eq!(limit(Topology::ring(2)), (1 << 24) / 2);
}
