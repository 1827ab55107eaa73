//! The rules of `src/algorithm.rs` (the crate's `algorithm` page), driven through the threaded
//! runtime with the order of events pinned down (a process is held inside a callback while the
//! others move), so each test knows the exact snapshot to expect.

mod common;

use chandy_lamport::{Context, Error, Process, ProcessId, Runtime, Topology};
use common::PATIENCE;
use crossbeam_channel::{bounded, Receiver, Sender};
use std::time::Duration;

/// Logs every message it receives; its recorded state is that log.
#[derive(Default, Debug)]
struct Log(Vec<(ProcessId, &'static str)>);

impl Process for Log {
    type Message = &'static str;
    type State = Vec<(ProcessId, &'static str)>;
    fn on_message(&mut self, from: ProcessId, m: &'static str, _: &mut Context<'_, &'static str>) {
        self.0.push((from, m));
    }
    fn record(&self) -> Self::State {
        self.0.clone()
    }
}

fn logs(topology: Topology) -> Runtime<Log> {
    let n = topology.processes();
    Runtime::new(topology, (0..n).map(|_| Log::default())).unwrap()
}

/// Holds `process` inside a callback; when released, it sends `then` (destination, message)
/// before the callback returns.
fn hold(
    runtime: &Runtime<Log>,
    process: ProcessId,
    then: Vec<(ProcessId, &'static str)>,
) -> Sender<()> {
    let (release, wait): (Sender<()>, Receiver<()>) = bounded(0);
    let (entered_tx, entered) = bounded(1);
    let r = runtime.with_process_timeout(process, Duration::from_millis(1), move |_, ctx| {
        entered_tx.send(()).unwrap();
        let _ = wait.recv();
        for (to, m) in then {
            ctx.send(to, m).unwrap();
        }
    });
    assert_eq!(r.unwrap_err(), Error::Timeout);
    entered.recv_timeout(*PATIENCE).unwrap();
    release
}

fn send(runtime: &Runtime<Log>, from: ProcessId, to: ProcessId, m: &'static str) {
    runtime
        .with_process(from, move |_, ctx| ctx.send(to, m).unwrap())
        .unwrap();
}

// Initiator rule 2: "sends a marker(S) on every outgoing channel, before any further application
// message on it". A message sent before the snapshot is inside the cut, one sent after is not.
#[test]
fn initiator_marker_separates_messages_before_and_after() {
    let runtime = logs(Topology::ring(2));
    let release = hold(&runtime, 1, vec![]);
    send(&runtime, 0, 1, "before");
    let ticket = runtime.start_snapshot(0).unwrap();
    // Control requests to one process are served in order: the snapshot starts first, so the
    // marker is queued behind "before" and "after" behind the marker.
    send(&runtime, 0, 1, "after");
    drop(release);
    let s = ticket.wait_timeout(*PATIENCE).unwrap();
    s.verify().unwrap();
    assert_eq!(s.states[1], vec![(0, "before")]);
    let c01 = s.channel(0, 1).unwrap();
    assert_eq!((c01.sent, c01.received, c01.messages.len()), (1, 1, 0));
    let logs = runtime.shutdown().unwrap().into_processes().unwrap();
    assert_eq!(logs[1].0, vec![(0, "before"), (0, "after")]);
}

// Initiator rules 1 and 3: "records its own state" and "starts recording every incoming
// channel"; and "an application message that arrives on Cki is BOTH delivered to the
// application as usual AND appended to Cki's recorded state". Also "otherwise (Pi already
// recorded its state for S, whether as initiator...)": the returning marker does not make the
// initiator record again.
#[test]
fn message_arriving_on_a_recorded_channel_is_recorded_and_delivered() {
    let runtime = logs(Topology::ring(2));
    // 1 is held; once released it sends "m" to 0, then handles 0's marker.
    let release = hold(&runtime, 1, vec![(0, "m")]);
    let ticket = runtime.start_snapshot(0).unwrap();
    runtime.with_process(0, |_, _| ()).unwrap(); // served after 0 started the snapshot
    drop(release);
    let s = ticket.wait_timeout(*PATIENCE).unwrap();
    s.verify().unwrap();
    assert!(
        s.states[0].is_empty(),
        "0 recorded before m arrived, and only once"
    );
    let c10 = s.channel(1, 0).unwrap();
    assert_eq!(c10.messages.len(), 1);
    assert_eq!(*c10.messages[0].message, "m");
    assert_eq!((c10.sent, c10.received), (1, 0));
    let logs = runtime.shutdown().unwrap().into_processes().unwrap();
    assert_eq!(
        logs[0].0,
        vec![(1, "m")],
        "the recorded message was delivered too"
    );
}

// Receiving rule, first marker: "record own state; the state of Cki is empty; send marker(S) on
// every outgoing channel; start recording every other incoming channel".
#[test]
fn first_marker_empties_its_channel_and_records_the_others() {
    let runtime = logs(Topology::complete(3));
    // 2 is held; once released it sends "x" to 1, then handles the markers waiting for it.
    let release = hold(&runtime, 2, vec![(1, "x")]);
    send(&runtime, 0, 1, "a"); // before the snapshot: in 1's state, not in flight
    let ticket = runtime.start_snapshot(0).unwrap();
    // Wait until 1 has taken 0's marker (its first): then 0 and 1 are recording.
    let deadline = std::time::Instant::now() + *PATIENCE;
    while runtime.stats().recording < 2 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::yield_now();
    }
    drop(release);
    let s = ticket.wait_timeout(*PATIENCE).unwrap();
    s.verify().unwrap();
    assert_eq!(s.states[1], vec![(0, "a")]);
    assert!(s.channel(0, 1).unwrap().messages.is_empty(), "Cki is empty");
    let c21 = s.channel(2, 1).unwrap();
    assert_eq!(
        c21.messages.iter().map(|m| *m.message).collect::<Vec<_>>(),
        ["x"]
    );
    assert!(s.states[2].is_empty());
    assert_eq!(s.in_flight().count(), 1);
}

// "If application code starts a snapshot while it is running (inside a callback), the process's
// recorded state is its state when that callback returns, and its markers follow every message
// that callback sent."
#[test]
fn snapshot_started_in_a_callback_records_when_it_returns() {
    #[derive(Default)]
    struct Starter {
        sent: u32,
    }
    impl Process for Starter {
        type Message = u32;
        type State = u32;
        fn on_message(&mut self, _: ProcessId, _: u32, _: &mut Context<'_, u32>) {}
        fn record(&self) -> u32 {
            self.sent
        }
    }
    let runtime =
        Runtime::new(Topology::ring(2), [Starter::default(), Starter::default()]).unwrap();
    let events = runtime.subscribe();
    let id = runtime
        .with_process(0, |me, ctx| {
            ctx.send(1, 1).unwrap();
            me.sent += 1;
            let id = ctx.start_snapshot();
            ctx.send(1, 2).unwrap(); // still before the cut: the callback has not returned
            me.sent += 1;
            id
        })
        .unwrap();
    let event = events.recv_timeout(*PATIENCE).unwrap();
    assert_eq!((event.id, event.initiator), (id, 0));
    let s = event.outcome.unwrap();
    s.verify().unwrap();
    assert_eq!(s.states[0], 2, "state recorded when the callback returned");
    let c01 = s.channel(0, 1).unwrap();
    assert_eq!(
        (c01.sent, c01.received),
        (2, 2),
        "markers follow both messages"
    );
}

// "Pi's part of S is complete when it has recorded its state and received marker(S) on every
// incoming channel" - and "a process with a single incoming channel completes on its first
// marker": on a star, the leaves complete at once, the centre waits for every leaf.
#[test]
fn completion_needs_a_marker_on_every_incoming_channel() {
    let runtime = logs(Topology::star(4));
    let release = hold(&runtime, 3, vec![(0, "late")]);
    let ticket = runtime.start_snapshot(1).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(
        ticket.try_get().is_none(),
        "the centre still waits for leaf 3's marker"
    );
    drop(release);
    let s = ticket.wait_timeout(*PATIENCE).unwrap();
    s.verify().unwrap();
    let c30 = s.channel(3, 0).unwrap();
    assert_eq!(
        c30.messages.len(),
        1,
        "recorded until leaf 3's marker closed the channel"
    );
    common::wait_until_clean(&runtime);
}

/// The channels of `wiring` on which snapshot `id` has no marker sent, and those on which it
/// has none received, according to `trace`; and the channels that carried more than one.
fn marker_gaps(
    trace: &chandy_lamport::trace::Trace,
    channels: &[chandy_lamport::Channel],
    id: chandy_lamport::SnapshotId,
) -> Vec<String> {
    use chandy_lamport::trace::TraceKind;
    let mut gaps = Vec::new();
    for &c in channels {
        let count = |kind: TraceKind| {
            trace
                .events
                .iter()
                .filter(|e| e.kind == kind && e.channel == Some(c) && e.snapshot == Some(id))
                .count()
        };
        let (sent, received) = (
            count(TraceKind::MarkerSend),
            count(TraceKind::MarkerReceive),
        );
        if (sent, received) != (1, 1) {
            gaps.push(format!(
                "channel {c}: {sent} marker(s) of snapshot {} sent, {received} received",
                id.short()
            ));
        }
    }
    gaps
}

// "Exactly one marker(S) crosses each channel." Checked on the threaded runtime from its trace,
// for every snapshot of a busy bank on several topologies, several at once. A runtime that
// skipped the marker on one outgoing channel would leave a snapshot waiting forever; this test
// then fails naming the channel, rather than as a timeout of some other test.
#[test]
fn exactly_one_marker_crosses_each_channel_of_every_snapshot() {
    let (seed, _guard) = common::seed("exactly_one_marker_crosses_each_channel_of_every_snapshot");
    let topologies = [
        Topology::complete(4),
        Topology::ring(5),
        Topology::star(4),
        Topology::from_edges(3, [(0, 1), (1, 2), (2, 0)]),
    ];
    for topology in topologies {
        let n = topology.processes();
        let channels = topology.channels().to_vec();
        let (branches, _) = common::branches(n, 1_000, 1, seed);
        let runtime = Runtime::builder(topology)
            .trace(1_000_000)
            .build(branches)
            .unwrap();
        let tickets: Vec<_> = (0..6)
            .map(|k| runtime.start_snapshot(k % n).unwrap())
            .collect();
        let mut ids = Vec::new();
        for ticket in tickets {
            let id = ticket.id();
            match ticket.wait_timeout(*PATIENCE) {
                Ok(snapshot) => snapshot.verify().unwrap(),
                // The trace so far says which channel never carried the marker. (Read while
                // running it is a prefix, possibly short of the latest sends: good enough to
                // explain a hang.)
                Err(e) => {
                    let gaps = marker_gaps(&runtime.trace().unwrap(), &channels, id);
                    panic!(
                        "snapshot {id} did not complete ({e}): {}",
                        if gaps.is_empty() {
                            "every channel carried its marker".to_string()
                        } else {
                            gaps.join("; ")
                        }
                    )
                }
            }
            ids.push(id);
        }
        // Every thread stopped: the whole trace, each marker's send and receipt in it.
        let trace = runtime.shutdown().unwrap().trace.unwrap();
        assert_eq!(trace.header.left_out, 0, "the trace kept every event");
        for id in ids {
            let gaps = marker_gaps(&trace, &channels, id);
            assert!(gaps.is_empty(), "{}", gaps.join("; "));
        }
    }
}
