//! A member gone bad: node 2 of three holds its own key, passes the handshake, and then sends
//! node 0 bytes no honest node sends. Each time node 0 closes that link, says why, and every
//! survivor decides node 2 failed; nothing panics, and nodes 0 and 1 keep running their
//! processes. (Strangers, who never get past the handshake, are `tests/cluster_strangers.rs`'s.)
//! Last, two failures on a node's own side that must not leave anything stuck: a link whose
//! reader failed while a process was sending past the link's bound, and a stop that fails.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::packed::{ByteString, GlobalOut, PartOut};
use super::wire::{self, Frame, FrameOut, Report};
use super::{ClusterConfig, ClusterError, Node, NodeBuilder, NodeKeys, NodeProcess};
use crate::ids::Channel;
use crate::process::{Context, Process};
use crate::snapshot::{ChannelSnapshot, GlobalSnapshot, LocalSnapshot, SnapshotId};
use crate::topology::{ProcessId, Topology};

/// The frame limit every node of these tests reads with.
const LIMIT: usize = 4096;

/// Keeps two tokens moving to random neighbours, counting what it handles; a token a
/// neighbour cannot take (its node failed) goes to another.
struct Mover {
    rng: fastrand::Rng,
    handled: Arc<AtomicU64>,
}

impl Process for Mover {
    type Message = u64;
    type State = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
        self.pass(ctx, 1);
        self.pass(ctx, 1);
    }
    fn on_message(&mut self, _: ProcessId, t: u64, ctx: &mut Context<'_, u64>) {
        self.handled.fetch_add(1, Ordering::Relaxed);
        self.pass(ctx, t);
    }
    fn record(&self) -> u64 {
        0
    }
}

impl Mover {
    fn pass(&mut self, ctx: &mut Context<'_, u64>, mut t: u64) {
        for _ in 0..16 {
            let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
            match ctx.send(to, t) {
                Ok(()) => return,
                Err(e) => t = e.into_message(),
            }
        }
    }
}

/// A cluster of `placement` over `topology`, every node a set of threads of this test
/// process, each built as `configure` says with processes from `make`.
fn cluster<P: NodeProcess, const NODES: usize, const PER: usize>(
    topology: &Topology,
    placement: [[ProcessId; PER]; NODES],
    configure: fn(NodeBuilder<P>) -> NodeBuilder<P>,
    make: impl Fn(ProcessId) -> P + Clone + Send + 'static,
) -> Vec<Node<P>> {
    let (config, listeners) = ClusterConfig::on_localhost(placement).unwrap();
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(NodeKeys::generate(NODES).unwrap())
        .enumerate()
        .map(|(me, (listener, keys))| {
            let (config, make, topology) = (config.clone(), make.clone(), topology.clone());
            thread::spawn(move || {
                configure(Node::builder(topology, config, me))
                    .listener(listener)
                    .keys(keys)
                    .build(make)
            })
        })
        .collect();
    builds
        .into_iter()
        .map(|b| b.join().unwrap().unwrap())
        .collect()
}

/// Processes 0, 3 | 1, 4 | 2, 5 of complete(6) on three nodes of this test process.
fn three_nodes() -> (Vec<Node<Mover>>, Arc<AtomicU64>) {
    let handled = Arc::new(AtomicU64::new(0));
    let counted = handled.clone();
    let nodes = cluster(
        &Topology::complete(6),
        [[0, 3], [1, 4], [2, 5]],
        usual,
        move |p| Mover {
            rng: fastrand::Rng::with_seed(p as u64),
            handled: counted.clone(),
        },
    );
    (nodes, handled)
}

/// How the nodes of these tests are built: the frame limit, a failure timeout of a second.
fn usual<P: NodeProcess>(node: NodeBuilder<P>) -> NodeBuilder<P> {
    node.max_frame(LIMIT)
        .max_frame_total(4 * LIMIT)
        .failure_timeout(Duration::from_secs(1))
        .connect_timeout(Duration::from_secs(30))
        .stop_timeout(Duration::from_secs(5))
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// `frame` encoded as an honest node would (its length, then postcard).
fn framed<M: serde::Serialize, S: serde::Serialize>(frame: &FrameOut<'_, M, S>) -> Vec<u8> {
    let mut bytes = Vec::new();
    wire::encode(&mut bytes, frame).unwrap();
    bytes
}

/// The channel from process `from` to process `to` of complete(6).
fn channel(from: ProcessId, to: ProcessId) -> u32 {
    Topology::complete(6)
        .channels()
        .iter()
        .position(|c| (c.from, c.to) == (from, to))
        .unwrap() as u32
}

/// A part of process `process` of a snapshot nobody started.
fn stray_part(process: ProcessId) -> Vec<u8> {
    let part = LocalSnapshot::<u64, u64> {
        id: SnapshotId::random(),
        process,
        initiated: false,
        state: 0,
        sent: vec![0; 5],
        received: vec![0; 5],
        recorded: vec![Vec::new(); 5],
    };
    framed(&Frame::Part {
        recorded_before: Duration::ZERO,
        part: PartOut::new(&part),
    })
}

/// Node 2 sends node 0 `bytes`: node 0 closes the link saying something with `why` in it,
/// every node decides node 2 failed, and nodes 0 and 1 carry on.
fn a_member_sending(bytes: Vec<u8>, why: &str) {
    a_member_sending_made(move |_| bytes, why);
}

/// As `a_member_sending`, with the bytes made once the cluster runs (from what it did).
fn a_member_sending_made(make: impl FnOnce(&[Node<Mover>]) -> Vec<u8>, why: &str) {
    let (nodes, handled) = three_nodes();
    wait_until("tokens cross the cluster", || {
        handled.load(Ordering::Relaxed) > 100
    });
    let bytes = make(&nodes);
    nodes[2].send_raw(0, &bytes);
    for (k, node) in nodes.iter().enumerate() {
        wait_until("every node decides", || !node.failed_nodes().is_empty());
        assert_eq!(node.failed_nodes(), [2], "node {k}'s view, after {why:?}");
    }
    let link = nodes[0].stats().links.into_iter().find(|l| l.node == 2);
    let down = link.and_then(|l| l.down).unwrap_or_default();
    assert!(down.contains(why), "node 0 says {down:?}, not {why:?}");
    // Only node 2's processes failed, each with an error that names the node.
    let failures = nodes[0].failures();
    assert_eq!(
        failures.iter().map(|f| f.process).collect::<Vec<_>>(),
        [2, 5],
        "{failures:?}"
    );
    assert!(failures.iter().all(|f| f.message.contains("node 2 failed")));
    // Nodes 0 and 1 keep working (fresh tokens: the old ones may have gone to node 2).
    let before = handled.load(Ordering::Relaxed);
    nodes[0]
        .with_process(0, |mover, ctx| {
            for _ in 0..4 {
                mover.pass(ctx, 1);
            }
        })
        .unwrap();
    wait_until("the survivors keep working", || {
        handled.load(Ordering::Relaxed) > before + 50
    });
    let mut nodes = nodes.into_iter();
    let (zero, one, two) = (
        nodes.next().unwrap(),
        nodes.next().unwrap(),
        nodes.next().unwrap(),
    );
    let one = thread::spawn(move || one.wait_stopped(Duration::from_secs(30)));
    assert_eq!(zero.shutdown().unwrap().failed_nodes, [2]);
    assert_eq!(one.join().unwrap().unwrap().failed_nodes, [2]);
    // Node 2, cut off and failed by its own reckoning, stops on its own.
    assert_eq!(two.shutdown().unwrap().failed_nodes, [2]);
}

#[test]
fn a_piece_over_the_limit_fails_its_sender() {
    let announced = (LIMIT as u32 + 1).to_le_bytes();
    a_member_sending(announced.to_vec(), "over the limit");
}

#[test]
fn pieces_past_the_whole_limit_fail_their_sender() {
    // Five pieces under the piece limit, together over the whole limit (4 x LIMIT).
    let mut bytes = Vec::new();
    for _ in 0..5 {
        bytes.extend_from_slice(&(LIMIT as u32 | wire::CONTINUED).to_le_bytes());
        bytes.extend_from_slice(&[0; LIMIT]);
    }
    a_member_sending(bytes, "over the limit of 16384");
}

#[test]
fn garbage_fails_its_sender() {
    let mut bytes = 8u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xff; 8]);
    a_member_sending(bytes, "malformed");
}

#[test]
fn a_truncated_frame_fails_its_sender() {
    // Announces 100 bytes and sends 10: what comes next (heartbeats) is read as the rest, and
    // the whole is not a frame.
    let mut bytes = 100u32.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 10]);
    a_member_sending(bytes, "malformed");
}

#[test]
fn a_message_on_a_channel_from_another_node_fails_its_sender() {
    // Channel 1 -> 0 runs from node 1, not node 2.
    let frame: FrameOut<'_, u64, u64> = Frame::Message {
        channel: channel(1, 0),
        seq: 1,
        message: &7,
    };
    a_member_sending(framed(&frame), "does not run from node 2");
}

#[test]
fn a_message_out_of_sequence_fails_its_sender() {
    let frame: FrameOut<'_, u64, u64> = Frame::Message {
        channel: channel(2, 0),
        seq: 1 << 40,
        message: &7,
    };
    a_member_sending(framed(&frame), "was due");
}

#[test]
fn a_part_of_a_snapshot_nobody_started_fails_its_sender() {
    a_member_sending(stray_part(2), "a part from node 2");
}

#[test]
fn a_part_of_another_nodes_process_fails_its_sender() {
    a_member_sending(stray_part(1), "which it does not run");
}

/// A part whose shape decodes but does not make a part (a channel state listed for channel 9
/// of 5, which `PartOut` never writes): refused in words, its sender failed.
#[test]
fn a_part_listing_a_channel_state_past_its_channels_fails_its_sender() {
    let message = crate::snapshot::RecordedMessage {
        seq: 1,
        message: Arc::new(0u64),
    };
    // `PartIn`'s fields in order: id, process, initiated, state, sent, received (five counts
    // of 0, one byte each), then the channel states that hold messages.
    let part = (
        SnapshotId::random(),
        2usize,
        false,
        0u64,
        ByteString(&[0; 5]),
        ByteString(&[0; 5]),
        vec![(9usize, vec![message])],
    );
    let frame: Frame<&u64, _, (), &Report<u64, u64>> = Frame::Part {
        recorded_before: Duration::ZERO,
        part,
    };
    let mut bytes = Vec::new();
    wire::encode(&mut bytes, &frame).unwrap();
    a_member_sending(bytes, "channel state 9 out of order or past the 5 channels");
}

/// A run that goes over a channel an earlier frame marked: the node refuses it before
/// delivering any of its markers, naming the repeated channel (the second of the run).
#[test]
fn a_run_over_a_channel_marked_before_fails_its_sender_naming_that_channel() {
    let snapshot = SnapshotId::random();
    let run = |first, count| -> FrameOut<'_, u64, u64> {
        Frame::Markers {
            first,
            count,
            snapshot,
            initiator: 2,
        }
    };
    // Process 2's channels into node 0 are 2 -> 0, then 2 -> 3.
    let mut bytes = framed(&run(channel(2, 3), 1));
    bytes.extend(framed(&run(channel(2, 0), 2)));
    let why = format!("on channel {} (an honest node sends one)", channel(2, 3));
    a_member_sending(bytes, &why);
}

#[test]
fn a_second_marker_of_a_snapshot_fails_its_sender_not_the_process() {
    // The same marker twice on channel 2 -> 0, of a snapshot that names node 2's process 2 as
    // its initiator: process 0 records at the first, and the second breaks the marker rules.
    // Before, process 0 panicked; its node must blame node 2 instead.
    let marker: FrameOut<'_, u64, u64> = Frame::Markers {
        first: channel(2, 0),
        count: 1,
        snapshot: SnapshotId::random(),
        initiator: 2,
    };
    let mut bytes = framed(&marker);
    bytes.extend(framed(&marker));
    a_member_sending(bytes, "second marker");
}

/// A run of markers stands for one marker on each of its channels, its first and the ones
/// after it from the same sender into the receiving node (from process 2 into node 0: 2 -> 0,
/// then 2 -> 3). A run of none is refused; so is one that goes past the last of them (after
/// its markers on 2 -> 0 and 2 -> 3 were taken), and one that starts on a channel into
/// another node.
#[test]
fn a_run_of_markers_that_names_no_channel_or_another_nodes_fails_its_sender() {
    for (first, count, why) in [
        (channel(2, 0), 0, "a run of no markers"),
        (
            channel(2, 0),
            3,
            "past its sender's last channel into this node",
        ),
        (channel(2, 0), u32::MAX, "past its sender's last channel"),
        (channel(2, 1), 1, "does not run from node 2 to this node"),
    ] {
        let run: FrameOut<'_, u64, u64> = Frame::Markers {
            first,
            count,
            snapshot: SnapshotId::random(),
            initiator: 2,
        };
        a_member_sending(framed(&run), why);
    }
}

/// A member replays the `Start` of a snapshot that has ended: refused, and the replayer
/// failed. Before, node 0 ran the snapshot again, and node 1 refused the markers node 0 then
/// sent it (it remembered the snapshot as done), so node 1, an honest node, was failed too.
#[test]
fn a_replayed_start_fails_its_sender() {
    a_member_sending_made(
        |nodes| {
            let done = nodes[0]
                .snapshot_timeout(0, Duration::from_secs(30))
                .unwrap();
            let replay: FrameOut<'_, u64, u64> = Frame::Start {
                snapshot: done.id,
                initiator: 0,
            };
            framed(&replay)
        },
        "an id already used here",
    );
}

/// A member sends node 0 the outcome of a snapshot node 0 asked node 1 for: refused, and the
/// forger failed. Before, node 0's handle got the forged outcome as the snapshot's.
#[test]
fn an_outcome_from_a_node_that_did_not_assemble_it_fails_its_sender() {
    a_member_sending_made(
        |nodes| {
            let asked = nodes[0].start_snapshot(1).unwrap();
            let forged: FrameOut<'_, u64, u64> = Frame::Outcome {
                snapshot: asked.id(),
                outcome: Err(wire::WireError::Shutdown),
            };
            framed(&forged)
        },
        "assembled on node 1",
    );
}

/// The node that assembles a snapshot node 0 asked for sends back an outcome of one channel,
/// where the cluster has 30: refused in those words (an outcome's channels travel without
/// their ends, in the cluster's order, so their number must be the cluster's).
#[test]
fn an_outcome_with_other_channels_than_the_clusters_fails_its_sender() {
    a_member_sending_made(
        |nodes| {
            let asked = nodes[0].start_snapshot(2).unwrap();
            let one = [Channel { from: 2, to: 0 }];
            let global = GlobalSnapshot::<u64, u64> {
                id: asked.id(),
                initiator: 2,
                started_at: Duration::ZERO,
                completed_at: Duration::ZERO,
                recorded_at: vec![Duration::ZERO; 6],
                states: vec![0; 6],
                channels: vec![ChannelSnapshot {
                    channel: one[0],
                    sent: 3,
                    received: 3,
                    messages: Vec::new(),
                }],
            };
            framed(&FrameOut::<u64, u64>::Outcome {
                snapshot: asked.id(),
                outcome: Ok(GlobalOut::new(&global, &one)),
            })
        },
        "2 numbers for its channels, not two for each of the 30 channels",
    );
}

/// An outcome of snapshot `id` started by process 2, as its assembling node (node 2) would send
/// it: complete(6)'s channels in the cluster's order, none holding anything, with `recorded_at`
/// and `states` as given.
fn outcome_from_node_2(id: SnapshotId, recorded_at: Vec<Duration>, states: Vec<u64>) -> Vec<u8> {
    let order = Topology::complete(6).channels().to_vec();
    let global = GlobalSnapshot::<u64, u64> {
        id,
        initiator: 2,
        started_at: Duration::ZERO,
        completed_at: Duration::ZERO,
        recorded_at,
        states,
        channels: order
            .iter()
            .map(|&channel| ChannelSnapshot::empty(channel))
            .collect(),
    };
    framed(&FrameOut::<u64, u64>::Outcome {
        snapshot: id,
        outcome: Ok(GlobalOut::new(&global, &order)),
    })
}

/// The node that assembles a snapshot node 0 asked for sends back an outcome whose record times
/// are absurd (the longest time there is, for every process): node 0 takes it, keeping each
/// time between its asking and the outcome's arrival, and fails nobody. (Node 0 puts an
/// outcome's record times on its own clock, as long after its asking as they were after the
/// start; a time from another node is only as good as that node, and this one, added as it
/// came, would have overflowed.)
#[test]
fn an_outcome_with_absurd_record_times_keeps_them_within_its_snapshot() {
    let (nodes, handled) = three_nodes();
    wait_until("tokens cross the cluster", || {
        handled.load(Ordering::Relaxed) > 100
    });
    // Process 2 (node 2) busy for a while, so that its snapshot cannot end there, and the
    // honest outcome come back, before the forged one.
    let busy = {
        let two = nodes[2].clone();
        thread::spawn(move || two.with_process(2, |_, _| thread::sleep(Duration::from_millis(500))))
    };
    thread::sleep(Duration::from_millis(50));
    let asked = nodes[0].start_snapshot(2).unwrap();
    nodes[2].send_raw(
        0,
        &outcome_from_node_2(asked.id(), vec![Duration::MAX; 6], vec![0; 6]),
    );
    let snapshot = asked.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(snapshot.recorded_at.len(), 6);
    for &at in &snapshot.recorded_at {
        assert!(
            snapshot.started_at <= at && at <= snapshot.completed_at,
            "recorded at {at:?}, outside {:?} to {:?}",
            snapshot.started_at,
            snapshot.completed_at
        );
    }
    busy.join().unwrap().unwrap();
    for node in &nodes {
        assert!(node.failed_nodes().is_empty(), "{:?}", node.failed_nodes());
    }
    let mut nodes = nodes.into_iter();
    let zero = nodes.next().unwrap();
    let rest: Vec<_> = nodes
        .map(|node| thread::spawn(move || node.wait_stopped(Duration::from_secs(30))))
        .collect();
    assert!(zero.shutdown().unwrap().failed_nodes.is_empty());
    for node in rest {
        assert!(node.join().unwrap().unwrap().failed_nodes.is_empty());
    }
}

/// The node that assembles a snapshot node 0 asked for sends back an outcome with the cluster's
/// channels but one process's state, where the cluster has 6: refused in those words, not
/// handed to the asker as the snapshot.
#[test]
fn an_outcome_with_other_states_than_the_clusters_processes_fails_its_sender() {
    a_member_sending_made(
        |nodes| {
            let asked = nodes[0].start_snapshot(2).unwrap();
            outcome_from_node_2(asked.id(), vec![Duration::ZERO; 6], vec![0; 1])
        },
        "1 states, not one for each of the 6 processes",
    );
}

#[test]
fn a_marker_of_a_snapshot_done_here_fails_its_sender() {
    // A snapshot of process 1 (node 1) runs to its end; then node 2 replays one of its markers
    // to node 0. Before, node 0 took it for a new snapshot, its processes recorded again and
    // sent node 1 parts node 1 refused: node 1, which had done nothing wrong, was failed.
    a_member_sending_made(
        |nodes| {
            let done = nodes[1]
                .snapshot_timeout(1, Duration::from_secs(30))
                .unwrap();
            for node in nodes {
                wait_until("the snapshot has left nothing behind", || {
                    node.stats().is_idle()
                });
            }
            framed(&FrameOut::<u64, u64>::Markers {
                first: channel(2, 0),
                count: 1,
                snapshot: done.id,
                initiator: 1,
            })
        },
        "whose every part here is done",
    );
}

/// A member replays a marker to a process whose part is done while another part of the same
/// snapshot is still open on its node (so the node still relays it, and the check of
/// `a_marker_of_a_snapshot_done_here_fails_its_sender` does not apply yet). On the ring
/// 0 -> 1 -> ... -> 5 -> 0 over nodes [0, 3], [1, 4], [2, 5], process 1 is held busy while
/// process 4 starts a snapshot: the markers run 4 -> 5 -> 0 and stop at 1, so process 0's part
/// is done while process 3's is open. Node 2 then replays the marker on 5 -> 0. Before, process
/// 0 took it for a first marker, recorded again and handed in a second part, which node 1
/// refused: every node failed node 1, an honest node, and not node 2 (found by a review).
#[test]
fn a_replayed_marker_while_another_part_here_is_open_fails_its_sender() {
    a_replayed_marker_while_open(4);
}

/// As above, the snapshot started by process 3, so node 0 assembles it: the replay came while
/// it was pending there. Before, process 0 recorded again and its second part broke the
/// collector's rules on its own node: process 0 panicked, an honest process failed.
#[test]
fn a_replayed_marker_of_a_snapshot_assembled_here_fails_its_sender() {
    a_replayed_marker_while_open(3);
}

/// The ring of `a_replayed_marker_while_another_part_here_is_open_fails_its_sender`, the
/// snapshot started by `initiator` while process 1 is busy; node 2 replays the marker on
/// 5 -> 0 once process 0's part is done.
fn a_replayed_marker_while_open(initiator: ProcessId) {
    let handled = Arc::new(AtomicU64::new(0));
    let counted = handled.clone();
    let ring = Topology::from_edges(6, (0..6).map(|p| (p, (p + 1) % 6)));
    let nodes = cluster(&ring, [[0, 3], [1, 4], [2, 5]], usual, move |p| Mover {
        rng: fastrand::Rng::with_seed(p as u64),
        handled: counted.clone(),
    });
    wait_until("tokens cross the cluster", || {
        handled.load(Ordering::Relaxed) > 100
    });
    let one = nodes[1].clone();
    let busy =
        thread::spawn(move || one.with_process(1, |_, _| thread::sleep(Duration::from_secs(2))));
    thread::sleep(Duration::from_millis(100));
    let ticket = nodes[initiator % 3].start_snapshot(initiator).unwrap();
    // Node 0 knows the snapshot once a marker of it came (from 5, or for its own process 3:
    // when it started); a moment later process 0 has handled the marker on its one incoming
    // channel, and its part is done.
    wait_until("process 0 has its marker", || {
        nodes[0].stats().relaying + nodes[0].stats().runtime.collecting == 1
    });
    thread::sleep(Duration::from_millis(200));
    // Channel 5 -> 0 is the ring's last edge.
    let replay: FrameOut<'_, u64, u64> = Frame::Markers {
        first: 5,
        count: 1,
        snapshot: ticket.id(),
        initiator: initiator as u32,
    };
    nodes[2].send_raw(0, &framed(&replay));
    for (k, node) in nodes.iter().enumerate() {
        wait_until("every node decides", || !node.failed_nodes().is_empty());
        assert_eq!(node.failed_nodes(), [2], "node {k}'s view");
    }
    busy.join().unwrap().unwrap();
    let failures = nodes[0].failures();
    assert_eq!(
        failures.iter().map(|f| f.process).collect::<Vec<_>>(),
        [2, 5],
        "{failures:?}"
    );
    let down = nodes[0].stats().links.into_iter().find(|l| l.node == 2);
    let down = down.and_then(|l| l.down).unwrap_or_default();
    assert!(down.contains("second marker"), "node 0 says {down:?}");
    for node in nodes {
        node.shutdown().ok();
    }
}

/// Sends 300 messages to its first neighbour on every tick, if `on`.
struct Flood {
    on: bool,
    sent: Arc<AtomicU64>,
}

impl Process for Flood {
    type Message = u64;
    type State = u64;
    fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {}
    fn on_tick(&mut self, ctx: &mut Context<'_, u64>) {
        if self.on {
            let to = ctx.neighbours()[0];
            for i in 0..300 {
                if ctx.send(to, i).is_ok() {
                    self.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    fn record(&self) -> u64 {
        0
    }
}

/// Two nodes of complete(2), one process each, as `configure` sets them; process 0 floods if
/// `flood`. Returns the nodes and the count of messages sent.
fn two_nodes(
    flood: bool,
    configure: fn(NodeBuilder<Flood>) -> NodeBuilder<Flood>,
) -> (Vec<Node<Flood>>, Arc<AtomicU64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let counted = sent.clone();
    let nodes = cluster(&Topology::complete(2), [[0], [1]], configure, move |p| {
        Flood {
            on: flood && p == 0,
            sent: counted.clone(),
        }
    });
    (nodes, sent)
}

/// A link whose reader failed (here: its peer sent garbage) is closed at once, and its writer
/// takes nothing more once it has written what it had. A process sending over it past the
/// link's bound (`max_queued`) in the moment before the peer is decided failed must not wait
/// for room that never comes: before, process 0 stayed blocked until its node stopped.
#[test]
fn a_process_never_waits_on_a_link_whose_reader_failed() {
    let (nodes, sent) = two_nodes(true, |b| {
        b.max_queued(64 << 10)
            .tick_interval(Duration::from_millis(1))
            .failure_timeout(Duration::from_secs(1))
            .stop_timeout(Duration::from_secs(5))
    });
    wait_until("node 0 sends", || sent.load(Ordering::Relaxed) > 10_000);
    let mut garbage = 8u32.to_le_bytes().to_vec();
    garbage.extend_from_slice(&[0xff; 8]);
    nodes[1].send_raw(0, &garbage);
    wait_until("node 0 decides", || !nodes[0].failed_nodes().is_empty());
    // Process 0 still answers (it ticks, sending to a process now failed, and must not block).
    let answer = nodes[0].with_process_timeout(0, Duration::from_secs(5), |_, _| 42);
    assert_eq!(answer.ok(), Some(42), "process 0 is stuck");
    let mut nodes = nodes.into_iter();
    let (zero, one) = (nodes.next().unwrap(), nodes.next().unwrap());
    let one = thread::spawn(move || one.shutdown());
    assert!(zero.shutdown().is_ok());
    let _ = one.join().unwrap();
}

#[test]
fn a_final_report_for_another_nodes_process_fails_its_sender() {
    // Node 2 would overwrite process 0's final state (node 0's) in everyone's final state.
    let report = Report::<u64, u64> {
        processes: vec![(0, Some(1_000_000), None)],
        incoming: Vec::new(),
        outgoing: Vec::new(),
    };
    let frame: FrameOut<'_, u64, u64> = Frame::Report(&report);
    a_member_sending(framed(&frame), "which it does not run");
}

#[test]
fn saying_it_has_every_report_before_its_own_fails_its_sender() {
    // Else node 0 would count node 2's word that its verdict is the cluster's before the stop.
    let frame: FrameOut<'_, u64, u64> = Frame::HaveAll;
    a_member_sending(framed(&frame), "before sending its own");
}

#[test]
fn a_final_report_whose_counts_overflow_fails_its_sender() {
    // Numbering the messages left from `received + 1` would overflow at the stop: before, the
    // stop thread panicked (the first check, one short, let the second case through).
    for left in [vec![7], Vec::new()] {
        let report = Report::<u64, u64> {
            processes: Vec::new(),
            incoming: vec![(channel(0, 2), u64::MAX, left)],
            outgoing: Vec::new(),
        };
        let frame: FrameOut<'_, u64, u64> = Frame::Report(&report);
        a_member_sending(framed(&frame), "messages received on channel");
    }
}

/// A stop that fails (a process busier than the stop timeout) still ends the node's links:
/// before, their threads ran on, heartbeating each other, and held the node (its runtime and
/// every process's state) for good.
#[test]
fn a_failed_stop_lets_go_of_the_node() {
    let (nodes, _) = two_nodes(false, |b| {
        b.failure_timeout(Duration::from_millis(500))
            .stop_timeout(Duration::from_millis(500))
    });
    let held: Vec<_> = nodes.iter().map(|n| n.weak_core()).collect();
    // Process 1 busy for 1.5 s: longer than the stop may wait.
    let one = nodes[1].clone();
    let busy = thread::spawn(move || {
        one.with_process(1, |_, _| thread::sleep(Duration::from_millis(1500)))
    });
    thread::sleep(Duration::from_millis(100));
    let mut nodes = nodes.into_iter();
    let (zero, one) = (nodes.next().unwrap(), nodes.next().unwrap());
    let zero = thread::spawn(move || zero.shutdown());
    // Said as this node's processes, not as a link (it read "the link with node 1").
    match one.shutdown() {
        Err(e @ ClusterError::Processes(crate::Error::ShutdownTimeout { .. })) => {
            assert_eq!(
                e.to_string(),
                "stopping this node's processes: shutdown timed out; processes still running: [1]"
            );
        }
        other => panic!("process 1 cannot stop in time: {other:?}"),
    }
    let _ = zero.join().unwrap();
    let _ = busy.join().unwrap();
    wait_until("both nodes are let go", || {
        held.iter().all(|core| core.strong_count() == 0)
    });
}

/// A message whose encoding panics, when it is `BOMB`, after writing part of itself: a
/// `Serialize` impl that panics midway.
#[derive(Clone, Debug, serde::Deserialize)]
struct Shaky(u64, u8);

const BOMB: u64 = u64::MAX;

impl serde::Serialize for Shaky {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.0)?;
        assert!(self.0 != BOMB, "a panic in the middle of the encoding");
        t.serialize_element(&self.1)?;
        t.end()
    }
}

/// Process 0 sends process 1 a message, then panics in the same callback: after the send
/// (`bomb` false) or in the encoding of a second message (`bomb` true).
struct SendThenPanic {
    bomb: bool,
    received: Arc<std::sync::Mutex<Vec<u64>>>,
}

impl Process for SendThenPanic {
    type Message = Shaky;
    type State = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, Shaky>) {
        if ctx.id() == 0 {
            ctx.send(1, Shaky(42, 0)).unwrap();
            if self.bomb {
                let _ = ctx.send(1, Shaky(BOMB, 0));
            }
            panic!("after the send");
        }
    }
    fn on_message(&mut self, _: ProcessId, m: Shaky, _: &mut Context<'_, Shaky>) {
        self.received.lock().unwrap().push(m.0);
    }
    fn record(&self) -> u64 {
        0
    }
}

/// A send that returned `Ok` goes, even if its process panics later in the same batch, as in
/// the in-process runtime: across nodes the frame is staged until the batch ends, and before,
/// a panic skipped the hand-over, so the message was neither delivered nor counted as lost
/// or undelivered anywhere (found by a review). It reaches the receiver before the word of
/// the failure; and a panic in the middle of encoding a frame sends none of that frame (half
/// a frame would be garbage to the peer, which would fail this node).
#[test]
fn a_send_before_a_panic_is_delivered_across_nodes() {
    for bomb in [false, true] {
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let got = received.clone();
        let nodes = cluster(
            &Topology::complete(2),
            [[0], [1]],
            |b| {
                b.failure_timeout(Duration::from_secs(2))
                    .stop_timeout(Duration::from_secs(10))
            },
            move |_| SendThenPanic {
                bomb,
                received: got.clone(),
            },
        );
        wait_until("node 1 hears process 0 failed", || {
            !nodes[1].failures().is_empty()
        });
        // The message was ahead of the failure on the link: it is on process 1's channel.
        let deadline = Instant::now() + Duration::from_secs(10);
        while received.lock().unwrap().is_empty() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(*received.lock().unwrap(), [42], "bomb: {bomb}");
        let mut nodes = nodes.into_iter();
        let (zero, one) = (nodes.next().unwrap(), nodes.next().unwrap());
        let one = thread::spawn(move || one.wait_stopped(Duration::from_secs(30)));
        let zero = zero.shutdown().unwrap();
        let one = one.join().unwrap().unwrap();
        assert!(zero.lost.is_empty() && one.local.undelivered.is_empty());
        assert_eq!((zero.failed_nodes, one.failed_nodes), (vec![], vec![]));
        assert_eq!(*received.lock().unwrap(), [42], "bomb: {bomb}");
    }
}

/// A process whose recorded state is `Shaky(BOMB, 0)` if `bomb` (else `Shaky(0, 0)`): encoding it
/// panics midway.
struct RecordsABomb {
    bomb: bool,
}

impl Process for RecordsABomb {
    type Message = u64;
    type State = Shaky;
    fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {}
    fn record(&self) -> Shaky {
        Shaky(if self.bomb { BOMB } else { 0 }, 0)
    }
}

/// Two nodes of complete(2), one process each; process `bomb`'s state panics when encoded.
fn two_with_a_bomb(bomb: ProcessId) -> Vec<Node<RecordsABomb>> {
    cluster(
        &Topology::complete(2),
        [[0], [1]],
        |b| {
            b.failure_timeout(Duration::from_secs(2))
                .stop_timeout(Duration::from_secs(10))
        },
        move |p| RecordsABomb { bomb: p == bomb },
    )
}

/// A process whose state's `Serialize` panics while its snapshot part is encoded for another
/// node fails alone: the part's half-written frame is taken back, so the peer reads no
/// garbage. Before, the half frame stayed queued for the link, node 1 read "a malformed
/// frame", and in a cluster of two the rule failed node 1, the honest one (found by a review).
#[test]
fn a_panic_encoding_a_part_fails_the_process_not_a_node() {
    let nodes = two_with_a_bomb(0);
    assert!(nodes[1].snapshot(1).is_err(), "process 0 failed");
    wait_until("node 1 hears process 0 failed", || {
        !nodes[1].failures().is_empty()
    });
    thread::sleep(Duration::from_secs(3));
    for node in &nodes {
        assert!(node.failed_nodes().is_empty(), "{:?}", node.failed_nodes());
        let failed: Vec<ProcessId> = node.failures().iter().map(|f| f.process).collect();
        assert_eq!(failed, [0]);
    }
    let mut nodes = nodes.into_iter();
    let (zero, one) = (nodes.next().unwrap(), nodes.next().unwrap());
    let one = thread::spawn(move || one.wait_stopped(Duration::from_secs(30)));
    assert!(zero.shutdown().unwrap().failed_nodes.is_empty());
    assert!(one.join().unwrap().unwrap().failed_nodes.is_empty());
}

/// A process whose state's `Serialize` panics when its node's final report is encoded: the
/// stop says so and ends, and that node, which has both reports but could not send its own,
/// names the other as `unconfirmed`. Before, the stop thread panicked, the node's result never
/// came, and `shutdown` waited out twice the stop timeout.
#[test]
fn a_panic_encoding_the_final_report_ends_the_stop() {
    let nodes = two_with_a_bomb(1);
    let began = Instant::now();
    let mut nodes = nodes.into_iter();
    let (zero, one) = (nodes.next().unwrap(), nodes.next().unwrap());
    let one = thread::spawn(move || one.wait_stopped(Duration::from_secs(60)));
    let zero = zero.shutdown().unwrap();
    let one = one.join().unwrap().unwrap();
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "{:?}",
        began.elapsed()
    );
    assert!(zero.final_state().is_none() && zero.missing_reports() == [1]);
    assert_eq!(one.unconfirmed(), [0]);
}

/// A process whose state is `size` bytes.
struct Sized {
    size: usize,
}

impl Process for Sized {
    type Message = u8;
    type State = Vec<u8>;
    fn on_message(&mut self, _: ProcessId, _: u8, _: &mut Context<'_, u8>) {}
    fn record(&self) -> Vec<u8> {
        vec![1; self.size]
    }
}

/// A node whose final report is over the whole-frame limit cannot send it: it does not then
/// say it has every report (which the others would rightly refuse, coming before its report),
/// and names the other as `unconfirmed`. Before, node 1 said it anyway, and node 0 failed the
/// honest node 1 for "said it had every final report before sending its own" (found by a
/// review of this change).
#[test]
fn a_node_whose_report_cannot_be_encoded_does_not_say_it_has_them_all() {
    let nodes = cluster(
        &Topology::complete(2),
        [[0], [1]],
        |b| {
            b.max_frame_total(1024)
                .failure_timeout(Duration::from_secs(2))
                .stop_timeout(Duration::from_secs(8))
        },
        |p| Sized { size: 8 << (9 * p) },
    );
    let watch = nodes[0].clone();
    let mut nodes = nodes.into_iter();
    let (zero, one) = (nodes.next().unwrap(), nodes.next().unwrap());
    let one = thread::spawn(move || one.wait_stopped(Duration::from_secs(60)));
    let zero = zero.shutdown().unwrap();
    let one = one.join().unwrap().unwrap();
    assert_eq!(zero.missing_reports(), [1]);
    assert_eq!(one.unconfirmed(), [0]);
    let link = watch.stats().links.into_iter().find(|l| l.node == 1);
    let down = link.and_then(|l| l.down).unwrap_or_default();
    assert!(!down.contains("before sending its own"), "{down}");
}
