//! Bad input gets a clear, typed error and nothing is lost.

mod common;

use common::PATIENCE;

use chandy_lamport::{
    BuildError, Context, Error, Process, ProcessId, Runtime, SendError, Topology, TopologyError,
};

struct Idle;

impl Process for Idle {
    type Message = String;
    type State = ();
    fn on_message(&mut self, _: ProcessId, _: String, _: &mut Context<'_, String>) {}
    fn record(&self) {}
}

fn build(topology: Topology, n: usize) -> Result<Runtime<Idle>, BuildError> {
    Runtime::new(topology, (0..n).map(|_| Idle))
}

#[test]
fn every_invalid_topology_is_refused_by_name() {
    let cases = [
        (Topology::complete(0), 0, TopologyError::NoProcesses),
        (
            Topology::from_edges(3, [(0, 1), (1, 2), (2, 0), (2, 2)]),
            3,
            TopologyError::SelfLoop { process: 2 },
        ),
        (
            Topology::from_edges(2, [(0, 1), (1, 0), (1, 0)]),
            2,
            TopologyError::DuplicateChannel { from: 1, to: 0 },
        ),
        (
            Topology::from_edges(2, [(0, 1), (1, 0), (0, 7)]),
            2,
            TopologyError::UnknownProcess {
                from: 0,
                to: 7,
                processes: 2,
            },
        ),
        (
            Topology::from_edges(3, [(0, 1), (1, 0), (1, 2)]),
            3,
            TopologyError::NotStronglyConnected { from: 2, to: 0 },
        ),
        (
            Topology::from_edges(2, []),
            2,
            TopologyError::NotStronglyConnected { from: 0, to: 1 },
        ),
    ];
    for (topology, n, want) in cases {
        let err = build(topology, n).unwrap_err();
        assert_eq!(err, BuildError::Topology(want.clone()));
        assert!(err.to_string().contains(&want.to_string()));
    }
}

#[test]
fn the_wrong_number_of_processes_is_refused() {
    assert_eq!(
        build(Topology::ring(4), 3).unwrap_err(),
        BuildError::ProcessCount {
            topology: 4,
            given: 3
        }
    );
}

#[test]
fn sending_to_a_non_neighbour_hands_the_message_back() {
    let runtime = build(Topology::star(4), 4).unwrap();
    let results = runtime
        .with_process(1, |_, ctx| {
            let to_leaf = ctx.send(2, "to leaf".to_string());
            let to_self = ctx.send(1, "to self".to_string());
            let to_nobody = ctx.send(99, "to nobody".to_string());
            (to_leaf, to_self, to_nobody, ctx.neighbours().to_vec())
        })
        .unwrap();
    assert_eq!(
        results.0,
        Err(SendError::NotNeighbour {
            from: 1,
            to: 2,
            message: "to leaf".to_string()
        })
    );
    assert_eq!(results.1.unwrap_err().into_message(), "to self");
    assert_eq!(
        results.2.unwrap_err().to_string(),
        "process 1 has no channel to process 99"
    );
    assert_eq!(results.3, vec![0]);
    // Nothing was sent: a snapshot finds no message anywhere.
    let snapshot = runtime.snapshot_timeout(0, *PATIENCE).unwrap();
    assert_eq!(snapshot.in_flight().count(), 0);
    assert!(snapshot.channels.iter().all(|c| c.sent == 0));
}

#[test]
fn naming_a_process_that_does_not_exist_is_an_error() {
    let runtime = build(Topology::ring(3), 3).unwrap();
    let no = Error::NoSuchProcess {
        process: 3,
        processes: 3,
    };
    assert_eq!(runtime.start_snapshot(3).unwrap_err(), no);
    assert_eq!(
        runtime.snapshot(usize::MAX).unwrap_err(),
        Error::NoSuchProcess {
            process: usize::MAX,
            processes: 3
        }
    );
    assert_eq!(runtime.with_process(3, |_, _| ()).unwrap_err(), no);
    // And the runtime is unharmed.
    runtime
        .snapshot_timeout(2, *PATIENCE)
        .unwrap()
        .verify()
        .unwrap();
    assert!(runtime.failures().is_empty());
}

/// A timeout too long to add to the clock (`Duration::MAX`) means "wait as long as it takes":
/// before, each of these panicked with "overflow when adding duration to instant".
#[test]
fn a_huge_timeout_waits_as_long_as_it_takes() {
    use chandy_lamport::detect::{detect, Detection};
    use std::time::Duration;
    let runtime = build(Topology::ring(3), 3).unwrap();
    runtime
        .snapshot_timeout(0, Duration::MAX)
        .unwrap()
        .verify()
        .unwrap();
    let ticket = runtime.start_snapshot(1).unwrap();
    ticket.wait_timeout(Duration::MAX).unwrap();
    assert_eq!(
        runtime
            .with_process_timeout(2, Duration::MAX, |_, ctx| ctx.id())
            .unwrap(),
        2
    );
    let forever = Detection {
        initiator: 2,
        interval: Duration::from_millis(1),
        timeout: Duration::MAX,
    };
    detect(&mut runtime.clone(), &forever, |s| s.verify().is_ok()).unwrap();
    let mut sim =
        chandy_lamport::sim::Simulation::new(Topology::ring(3), (0..3).map(|_| Idle), 1).unwrap();
    detect(&mut sim, &forever, |s| s.verify().is_ok()).unwrap();
    assert!(runtime.failures().is_empty());
    let stopped = runtime.shutdown_timeout(Duration::MAX).unwrap();
    assert!(stopped.failures.is_empty());
}

/// A tick interval too long to add to the clock never ticks. Before, every process "failed"
/// at once with the library's own overflow panic, reported as if its code had panicked.
#[test]
fn a_huge_tick_interval_never_ticks() {
    use std::time::Duration;
    let runtime = Runtime::builder(Topology::ring(3))
        .tick_interval(Duration::MAX)
        .build((0..3).map(|_| Idle))
        .unwrap();
    runtime
        .snapshot_timeout(0, *PATIENCE)
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(runtime.failures(), vec![]);
    assert!(runtime.shutdown().unwrap().failures.is_empty());
}

/// A thread name prefix no thread can have is refused before any thread starts. Before, the
/// standard library's thread builder panicked, with some threads already running.
#[test]
fn a_thread_name_with_a_nul_byte_is_refused() {
    let err = Runtime::builder(Topology::ring(3))
        .thread_name("a\0b")
        .build((0..3).map(|_| Idle))
        .unwrap_err();
    assert_eq!(
        err,
        BuildError::ThreadName {
            prefix: "a\0b".into()
        }
    );
    assert!(err.to_string().contains("NUL"), "{err}");
}

/// An absurd process count is refused like any topology that cannot be strongly connected,
/// before anything is allocated per process (before: "capacity overflow").
#[test]
fn an_absurd_process_count_is_refused_not_allocated() {
    assert_eq!(
        Topology::from_edges(usize::MAX, [(0, 1), (1, 0)])
            .validate()
            .unwrap_err(),
        TopologyError::NotStronglyConnected { from: 0, to: 2 }
    );
    assert_eq!(
        Topology::from_edges(usize::MAX, []).validate().unwrap_err(),
        TopologyError::NotStronglyConnected { from: 0, to: 1 }
    );
    assert!(matches!(
        build(Topology::from_edges(usize::MAX, [(0, 1), (1, 0)]), 2).unwrap_err(),
        BuildError::Topology(TopologyError::NotStronglyConnected { .. })
    ));
}

/// `Stopped::processes` is public: a caller that took a process out gets an error from
/// `into_processes`, not a panic.
#[test]
fn into_processes_after_taking_one_out_is_an_error() {
    let runtime = build(Topology::ring(3), 3).unwrap();
    let mut stopped = runtime.shutdown().unwrap();
    let taken = stopped.processes[1].take();
    assert!(taken.is_some());
    assert_eq!(
        stopped.into_processes().err(),
        Some(Error::ProcessTaken { process: 1 })
    );
}

/// The simulator's `process` names a missing process with a typed error, as every other call
/// that takes a process id does (before: an index out of bounds panic).
#[test]
fn the_simulator_names_a_process_that_does_not_exist() {
    let sim =
        chandy_lamport::sim::Simulation::new(Topology::ring(3), (0..3).map(|_| Idle), 1).unwrap();
    assert!(sim.process(2).is_ok());
    assert_eq!(
        sim.process(99).err(),
        Some(Error::NoSuchProcess {
            process: 99,
            processes: 3
        })
    );
}
