//! A cluster node's process driver: the runtime's [`Wire`] for channels between two processes
//! of this node, and for a channel to a process on another node, the envelope encoded on the
//! sending process's own thread and handed to that node's link.
//!
//! Encoding on the sender's thread is what lets a message that cannot be encoded be the
//! sender's error (`SendError::Unencodable`) rather than a writer's silent drop, and it spreads
//! the encoding over the process threads instead of one writer per link.

use std::sync::Arc;

use serde::Serialize;

use super::link::Outlink;
use super::wire::{self, Frame, FrameLimit, FrameOut};
use crate::envelope::{Envelope, Refused};
use crate::error::MarkerError;
use crate::host::Driver;
use crate::process::Process;
use crate::runtime::layer::{ThreadDriver, Wire, UNTIMED};
use crate::snapshot::{LocalSnapshot, SnapshotId};
use crate::topology::{ProcessId, Wiring};

/// Where one outgoing channel of a process goes when its receiver runs on another node.
#[derive(Clone, Copy)]
struct Remote {
    /// The receiver's node.
    node: u32,
    /// The channel's index in the topology.
    channel: u32,
    /// The receiving process.
    to: u32,
}

/// A run of markers for one node, not yet encoded: it ends what is staged for that node, and
/// the next marker of its snapshot on the channel after its last joins it.
///
/// Why not encoded at once: a process that records sends a marker on each of its channels in
/// turn, so a run to a node of k processes grows one marker at a time, k times. Encoded as it
/// grew, the frame was written k times and the shorter one cut out each time (k encodes and k
/// moves of the staged bytes): under perf at 3 nodes of 16 processes with 100 snapshots, about
/// a sixth of the CPU the snapshots added to the process threads. Now the run is written
/// once, when something else is staged for its node or the staged frames go to the link, so
/// every channel keeps its order.
#[derive(Clone, Copy)]
struct MarkerRun {
    /// Its first and last channel, and how many.
    first: u32,
    last: u32,
    count: u32,
    /// Its snapshot, and the process that started it.
    snapshot: SnapshotId,
    initiator: u32,
}

/// One process's driver on a cluster node.
pub(crate) struct NodeWire<P: Process> {
    wire: Wire<P>,
    /// By local outgoing channel: where it goes, if to another node.
    remote: Box<[Option<Remote>]>,
    /// This process's place among the node's own (its buffer in each link).
    local: usize,
    /// By node: the link to it (`None` for this node).
    links: Arc<[Option<Arc<Outlink>>]>,
    /// The frame limit every node reads with: a longer frame goes in pieces.
    frame: FrameLimit,
    /// By node: frames encoded since the last hand-over to the links.
    staged: Vec<Vec<u8>>,
    /// Envelopes the visits since the last hand-over took (`end_visit`).
    held: usize,
    /// Nodes with frames staged, or a run of markers.
    dirty: Vec<usize>,
    /// The snapshot whose markers this process is sending now, and its initiator (a marker
    /// for another node says where that node's parts go).
    marking: Option<(SnapshotId, u32)>,
    /// By node: the run of markers that ends its staged frames, not yet encoded (`MarkerRun`).
    runs: Vec<Option<MarkerRun>>,
    /// By channel: the next one of a run (`wire::next_in_run`).
    next_in_run: Arc<[Option<u32>]>,
    /// By process: its node.
    node_of: Arc<[usize]>,
    /// Whom to tell that a node sent a marker that breaks the rules (set once the node's
    /// links exist, before any process runs).
    refusals: Arc<Refusals>,
}

/// Where a process's driver reports a peer that broke the marker rules: the node fails its
/// link to that peer, as its reader does for bytes that break the wire's.
pub(crate) type Refusals = std::sync::OnceLock<Box<dyn Fn(usize, String) + Send + Sync>>;

impl<P: Process> NodeWire<P> {
    /// `wire`'s process, the `local`-th of its node's, with `node_of` saying where every process
    /// runs.
    pub(crate) fn new(
        wire: Wire<P>,
        wiring: &Wiring,
        node_of: &Arc<[usize]>,
        local: usize,
        links: Arc<[Option<Arc<Outlink>>]>,
        refusals: Arc<Refusals>,
        next_in_run: Arc<[Option<u32>]>,
    ) -> Self {
        let me = wire.me();
        let here = node_of[me];
        let remote = wiring
            .outgoing(me)
            .iter()
            .map(|&c| {
                let to = wiring.channels()[c].to;
                (node_of[to] != here).then(|| Remote {
                    node: node_of[to] as u32,
                    channel: c as u32,
                    to: to as u32,
                })
            })
            .collect();
        let frame = links
            .iter()
            .flatten()
            .next()
            .map_or(FrameLimit::pieces(wire::MAX_PIECE), |l| l.frame);
        NodeWire {
            wire,
            remote,
            local,
            frame,
            staged: vec![Vec::new(); links.len()],
            held: 0,
            runs: vec![None; links.len()],
            next_in_run,
            links,
            dirty: Vec::new(),
            marking: None,
            node_of: node_of.clone(),
            refusals,
        }
    }

    /// Encodes `envelope` for channel `remote`, into the node's staging buffer.
    ///
    /// Inlined into the send: as a call of its own, its entry and exit (saving and restoring
    /// registers) were 17 instructions of every message to another node, and inlined the
    /// send and encoding took 26 fewer (callgrind, 3 nodes x 16: BENCHMARKS.md, twenty-third
    /// round). A marker's way is a call, out of line.
    #[inline(always)]
    fn encode(
        &mut self,
        remote: Remote,
        envelope: Envelope<P::Message>,
    ) -> Result<(), Refused<P::Message>>
    where
        P::Message: Serialize,
        P::State: Serialize,
    {
        if self.wire.shared.bells[remote.to as usize].is_closed() {
            return Err(Refused::Disconnected(envelope));
        }
        let node = remote.node as usize;
        let was_empty = self.staged[node].is_empty() && self.runs[node].is_none();
        let encoded = match &envelope {
            Envelope::Message { seq, message } => {
                self.close_run(node);
                wire::encode_message(
                    &mut self.staged[node],
                    remote.channel,
                    seq.get(),
                    message,
                    self.frame,
                )
            }
            Envelope::Marker(id) => {
                // A marker dropped (its snapshot given up) stages nothing: no node to list.
                if !self.stage_marker(remote, node, *id) {
                    return Ok(());
                }
                Ok(())
            }
        };
        match encoded {
            Ok(()) => {
                if was_empty {
                    self.dirty.push(node);
                }
                Ok(())
            }
            Err(reason) => Err(Refused::Unencodable(envelope, reason)),
        }
    }

    /// Adds a marker of `id` on channel `remote` to the run for `node`, or starts a run with
    /// it. Returns `false` if it is dropped: the snapshot has been given up (a process failed)
    /// since this process recorded, and nobody waits for its markers.
    #[cold]
    #[inline(never)]
    fn stage_marker(&mut self, remote: Remote, node: usize, id: SnapshotId) -> bool {
        let Some((_, initiator)) = self.marking.filter(|&(marking, _)| marking == id) else {
            return false;
        };
        match &mut self.runs[node] {
            Some(run)
                if run.snapshot == id
                    && self.next_in_run[run.last as usize] == Some(remote.channel)
                    && run.count < u32::MAX =>
            {
                run.last = remote.channel;
                run.count += 1;
            }
            _ => {
                self.close_run(node);
                self.runs[node] = Some(MarkerRun {
                    first: remote.channel,
                    last: remote.channel,
                    count: 1,
                    snapshot: id,
                    initiator,
                });
            }
        }
        true
    }

    /// Writes the run of markers for `node`, if there is one, at the end of its staged frames.
    ///
    /// A run's frame cannot fail to encode: it is three numbers and an id, at most 33 bytes,
    /// and a node takes no bound on a whole frame under 64 (`NodeBuilder::max_frame_total`).
    /// So a marker has nothing to hand back when its run is written after its send returned.
    ///
    /// The test inline and the writing out of line: every message to another node comes by
    /// here, and almost never with a run open, so its cost is that of one compare.
    #[inline(always)]
    fn close_run(&mut self, node: usize) {
        if self.runs[node].is_some() {
            self.write_run(node);
        }
    }

    /// `close_run`'s writing, for a run that is open.
    #[cold]
    #[inline(never)]
    fn write_run(&mut self, node: usize) {
        let Some(run) = self.runs[node].take() else {
            return;
        };
        // The message and state types do not appear in this variant: its bytes are the same
        // whatever they are.
        let frame: FrameOut<'_, (), ()> = Frame::Markers {
            first: run.first,
            count: run.count,
            snapshot: run.snapshot,
            initiator: run.initiator,
        };
        if let Err(reason) = wire::encode_within(&mut self.staged[node], &frame, self.frame) {
            // Unreachable (above); were it not, the snapshot would end by its timeout.
            debug_assert!(false, "a run of markers does not encode: {reason}");
            log::error!(
                "process {}: a run of {} markers of snapshot {} for node {node} does not \
                 encode: {reason}",
                self.wire.me(),
                run.count,
                run.snapshot
            );
        }
    }

    /// The frames staged for other nodes go to their links, one hand-over per link; then, if
    /// a link holds more than its bound, this process waits for room (flow control: see
    /// `Outlink::wait_for_room`).
    #[inline]
    fn hand_over(&mut self) {
        self.held = 0;
        // Another link that is full too is waited for at the end of the next hand-over.
        if let Some(link) = self
            .append_staged()
            .and_then(|node| self.links[node].as_ref())
        {
            link.wait_for_room();
        }
    }

    /// Appends what is staged for each node (its run of markers written last) to that node's
    /// link, and returns a node whose link now holds more than its bound, if any.
    fn append_staged(&mut self) -> Option<usize> {
        let mut full = None;
        for k in 0..self.dirty.len() {
            let node = self.dirty[k];
            self.close_run(node);
            if let Some(link) = &self.links[node] {
                if link.append(self.local, &mut self.staged[node]) {
                    full = Some(node);
                }
            }
        }
        self.dirty.clear();
        full
    }
}

impl<P: Process> Driver<P> for NodeWire<P>
where
    P::Message: Serialize,
    P::State: Serialize,
{
    #[inline(always)]
    fn push(
        &mut self,
        slot: usize,
        envelope: Envelope<P::Message>,
    ) -> Result<(), Refused<P::Message>> {
        match self.remote[slot] {
            None => self.wire.push(slot, envelope),
            Some(remote) => self.encode(remote, envelope),
        }
    }

    fn recorded(&mut self, id: SnapshotId) {
        self.wire.recorded(id);
        // Its markers follow at once, in this turn; any for another node carries the initiator.
        self.marking = self
            .wire
            .shared
            .hub
            .initiator(id)
            .map(|initiator| (id, initiator as u32));
    }

    fn new_snapshot_id(&mut self) -> SnapshotId {
        self.wire.new_snapshot_id()
    }

    fn begin(&mut self, id: SnapshotId, initiator: ProcessId) -> bool {
        self.wire.begin(id, initiator)
    }

    fn snapshots_live(&self) -> bool {
        self.wire.snapshots_live()
    }

    fn part_complete(&mut self, part: LocalSnapshot<P::Message, P::State>) {
        self.wire.part_complete(part);
    }

    /// A marker from another node that breaks the rules fails the link to that node (its
    /// sender is to blame, not this process); one from this node's own processes is a bug.
    fn refused_marker(&mut self, from: ProcessId, error: MarkerError) {
        let (node, here) = (self.node_of[from], self.node_of[self.wire.me()]);
        match self.refusals.get() {
            Some(refuse) if node != here => refuse(node, format!("{error}, from process {from}")),
            _ => panic!("{error}"),
        }
    }
}

impl<P: Process> ThreadDriver<P> for NodeWire<P>
where
    P::Message: Serialize,
    P::State: Serialize,
{
    fn wire(&self) -> &Wire<P> {
        &self.wire
    }

    fn wire_mut(&mut self) -> &mut Wire<P> {
        &mut self.wire
    }

    /// The batch's frames for other nodes go to their links (`hand_over`).
    #[inline]
    fn end_batch(&mut self) {
        self.wire.end_batch();
        self.hand_over();
    }

    /// A visit's frames for other nodes wait for the round's end, or until the visits since the
    /// last hand-over have taken [`UNTIMED`] envelopes, or for the end of a visit that read the
    /// clock (its callbacks may be slow): under load a visit takes one or two envelopes, and a
    /// hand-over per round instead of per visit spares the links' locks, byte counts and
    /// doorbells. A frame so waits for at most `UNTIMED` further fast callbacks, about as long
    /// as the visit it came from could have taken on its own, so a marker is not held back
    /// behind slow work.
    #[inline]
    fn end_visit(&mut self, taken: usize, timed: bool) {
        self.wire.end_batch();
        self.held += taken;
        if timed || self.held >= UNTIMED {
            self.hand_over();
        }
    }

    /// What the round's visits held goes, and the count of envelopes held starts again (a
    /// round whose visits sent nothing to other nodes must not shorten the next round's wait).
    #[inline]
    fn end_round(&mut self) {
        self.hand_over();
    }

    /// The process panicked mid-batch: the batch's whole frames go to their links as
    /// `end_batch` would have handed them (its sends returned `Ok`, and in process they would
    /// be on their channels), before the node queues the word of the failure behind them on the
    /// same links (the writer takes the processes' buffers before the control frames). Not
    /// waiting for room: the process is gone, and this is at most a round's visits. A frame cut
    /// by a panic in its encoding is not there: the wire's encoding (`wire::frame_with`, under
    /// every frame) takes back what a panicking `Serialize` left (its send never returned).
    #[cold]
    fn unwound(&mut self) {
        // `dirty` names every node with frames or a run even here: a node is listed when
        // something is first staged for it, and a panic in encoding leaves nothing new staged.
        self.append_staged();
    }
}
