//! The runtime end to end on every kind of topology: snapshots complete, verify and conserve;
//! shutdown hands everything back.

mod common;

use std::time::Duration;

use chandy_lamport::{Context, Process, ProcessId, Runtime, Topology};
use common::{branches, check_bank, final_total, seed, wait_for_traffic, PATIENCE};

/// Runs a bank on `topology`, takes `k` snapshots one after another from rotating initiators,
/// checks each, shuts down and checks the final money.
fn bank_on(topology: Topology, k: usize, test: &str) {
    let (seed, _guard) = seed(test);
    let n = topology.processes();
    let (procs, traffic) = branches(n, 1000, 3, seed);
    let runtime = Runtime::new(topology, procs).unwrap();
    for i in 0..k {
        wait_for_traffic(&traffic, 50);
        let snapshot = runtime.snapshot_timeout(i % n, *PATIENCE).unwrap();
        assert_eq!(snapshot.initiator, i % n);
        assert_eq!(snapshot.states.len(), n);
        assert_eq!(snapshot.channels.len(), runtime.wiring().channels().len());
        assert!(snapshot.completed_at >= snapshot.started_at);
        check_bank(&snapshot, n as u64 * 1000, n as u64 * 3);
    }
    assert_eq!(final_total(runtime), n as u64 * 1000);
}

#[test]
fn complete_graph() {
    bank_on(Topology::complete(5), 10, "complete_graph");
}

#[test]
fn bidirectional_ring() {
    bank_on(Topology::ring(7), 10, "bidirectional_ring");
}

#[test]
fn star() {
    bank_on(Topology::star(6), 10, "star");
}

#[test]
fn two_processes() {
    bank_on(Topology::complete(2), 10, "two_processes");
}

#[test]
fn one_way_ring() {
    bank_on(
        Topology::from_edges(5, (0..5).map(|i| (i, (i + 1) % 5))),
        10,
        "one_way_ring",
    );
}

#[test]
fn random_strongly_connected_topologies() {
    let (seed, _guard) = seed("random_strongly_connected_topologies");
    let mut rng = fastrand::Rng::with_seed(seed);
    for _ in 0..5 {
        let n = rng.usize(2..=9);
        // A one-way ring through a random order makes it strongly connected; extra random edges
        // make it irregular.
        let mut order: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut order);
        let mut edges: Vec<(usize, usize)> =
            (0..n).map(|i| (order[i], order[(i + 1) % n])).collect();
        for _ in 0..rng.usize(0..n * 2) {
            let (a, b) = (rng.usize(..n), rng.usize(..n));
            if a != b && !edges.contains(&(a, b)) {
                edges.push((a, b));
            }
        }
        bank_on(
            Topology::from_edges(n, edges),
            3,
            "random_strongly_connected_topologies",
        );
    }
}

/// A process with nobody to talk to still snapshots: it completes as soon as it records.
#[test]
fn one_process() {
    struct Counter(u32);
    impl Process for Counter {
        type Message = ();
        type State = u32;
        fn on_message(&mut self, _: ProcessId, _: (), _: &mut Context<'_, ()>) {}
        fn on_tick(&mut self, _: &mut Context<'_, ()>) {
            self.0 += 1;
        }
        fn record(&self) -> u32 {
            self.0
        }
    }
    let runtime = Runtime::builder(Topology::complete(1))
        .tick_interval(Duration::from_millis(1))
        .build([Counter(0)])
        .unwrap();
    let first = runtime.snapshot_timeout(0, *PATIENCE).unwrap();
    assert!(first.channels.is_empty());
    first.verify().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let second = runtime.snapshot_timeout(0, *PATIENCE).unwrap();
    assert!(second.states[0] > first.states[0], "ticks ran in between");
    let counters = runtime.shutdown().unwrap().into_processes().unwrap();
    assert!(counters[0].0 >= second.states[0]);
}

/// A process that never runs out of work still ticks: a busy loop looks at the clock only every
/// few channels it serves, and that must not mean never. Process 1 starts with a backlog of
/// messages already queued (process 0 sends them all before process 1's `on_start` returns), so
/// it is not idle until the last is handled; ticks counted before then came while it was busy.
#[test]
fn ticks_come_while_a_process_is_never_idle() {
    use std::sync::{Arc, Barrier};
    const BACKLOG: u64 = 200_000;
    struct Busy {
        sent_first: Arc<Barrier>,
        received: u64,
        ticks_while_busy: u32,
    }
    impl Process for Busy {
        type Message = u64;
        type State = u64;
        fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
            if ctx.id() == 0 {
                for k in 0..BACKLOG {
                    ctx.send(1, k).unwrap();
                }
            }
            // Process 1 serves nothing until every message is on its channel.
            self.sent_first.wait();
        }
        fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {
            self.received += 1;
        }
        fn on_tick(&mut self, _: &mut Context<'_, u64>) {
            if self.received > 0 && self.received < BACKLOG {
                self.ticks_while_busy += 1;
            }
        }
        fn record(&self) -> u64 {
            self.received
        }
    }
    let sent_first = Arc::new(Barrier::new(2));
    let processes = (0..2).map(|_| Busy {
        sent_first: sent_first.clone(),
        received: 0,
        ticks_while_busy: 0,
    });
    let runtime = Runtime::builder(Topology::complete(2))
        .tick_interval(Duration::from_millis(1))
        .build(processes)
        .unwrap();
    let deadline = std::time::Instant::now() + *PATIENCE;
    while runtime.with_process(1, |p, _| p.received).unwrap() < BACKLOG {
        assert!(
            std::time::Instant::now() < deadline,
            "the backlog was never drained"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let busy = runtime.shutdown().unwrap().into_processes().unwrap();
    // Draining 200,000 messages takes at least some milliseconds even in a release build
    // (tens of nanoseconds each), so a 1 ms tick fires several times meanwhile.
    assert!(
        busy[1].ticks_while_busy >= 2,
        "only {} ticks while process 1 had work queued",
        busy[1].ticks_while_busy
    );
}

/// `with_process` runs code on the process's own thread and returns its result; what it sends
/// arrives like any message.
#[test]
fn with_process_runs_a_closure_on_the_process() {
    #[derive(Default)]
    struct Inbox(Vec<(ProcessId, String)>);
    impl Process for Inbox {
        type Message = String;
        type State = usize;
        fn on_message(&mut self, from: ProcessId, m: String, _: &mut Context<'_, String>) {
            self.0.push((from, m));
        }
        fn record(&self) -> usize {
            self.0.len()
        }
    }
    let runtime = Runtime::new(Topology::complete(3), (0..3).map(|_| Inbox::default())).unwrap();
    let name = runtime
        .with_process(2, |_, ctx| {
            ctx.send(0, "hello".to_string()).unwrap();
            std::thread::current().name().unwrap().to_string()
        })
        .unwrap();
    assert_eq!(name, "process-2");
    let got = runtime
        .with_process_timeout(0, *PATIENCE, |inbox, _| inbox.0.clone())
        .unwrap();
    assert!(
        got.len() <= 1,
        "delivery is asynchronous, but there is only one message"
    );
    // A snapshot started at 2 after the send finds the message exactly once: delivered to 0
    // before 0 recorded, or in flight on 2->0 (it precedes 2's marker there).
    let snapshot = runtime.snapshot_timeout(2, *PATIENCE).unwrap();
    let in_flight = &snapshot.channel(2, 0).unwrap().messages;
    assert_eq!(snapshot.states[0] + in_flight.len(), 1);
    let inboxes = runtime.shutdown().unwrap().into_processes().unwrap();
    assert_eq!(inboxes[0].0, vec![(2, "hello".to_string())]);
}

/// Snapshots started by application code reach subscribers, with the right initiator.
#[test]
fn snapshots_started_inside_application_code_reach_subscribers() {
    let (seed, _guard) = seed("snapshots_started_inside_application_code_reach_subscribers");
    let (mut procs, _) = branches(4, 500, 2, seed);
    procs[3].snapshot_every = 200;
    let runtime = Runtime::new(Topology::complete(4), procs).unwrap();
    let events = runtime.subscribe();
    for _ in 0..5 {
        let event = events.recv_timeout(*PATIENCE).unwrap();
        assert_eq!(event.initiator, 3);
        let snapshot = event.outcome.unwrap();
        assert_eq!(snapshot.id, event.id);
        check_bank(&snapshot, 2000, 8);
    }
    runtime.shutdown().unwrap();
}
