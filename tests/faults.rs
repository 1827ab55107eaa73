//! Shutdown and faults: panics in application code, shutdown with snapshots in flight, waiting
//! with timeouts, unknown ids, handles used after shutdown, calls that could never return.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chandy_lamport::sim::Simulation;
use chandy_lamport::{
    Context, Error, Process, ProcessId, Runtime, RuntimeStats, SendError, SnapshotId, Topology,
};
use common::{
    branches, check_bank, hold, seed, wait_for_traffic, wait_until, wait_until_clean, Fragile,
    PATIENCE,
};
use crossbeam_channel::bounded;

/// A quiet process that counts how many of its kind have been dropped.
#[derive(Debug)]
struct Quiet {
    drops: Arc<AtomicUsize>,
}

impl Process for Quiet {
    type Message = ();
    type State = ();
    fn on_message(&mut self, _: ProcessId, _: (), _: &mut Context<'_, ()>) {}
    fn record(&self) {}
}

impl Drop for Quiet {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

fn quiet(n: usize) -> (Runtime<Quiet>, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    let procs = (0..n).map(|_| Quiet {
        drops: drops.clone(),
    });
    (Runtime::new(Topology::complete(n), procs).unwrap(), drops)
}

#[test]
fn waiting_with_a_timeout_gives_up_and_loses_nothing() {
    let (runtime, _) = quiet(3);
    let release = hold(&runtime, 1);
    let ticket = runtime.start_snapshot(0).unwrap();
    assert_eq!(
        ticket.wait_timeout(Duration::from_millis(50)).unwrap_err(),
        Error::Timeout
    );
    assert!(ticket.try_get().is_none());
    assert_eq!(
        runtime
            .snapshot_timeout(2, Duration::from_millis(10))
            .unwrap_err(),
        Error::Timeout
    );
    drop(release);
    let snapshot = ticket.wait_timeout(*PATIENCE).unwrap();
    snapshot.verify().unwrap();
    assert!(ticket.try_get().unwrap().is_ok());
    runtime.shutdown().unwrap();
}

#[test]
fn shutdown_with_snapshots_in_flight_fails_them() {
    let (runtime, drops) = quiet(3);
    let release = hold(&runtime, 2);
    let tickets: Vec<_> = (0..3).map(|p| runtime.start_snapshot(p).unwrap()).collect();
    let events = runtime.subscribe();
    let stopper = {
        let runtime = runtime.clone();
        std::thread::spawn(move || runtime.shutdown())
    };
    for ticket in &tickets {
        assert_eq!(ticket.wait_timeout(*PATIENCE).unwrap_err(), Error::Shutdown);
    }
    for _ in 0..3 {
        let event = events.recv_timeout(*PATIENCE).unwrap();
        assert_eq!(event.outcome.unwrap_err(), Error::Shutdown);
    }
    // Shutdown waits for the callback running on process 2.
    std::thread::sleep(Duration::from_millis(20));
    assert!(!stopper.is_finished());
    drop(release);
    let stopped = stopper.join().unwrap().unwrap();
    assert_eq!(stopped.processes.len(), 3);
    drop(stopped);
    assert_eq!(drops.load(Ordering::SeqCst), 3);
    assert!(
        events.recv().is_err(),
        "subscribers are disconnected at shutdown"
    );
    drop(runtime);
}

#[test]
fn waiting_on_an_unknown_id_is_an_error() {
    let (runtime, _) = quiet(2);
    let id = SnapshotId::random();
    assert_eq!(
        runtime.watch_snapshot(id).unwrap_err(),
        Error::UnknownSnapshot(id)
    );
    // A finished snapshot is no longer known either.
    let done = runtime.snapshot_timeout(0, *PATIENCE).unwrap();
    assert_eq!(
        runtime.watch_snapshot(done.id).unwrap_err(),
        Error::UnknownSnapshot(done.id)
    );
}

#[test]
fn watching_a_running_snapshot_gets_its_result() {
    let (runtime, _) = quiet(2);
    let release = hold(&runtime, 1);
    let ticket = runtime.start_snapshot(0).unwrap();
    let watcher = runtime.watch_snapshot(ticket.id()).unwrap();
    assert_eq!(watcher.initiator(), 0);
    drop(release);
    let a = ticket.wait_timeout(*PATIENCE).unwrap();
    let b = watcher.wait_timeout(*PATIENCE).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "both waiters share one snapshot");
}

#[test]
fn a_snapshot_started_in_a_callback_can_be_watched_before_the_callback_returns() {
    let (runtime, _) = quiet(3);
    let (ids, started) = bounded::<SnapshotId>(1);
    let (release, held) = bounded::<()>(0);
    let caller = runtime.clone();
    let callback = std::thread::spawn(move || {
        caller.with_process(0, move |_, ctx| {
            ids.send(ctx.start_snapshot()).unwrap();
            // The callback goes on until the watch below has been made: the snapshot has not
            // recorded anything yet, and must be known all the same.
            let _ = held.recv_timeout(*PATIENCE);
        })
    });
    let id = started.recv_timeout(*PATIENCE).unwrap();
    let watcher = runtime.watch_snapshot(id).unwrap();
    assert_eq!(watcher.initiator(), 0);
    assert!(
        watcher.try_get().is_none(),
        "process 0 has not recorded yet"
    );
    drop(release);
    callback.join().unwrap().unwrap();
    let snapshot = watcher.wait_timeout(*PATIENCE).unwrap();
    assert_eq!((snapshot.id, snapshot.initiator), (id, 0));
}

#[test]
fn a_snapshot_started_by_a_callback_that_then_panics_ends_failed() {
    let (runtime, _) = quiet(3);
    let events = runtime.subscribe();
    let (ids, started) = bounded::<SnapshotId>(1);
    let err = runtime
        .with_process(1, move |_, ctx| -> () {
            ids.send(ctx.start_snapshot()).unwrap();
            panic!("boom after the start")
        })
        .unwrap_err();
    let id = started.recv_timeout(*PATIENCE).unwrap();
    // Its id was handed out, so it has an end: the failure, never a silence.
    let event = events.recv_timeout(*PATIENCE).unwrap();
    assert_eq!((event.id, event.initiator), (id, 1));
    assert_eq!(event.outcome.unwrap_err(), err);
    assert_eq!(
        runtime.watch_snapshot(id).unwrap_err(),
        Error::UnknownSnapshot(id)
    );
}

#[test]
fn a_handle_used_after_shutdown_says_so() {
    let (runtime, _) = quiet(2);
    let other = runtime.clone();
    runtime.shutdown().unwrap();
    assert!(other.is_shut_down());
    assert_eq!(other.start_snapshot(0).unwrap_err(), Error::Shutdown);
    assert_eq!(other.snapshot(1).unwrap_err(), Error::Shutdown);
    assert_eq!(
        other.with_process(0, |_, _| ()).unwrap_err(),
        Error::Shutdown
    );
    assert!(other.subscribe().recv().is_err());
    assert_eq!(other.clone().shutdown().unwrap_err(), Error::Shutdown);
    assert_eq!(other.stats(), RuntimeStats::default());
}

#[test]
fn dropping_the_runtime_stops_and_joins_every_thread() {
    let (runtime, drops) = quiet(4);
    runtime.snapshot_timeout(3, *PATIENCE).unwrap();
    drop(runtime);
    // Drop joined the threads, and each thread dropped its process.
    assert_eq!(drops.load(Ordering::SeqCst), 4);
}

#[test]
fn the_last_handle_dropped_on_a_process_thread_does_not_hang() {
    let (runtime, drops) = quiet(3);
    let inner = runtime.clone();
    let (release, wait) = bounded::<()>(0);
    let r = runtime.with_process_timeout(1, Duration::from_millis(1), move |_, _| {
        let _ = wait.recv();
        drop(inner); // the last handle, dropped on process 1's own thread
    });
    assert_eq!(r.unwrap_err(), Error::Timeout);
    drop(runtime);
    drop(release);
    wait_until("every process dropped", || {
        drops.load(Ordering::SeqCst) == 3
    });
}

#[test]
fn blocking_calls_on_a_process_thread_are_refused() {
    let (runtime, _) = quiet(2);
    let inner = runtime.clone();
    let refused = runtime
        .with_process(0, move |_, _| {
            let snapshot = inner.snapshot(1).map(|_| ());
            let run = inner.with_process(1, |_, _| ());
            let ticket = inner.start_snapshot(1).unwrap();
            (snapshot, run, ticket.wait().map(|_| ()))
        })
        .unwrap();
    let no = Err(Error::WouldDeadlock { process: 0 });
    assert_eq!(refused, (no.clone(), no.clone(), no));
    runtime.shutdown().unwrap();
}

#[test]
fn shutdown_timeout_names_the_processes_that_did_not_stop() {
    let (runtime, drops) = quiet(3);
    let release = hold(&runtime, 2);
    let err = runtime
        .shutdown_timeout(Duration::from_millis(50))
        .unwrap_err();
    assert_eq!(err, Error::ShutdownTimeout { running: vec![2] });
    drop(release);
    wait_until("the detached thread ends", || {
        drops.load(Ordering::SeqCst) == 3
    });
}

#[test]
fn a_panic_in_with_process_is_reported_to_the_caller() {
    let (runtime, _) = quiet(3);
    let err = runtime
        .with_process(1, |_, _| -> () { panic!("boom in 1") })
        .unwrap_err();
    assert_eq!(
        err,
        Error::ProcessFailed {
            process: 1,
            message: "boom in 1".into()
        }
    );
    assert_eq!(runtime.failures()[0].process, 1);
    assert_eq!(runtime.with_process(1, |_, _| ()).unwrap_err(), err);
    assert_eq!(
        runtime.start_snapshot(0).unwrap_err(),
        err,
        "no snapshot can complete now"
    );
    let stopped = runtime.shutdown().unwrap();
    assert!(stopped.processes[1].is_none());
    assert_eq!(stopped.failures.len(), 1);
    assert_eq!(stopped.into_processes().unwrap_err(), err);
}

#[test]
fn a_panic_fails_every_running_snapshot_and_refuses_new_ones() {
    let (seed, _guard) = seed("a_panic_fails_every_running_snapshot_and_refuses_new_ones");
    let n = 5;
    let (procs, traffic) = branches(n, 1000, 2, seed);
    let fuse = 3000;
    let procs = Fragile::among(procs, 3, fuse);
    let runtime = Runtime::new(Topology::complete(n), procs).unwrap();
    let (mut completed, mut failed) = (0, 0);
    let deadline = Instant::now() + *PATIENCE;
    loop {
        assert!(Instant::now() < deadline, "the panic never came");
        let tickets = match (0..4)
            .map(|i| runtime.start_snapshot(i % n))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(t) => t,
            Err(e) => {
                assert!(matches!(e, Error::ProcessFailed { process: 3, .. }), "{e}");
                break;
            }
        };
        for ticket in tickets {
            match ticket.wait_timeout(*PATIENCE) {
                Ok(snapshot) => {
                    check_bank(&snapshot, n as u64 * 1000, n as u64 * 2);
                    completed += 1;
                }
                Err(Error::ProcessFailed { process, message }) => {
                    assert_eq!(process, 3);
                    assert!(message.starts_with("branch gave up after"), "{message}");
                    failed += 1;
                }
                Err(e) => panic!("unexpected {e}"),
            }
        }
        let _ = traffic;
    }
    assert!(completed > 0);
    let _ = failed; // may be 0 if the panic fell between two rounds
    assert_eq!(runtime.failures().len(), 1, "{:?}", runtime.failures());
    // Every live process drops its snapshot state once it learns of the failure.
    wait_until_clean(&runtime);
    let stopped = runtime.shutdown().unwrap();
    assert_eq!(stopped.failures[0].process, 3);
    assert!(stopped.processes[3].is_none());
    assert_eq!(
        stopped.processes.iter().filter(|p| p.is_some()).count(),
        n - 1
    );
}

#[test]
fn sending_to_a_stopped_process_gives_the_message_back() {
    let (seed, _guard) = seed("sending_to_a_stopped_process_gives_the_message_back");
    let (procs, traffic) = branches(2, 10, 1, seed);
    let runtime = Runtime::new(Topology::complete(2), procs).unwrap();
    wait_for_traffic(&traffic, 10);
    let _ = runtime.with_process(1, |_, _| -> () { panic!("stop here") });
    wait_until("process 1 has stopped", || {
        runtime
            .with_process(0, |_, ctx| ctx.send(1, 5))
            .unwrap()
            .is_err_and(|e| e.into_message() == 5)
    });
}

// The same failure rules on the simulator: it runs the same per-process core and the same
// collector, and catches a panic in application code as the runtime's thread does.

#[test]
fn on_the_simulator_a_panic_in_with_process_is_reported_to_the_caller() {
    let (procs, _) = branches(3, 10, 0, 1);
    let mut sim = Simulation::new(Topology::complete(3), procs, 1).unwrap();
    let err = sim
        .with_process(1, |_, _| -> () { panic!("boom in 1") })
        .unwrap_err();
    assert_eq!(
        err,
        Error::ProcessFailed {
            process: 1,
            message: "boom in 1".into()
        }
    );
    assert_eq!(sim.failures()[0].process, 1);
    assert_eq!(sim.with_process(1, |_, _| ()).unwrap_err(), err);
    assert_eq!(
        sim.start_snapshot(0).unwrap_err(),
        err,
        "no snapshot can start"
    );
    // One started by application code is refused too, and reported.
    let id = sim.with_process(2, |_, ctx| ctx.start_snapshot()).unwrap();
    let refused = sim.failed_snapshots().last().unwrap();
    assert_eq!((refused.id, refused.initiator), (id, 2));
    assert_eq!(refused.error, err);
    let back = sim.with_process(0, |_, ctx| ctx.send(1, 5)).unwrap();
    assert_eq!(
        back,
        Err(SendError::Disconnected {
            from: 0,
            to: 1,
            message: 5
        })
    );
}

#[test]
fn on_the_simulator_a_panic_fails_every_running_snapshot_and_refuses_new_ones() {
    let (seed, _guard) =
        seed("on_the_simulator_a_panic_fails_every_running_snapshot_and_refuses_new_ones");
    let n = 5;
    let (procs, _) = branches(n, 1000, 2, seed);
    let mut sim =
        Simulation::new(Topology::complete(n), Fragile::among(procs, 3, 300), seed).unwrap();
    // A snapshot started every step, so some are always running when the panic comes.
    let mut started = Vec::new();
    let mut step = 0;
    while sim.failures().is_empty() {
        assert!(step < 100_000, "the panic never came");
        started.push(sim.start_snapshot(step % n).unwrap());
        sim.step();
        step += 1;
    }
    let failure = sim.failures()[0].clone();
    assert_eq!(failure.process, 3);
    assert!(
        failure.message.starts_with("branch gave up after"),
        "{failure:?}"
    );
    let error = Error::ProcessFailed {
        process: 3,
        message: failure.message,
    };
    // Every snapshot either completed and checks out, or failed with that panic: none is
    // left hanging.
    let failed: HashSet<SnapshotId> = sim.failed_snapshots().iter().map(|f| f.id).collect();
    assert!(
        !failed.is_empty(),
        "some snapshots were running at the panic"
    );
    assert!(sim.failed_snapshots().iter().all(|f| f.error == error));
    for id in &started {
        match sim.completed_snapshot(*id) {
            Some(s) => check_bank(s, n as u64 * 1000, n as u64 * 2),
            None => assert!(
                failed.contains(id),
                "snapshot {id} neither completed nor failed"
            ),
        }
    }
    assert_eq!(sim.running_snapshots(), 0);
    assert_eq!(sim.start_snapshot(0).unwrap_err(), error);
    assert_eq!(sim.run_until_snapshots_complete(10).unwrap_err(), error);
    // The others go on (their messages to 3 are dropped, as the runtime leaves them
    // undelivered): running on neither panics nor revives a snapshot.
    sim.run_for(200);
    assert_eq!(sim.failures().len(), 1);
    assert_eq!(sim.snapshots().len() + failed.len(), started.len());
}

#[test]
fn on_the_simulator_a_process_can_be_made_to_fail_at_a_chosen_step() {
    let n = 4;
    let (procs, _) = branches(n, 1000, 2, 3);
    let mut sim = Simulation::new(Topology::complete(n), procs, 3).unwrap();
    sim.run_for(20);
    let running = sim.start_snapshot(0).unwrap();
    assert_eq!(
        sim.fail_process(9, "x").unwrap_err(),
        Error::NoSuchProcess {
            process: 9,
            processes: n
        }
    );
    sim.fail_process(2, "injected at step 20").unwrap();
    let error = Error::ProcessFailed {
        process: 2,
        message: "injected at step 20".into(),
    };
    // The same consequences as a panic in its code (the test above): the running snapshot
    // fails, new ones are refused, runs report it, sends to it come back.
    assert_eq!(sim.failed_snapshots().len(), 1);
    assert_eq!(
        (
            sim.failed_snapshots()[0].id,
            &sim.failed_snapshots()[0].error
        ),
        (running, &error)
    );
    assert_eq!(sim.start_snapshot(1).unwrap_err(), error);
    assert_eq!(sim.run_until_snapshots_complete(10).unwrap_err(), error);
    assert_eq!(sim.with_process(2, |_, _| ()).unwrap_err(), error);
    let back = sim.with_process(1, |_, ctx| ctx.send(2, 5)).unwrap();
    assert!(matches!(back, Err(SendError::Disconnected { to: 2, .. })));
    // Failing it again changes nothing.
    sim.fail_process(2, "again").unwrap();
    assert_eq!(sim.failures().len(), 1);
    sim.run_for(100);
    assert_eq!(sim.running_snapshots(), 0);
}

/// `detect` keeps its timeout: the pause between two snapshots ends at the deadline rather
/// than lasting a whole interval past it.
#[test]
fn detect_never_pauses_past_its_timeout() {
    use chandy_lamport::detect::{detect, Detection};
    let detection = Detection {
        initiator: 0,
        interval: Duration::from_secs(20),
        timeout: Duration::from_millis(200),
    };
    // Simulated time, exactly: a step is a millisecond.
    let (procs, _) = branches(3, 1000, 2, 5);
    let mut sim = Simulation::new(Topology::complete(3), procs, 5).unwrap();
    assert_eq!(
        detect(&mut sim, &detection, |_| false).unwrap_err(),
        Error::Timeout
    );
    assert!(sim.now() <= 200, "ran until step {}", sim.now());
    // Real time.
    let (runtime, _) = quiet(3);
    let began = Instant::now();
    assert_eq!(
        detect(&mut runtime.clone(), &detection, |_| false).unwrap_err(),
        Error::Timeout
    );
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "took {:?}",
        began.elapsed()
    );
    runtime.shutdown().unwrap();
}

/// On the simulator, a process that fails while `detect` waits for a snapshot ends the
/// detection with that failure, as on the runtime. Before, the simulator stepped on until the
/// whole timeout was spent (no snapshot can complete after a failure) and said `Timeout`.
#[test]
fn on_the_simulator_detect_stops_at_a_failure_and_names_it() {
    use chandy_lamport::detect::{detect, Detection};
    let n = 5;
    let (procs, _) = branches(n, 1000, 2, 7);
    let mut sim = Simulation::new(Topology::complete(n), Fragile::among(procs, 3, 300), 7).unwrap();
    // No pause between snapshots: the failure comes while one runs.
    let detection = Detection {
        initiator: 0,
        interval: Duration::ZERO,
        timeout: Duration::from_secs(1000),
    };
    let err = detect(&mut sim, &detection, |_| false).unwrap_err();
    assert!(
        matches!(err, Error::ProcessFailed { process: 3, .. }),
        "{err:?}"
    );
    assert_eq!(sim.failures().len(), 1);
    // Stopped at the failure, far from the million steps of the timeout.
    assert!(sim.now() < 100_000, "stepped on to {}", sim.now());
}
