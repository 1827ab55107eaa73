//! The lecture's other uses of a snapshot, as the examples implement them: termination,
//! deadlock and garbage detection. Each detector is checked against the real state of the system
//! at the moment it decides, on the deterministic simulator (many seeds) and on the runtime.

#[path = "../examples/deadlock.rs"]
#[allow(dead_code)]
mod deadlock;
#[path = "../examples/gc.rs"]
#[allow(dead_code)]
mod gc;
#[path = "../examples/termination.rs"]
#[allow(dead_code)]
mod termination;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chandy_lamport::detect::SnapshotSource;
use chandy_lamport::sim::{explore, Simulation};
use chandy_lamport::{Process, Runtime, Topology};

const STEP: Duration = Duration::from_millis(1);

// ---- termination ------------------------------------------------------------------------------

#[test]
fn termination_is_never_declared_early_and_always_declared() {
    let checked = explore(0..150, |seed| {
        let n = 2 + seed as usize % 6;
        let (team, deliveries) = termination::Worker::team(n, 2, 6, seed);
        let mut sim = Simulation::builder(Topology::complete(n))
            .seed(seed)
            .tick_every(1 + seed % 3)
            .build(team)
            .unwrap();
        // Always declared: within the timeout.
        let proof = termination::detect_termination(&mut sim, 3 * STEP, 100_000 * STEP)
            .map_err(|e| format!("not declared: {e}"))?;
        // Never early: at the moment of the declaration the system really has terminated...
        let idle = sim.processes().all(|w| w.record().queued == 0);
        if !idle || sim.in_flight_count() != 0 {
            return Err("declared while work was queued or in flight".to_string());
        }
        // ...and nothing happens after it.
        let declared = deliveries.load(Ordering::SeqCst);
        sim.run_for(1_000);
        if deliveries.load(Ordering::SeqCst) != declared {
            return Err("a work item was delivered after the declaration".to_string());
        }
        let done: u64 = sim.processes().map(|w| w.done()).sum();
        if done != termination::work_done(&proof) {
            return Err(format!(
                "{done} items done, the proof says {}",
                termination::work_done(&proof)
            ));
        }
        Ok::<(), String>(())
    });
    checked.unwrap_or_else(|f| panic!("{f}"));
}

#[test]
fn termination_on_the_runtime() {
    let (team, deliveries) = termination::Worker::team(6, 4, 9, 3);
    let mut runtime = Runtime::builder(Topology::ring(6))
        .tick_interval(Duration::from_micros(200))
        .build(team)
        .unwrap();
    let proof =
        termination::detect_termination(&mut runtime, 2 * STEP, Duration::from_secs(60)).unwrap();
    assert!(termination::terminated(&proof));
    let declared = deliveries.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(deliveries.load(Ordering::SeqCst), declared);
    let workers = runtime.shutdown().unwrap().into_processes().unwrap();
    let done: u64 = workers.iter().map(|w| w.done()).sum();
    assert_eq!(done, termination::work_done(&proof));
}

// ---- deadlock ---------------------------------------------------------------------------------

#[test]
fn the_deadlocking_configuration_is_found_with_its_cycle() {
    for n in [2, 3, 5, 8] {
        explore(0..30, |seed| {
            let mut sim = Simulation::builder(Topology::ring(n))
                .seed(seed)
                .tick_every(2)
                .build(deadlock::Locker::ring(n, 10))
                .unwrap();
            // Even the first snapshot, with every request still in flight, shows the cycle.
            let first = sim.take_snapshot(seed as usize % n, 10_000 * STEP).unwrap();
            let cycle = deadlock::deadlock_cycle(&first);
            if cycle != Some((0..n).collect()) {
                return Err(format!("n = {n}: found {cycle:?}"));
            }
            Ok(())
        })
        .unwrap_or_else(|f| panic!("{f}"));
    }
    let mut runtime = Runtime::builder(Topology::ring(4))
        .tick_interval(STEP)
        .build(deadlock::Locker::ring(4, 10))
        .unwrap();
    let found = deadlock::detect_deadlock(&mut runtime, STEP, Duration::from_secs(30));
    assert_eq!(found, Some(vec![0, 1, 2, 3]));
}

#[test]
fn the_safe_configuration_is_never_reported_and_finishes() {
    let checked = explore(0..60, |seed| {
        let n = 2 + seed as usize % 5;
        let jobs = 20;
        let mut sim = Simulation::builder(Topology::ring(n))
            .seed(seed)
            .tick_every(1 + seed % 4)
            .build(deadlock::Locker::chain(n, jobs))
            .unwrap();
        let mut snapshots = 0;
        while sim.processes().any(|l| l.jobs_done() < jobs) {
            if sim.now() > 200_000 {
                return Err("the safe configuration did not finish".to_string());
            }
            let s = sim.take_snapshot(seed as usize % n, 10_000 * STEP).unwrap();
            snapshots += 1;
            if let Some(cycle) = deadlock::deadlock_cycle(&s) {
                return Err(format!("false deadlock {cycle:?} in snapshot {snapshots}"));
            }
            sim.pause(STEP * (seed % 5) as u32);
        }
        if snapshots < 3 {
            return Err(format!("only {snapshots} snapshots: not a test"));
        }
        Ok(())
    });
    checked.unwrap_or_else(|f| panic!("{f}"));
}

// ---- garbage collection -----------------------------------------------------------------------

fn heaps(sim: &Simulation<gc::Mutator>) -> (Vec<gc::Heap>, Vec<gc::ObjectId>) {
    let heaps = sim.processes().map(|m| m.heap().clone()).collect();
    let refs = sim.in_flight_messages().map(|(_, r)| r.0).collect();
    (heaps, refs)
}

#[test]
fn nothing_reachable_is_collected_and_all_garbage_is_found() {
    let checked = explore(0..60, |seed| {
        let n = 2 + seed as usize % 4;
        let mut sim = Simulation::builder(Topology::complete(n))
            .seed(seed)
            .tick_every(1)
            .build(gc::Mutator::team(n, 6, 150, seed))
            .unwrap();
        let mut collected = 0;
        loop {
            let busy = sim.processes().any(|m| m.ops_left() > 0) || sim.in_flight_count() > 0;
            let s = sim.take_snapshot(seed as usize % n, 10_000 * STEP).unwrap();
            let garbage = gc::garbage(&s);
            // Garbage is stable: what the snapshot calls garbage is garbage now.
            let (now, refs) = heaps(&sim);
            let actual = gc::reach(&now, refs).unreachable;
            if let Some(o) = garbage.iter().find(|o| !actual.contains(o)) {
                return Err(format!(
                    "object {o:x} is reachable but the snapshot calls it garbage"
                ));
            }
            let mut by_owner: BTreeMap<usize, Vec<gc::ObjectId>> = BTreeMap::new();
            for &o in &garbage {
                by_owner.entry(gc::owner(o)).or_default().push(o);
            }
            for (p, list) in by_owner {
                sim.with_process(p, |m, _| m.free(&list)).unwrap();
            }
            collected += garbage.len();
            if !busy {
                break;
            }
            sim.pause(STEP * 7);
        }
        // Quiet now: nothing reachable was freed, and nothing unreachable is left.
        let (now, refs) = heaps(&sim);
        let reach = gc::reach(&now, refs);
        if !reach.dangling.is_empty() {
            return Err(format!("collected while reachable: {:?}", reach.dangling));
        }
        if !reach.unreachable.is_empty() {
            return Err(format!("garbage not found: {:?}", reach.unreachable));
        }
        if collected == 0 {
            return Err("no garbage at all: not a test".to_string());
        }
        Ok(())
    });
    checked.unwrap_or_else(|f| panic!("{f}"));
}

#[test]
fn an_object_whose_only_reference_is_in_flight_is_live() {
    let mut sim = Simulation::builder(Topology::complete(2))
        .build(gc::Mutator::team(2, 1, 0, 1))
        .unwrap();
    // Process 0 hands its only root to 1: the message now holds the only reference.
    let moved = sim
        .with_process(0, |m, ctx| m.hand_over(0, 1, ctx))
        .unwrap();
    // 1 records before the message arrives; 0 recorded after sending: it is in flight at the cut.
    let id = sim.start_snapshot(1).unwrap();
    sim.run_until_snapshots_complete(1_000).unwrap();
    let s = sim.completed_snapshot(id).unwrap();
    assert!(s.states.iter().all(|h| !h.roots.contains(&moved)));
    assert!(
        s.in_flight().any(|(_, r)| r.0 == moved),
        "the reference was in flight at the cut"
    );
    assert!(
        !gc::garbage(s).contains(&moved),
        "an object referenced only in flight is live"
    );
    // Drop it for real: now it is garbage, and found.
    sim.with_process(1, |m, _| {
        let k = m.heap().roots.iter().position(|&o| o == moved).unwrap();
        m.drop_root(k)
    })
    .unwrap();
    let s = sim.take_snapshot(0, 1_000 * STEP).unwrap();
    assert!(gc::garbage(&s).contains(&moved));
}

#[test]
fn gc_on_the_runtime_frees_only_garbage() {
    let runtime = Runtime::builder(Topology::complete(4))
        .tick_interval(Duration::from_micros(200))
        .build(gc::Mutator::team(4, 8, 200, 5))
        .unwrap();
    let mut freed = 0;
    for _ in 0..30 {
        std::thread::sleep(Duration::from_millis(3));
        let s = runtime
            .snapshot_timeout(0, Duration::from_secs(30))
            .unwrap();
        let garbage = gc::garbage(&s);
        for o in &garbage {
            let o = *o;
            runtime
                .with_process(gc::owner(o), move |m, _| m.free(&[o]))
                .unwrap();
        }
        freed += garbage.len();
    }
    let stopped = runtime.shutdown().unwrap();
    let refs: Vec<gc::ObjectId> = stopped.in_flight().map(|(_, r)| r.0).collect();
    let mutators = stopped.into_processes().unwrap();
    let reach = gc::reach(mutators.iter().map(|m| m.heap()), refs);
    assert!(
        reach.dangling.is_empty(),
        "freed while reachable: {:?}",
        reach.dangling
    );
    assert!(freed > 0);
}
