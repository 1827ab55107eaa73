//! One node of a cluster: a runtime running this node's processes, links to the other nodes,
//! and the handle ([`Node`]) to start snapshots, wait for them and stop the cluster.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::{Condvar, Mutex};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::config::ClusterConfig;
use super::driver::{NodeWire, Refusals};
use super::keys::NodeKeys;
use super::link::{self, Broke, InboxEnd, Inboxes, Inlet, LinkLimits, MarkerRun, Outlink, Refusal};
use super::membership::Membership;
use super::packed::{GlobalOut, PartOut};
use super::startup::{self, Connections};
use super::stopped::{ClusterStopped, Failed};
use super::wire::{self, Frame, FrameIn, FrameLimit, FrameOut, Hello, Report, WireError};
use crate::error::{BuildError, ClusterError, CollectError, Error};
use crate::process::{Context, Process, ProcessFailure};
use crate::restore::{self, ChannelStart};
use crate::runtime::layer::{
    inbox_bit, Backoff, Control, FinalCounters, MarkerRefused, Shared, Uplink,
};
use crate::runtime::{
    PendingSnapshot, Runtime, RuntimeBuilder, RuntimeStats, SnapshotEvent, Stopped, Undelivered,
};
use crate::snapshot::{GlobalSnapshot, LocalSnapshot, SnapshotId, SnapshotOutcome};
use crate::topology::{ProcessId, Topology, Wiring};

/// A process type that can run in a cluster: its messages and states cross the network, so
/// serde must be able to encode and decode them. Implemented for every such [`Process`].
pub trait NodeProcess:
    Process<Message: Serialize + DeserializeOwned, State: Serialize + DeserializeOwned>
{
}

impl<P> NodeProcess for P
where
    P: Process,
    P::Message: Serialize + DeserializeOwned,
    P::State: Serialize + DeserializeOwned,
{
}

/// How long start-up waits for every node by default.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long stopping waits for the other nodes by default.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a link may be silent by default before its peer is suspected.
const FAILURE_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a link's writer lets it be idle before it sends a heartbeat, for a failure
/// timeout of `timeout`: a fifth of it, so that a late heartbeat or two is not a failure.
fn heartbeat(timeout: Duration) -> Duration {
    timeout / 5
}

/// How many bytes may queue for one other node by default before its senders wait: a few
/// hundred milliseconds of the fastest link measured, far above what a closed loop keeps in
/// flight.
const MAX_QUEUED: usize = 16 << 20;

/// How many envelopes from another node a channel may hold by default before its reader holds
/// back.
const MAX_BACKLOG: usize = 1 << 16;

/// Configures and starts one node of a cluster; see [`Node::builder`].
pub struct NodeBuilder<P> {
    topology: Topology,
    config: ClusterConfig,
    node: usize,
    runtime: RuntimeBuilder<P>,
    listener: Option<TcpListener>,
    keys: Option<NodeKeys>,
    connect_timeout: Duration,
    stop_timeout: Duration,
    failure_timeout: Duration,
    max_frame: usize,
    max_frame_total: usize,
    max_queued: usize,
    max_backlog: usize,
    settings: String,
}

impl<P: NodeProcess> NodeBuilder<P> {
    /// What else every node must agree on: the application's own settings (its flags, say), in
    /// any form that is equal exactly when they agree. Start-up compares it as it compares the
    /// topology, and refuses a node whose settings differ, saying both (default: empty). The
    /// bank gives its initial balance and transfers in flight: one node started with another
    /// balance would otherwise look like money lost.
    pub fn settings(mut self, settings: impl Into<String>) -> Self {
        self.settings = settings.into();
        self
    }

    /// This node's keys (its key pair and the others' public keys), rather than the folder the
    /// cluster file names (`keys = "DIR"`). Every connection between nodes is authenticated
    /// with them; a node has to have them.
    pub fn keys(mut self, keys: NodeKeys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Listens on `listener` (already bound) rather than binding the node's address. Tests bind
    /// port 0 and write the port the system chose into the cluster's configuration.
    pub fn listener(mut self, listener: TcpListener) -> Self {
        self.listener = Some(listener);
        self
    }

    /// How long start-up waits for every node to answer (default 30 s). Nodes may start in
    /// any order; each retries until then, and then fails naming the nodes that never answered
    /// (`ClusterError::Unreachable`). A node connected to and from every other then tells
    /// them so and waits for each to say the same, and fails naming those that did not
    /// (`ClusterError::NotReady`): no node's processes start until every node is connected to
    /// every other. Having told the others, it waits until each has said it or given up (at
    /// most 10 s past this timeout): the others may already act on its word. A timeout longer
    /// than a century is taken as a century: waiting as long as it takes.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        // Start-up adds it to the time it began: capped, that cannot overflow an `Instant`.
        self.connect_timeout = timeout.min(crate::deadline::FOREVER);
        self
    }

    /// How long a link may stay silent before its peer is suspected (default 3 s; any frame
    /// counts, and an idle link carries a heartbeat every fifth of this). What a node does then
    /// is in `membership.rs`: the survivors agree who failed, as soon as two of them suspect
    /// the same node; else (one broken link, or a cluster of two) a quarter of this later when
    /// the connection closed, or nine twentieths later when it went silent (a quarter and a
    /// heartbeat: the survivors see silence up to a heartbeat apart). Every node must have the
    /// same: start-up refuses a node whose timeout differs (a node with a shorter one than a
    /// peer's would fail it for the peer's idle heartbeats).
    pub fn failure_timeout(mut self, timeout: Duration) -> Self {
        self.failure_timeout = timeout.max(Duration::from_millis(50));
        self
    }

    /// How long stopping the cluster waits for the other nodes (default 30 s).
    /// [`Node::shutdown`] (or the drop of the last handle) waits at most twice this for the
    /// node's result, counted from when the stop began. Any duration is accepted: a huge one
    /// waits as long as it takes.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// The longest piece of a frame this node accepts from another (default 64 MiB), the same
    /// on every node of a cluster (compared at start-up). An honest node sends a longer frame
    /// (a large snapshot part, outcome or message) in pieces under it, so this bounds what a
    /// peer's claimed length can make a reader set aside, not what can be sent. A peer that
    /// announces a longer piece is failed, before anything is allocated for it. Taken as at
    /// least 64 bytes and at most 2 GiB - 1.
    pub fn max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes.clamp(64, wire::MAX_PIECE);
        self
    }

    /// The longest whole frame this node assembles from another's pieces (default 1 GiB), the
    /// same on every node (compared at start-up): what one frame from a peer can cost this
    /// node's memory at most, however it is cut. A peer that sends more in one frame is failed;
    /// a process here whose message (or a snapshot part, an outcome) encodes longer gets
    /// [`SendError::Unencodable`](crate::SendError::Unencodable) rather than a send that the
    /// peer would refuse. Taken as at least 64 bytes.
    pub fn max_frame_total(mut self, bytes: usize) -> Self {
        self.max_frame_total = bytes.max(64);
        self
    }

    /// How many bytes may queue for one other node (default 16 MiB): past it, a process that sends
    /// more to that node, and has more than its share queued there (the bound divided among the
    /// node's processes), waits, at the end of its batch, until the link's writer has taken the
    /// queue down to half. (The queue passes the bound by at most a batch a process, and a process
    /// that sends that node little is not held back by one that floods it.) So a node that is
    /// slower than this one to take its messages (or a slow network) holds back the processes
    /// sending to it, rather than this node's memory growing without limit. The wait ends when the
    /// link drains, breaks (a peer that is not heard for the failure timeout), or the cluster
    /// stops; a wait in which nothing drains for the failure timeout is logged as a warning and
    /// shows in [`LinkStats::stalled_for`]: the peer is alive but reads nothing, and nodes holding
    /// each other back in a cycle can make that last until the stop (see
    /// [`max_backlog`](Self::max_backlog)). Control frames (snapshot parts and outcomes) are not
    /// held back. At least 64 KiB.
    pub fn max_queued(mut self, bytes: usize) -> Self {
        self.max_queued = bytes.max(64 << 10);
        self
    }

    /// How many envelopes from other nodes one of this node's processes may hold (default
    /// 65,536): in its inbox from other nodes, and parked for each channel once its callbacks
    /// are slow (so at most this many a channel, and this many more in the inbox). Past it,
    /// the connections that bring them are not read until the process has taken half, so a
    /// process slower than its senders holds them back across the network (their links fill,
    /// then they wait: see [`max_queued`](Self::max_queued)) instead of this node's memory
    /// growing. A peer that stops reading is not failed while its own frames keep arriving.
    ///
    /// It can deadlock: whenever nodes hold each other back in a cycle, each one's processes
    /// waiting for room on the link to the next while that node's reader holds back because
    /// its own processes wait for the one after (senders faster than their receivers all the
    /// way round: an open-loop flood around a ring of nodes; or two nodes flooding each other).
    /// Bounded memory, no loss and no deadlock cannot all hold for such a flood (the in-process
    /// runtime, unbounded, grows instead). Where every node of the cycle is still heard (its
    /// heartbeats, or traffic on the other connection), nothing is failed and nothing moves:
    /// each node logs a warning once its processes have waited the failure timeout with
    /// nothing taken, [`LinkStats::stalled_for`] shows it, callbacks and
    /// [`with_process`](Node::with_process) get no turn, and the stop ends it cleanly (every
    /// node's report comes; the messages in flight are in the final state). Where two nodes
    /// hold each other back with nothing else heard between them, their link breaks after the
    /// failure timeout and the higher of the two is failed. A closed loop (a bounded number of
    /// messages in flight, as the bank) never fills a cycle. At least 16.
    pub fn max_backlog(mut self, envelopes: usize) -> Self {
        self.max_backlog = envelopes.max(16);
        self
    }

    /// The most snapshots started from this node in flight at once: by its handle (whichever
    /// the initiator) or by its processes' code. See
    /// [`RuntimeBuilder::max_snapshots_in_flight`].
    pub fn max_snapshots_in_flight(mut self, limit: usize) -> Self {
        self.runtime = self.runtime.max_snapshots_in_flight(limit);
        self
    }

    /// Ticks for this node's processes (see [`RuntimeBuilder::tick_interval`]).
    pub fn tick_interval(mut self, interval: Duration) -> Self {
        self.runtime = self.runtime.tick_interval(interval);
        self
    }

    /// Names this node's process threads `{prefix}-{id}`.
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.runtime = self.runtime.thread_name(prefix);
        self
    }

    /// Starts this node: builds its processes with `make(id)` (called for this node's
    /// processes only), connects to every other node and waits until all are connected (see
    /// [`connect_timeout`](NodeBuilder::connect_timeout)). The processes' `on_start` runs once
    /// every node is connected.
    pub fn build(self, mut make: impl FnMut(ProcessId) -> P) -> Result<Node<P>, ClusterError> {
        let wiring = Arc::new(self.topology.validate().map_err(BuildError::from)?);
        let node_of = self.placement(&wiring)?;
        let apps = (0..wiring.processes())
            .map(|p| (node_of[p] == self.node).then(|| make(p)))
            .collect();
        self.start(wiring, node_of, apps, None, None)
    }

    /// Starts this node from a completed global snapshot (every node of the cluster restores
    /// from the same one: start-up compares a checksum of its id, times, counters and the
    /// numbers of the messages it recorded; not of the states and messages themselves, whose
    /// encoding need not be the same on two nodes, a hash map's order for one). Each of this
    /// node's processes is rebuilt with `rebuild(id, state)`; each channel into them starts
    /// with its recorded messages; counters continue, so later snapshots verify exactly.
    pub fn restore(
        self,
        snapshot: &GlobalSnapshot<P::Message, P::State>,
        mut rebuild: impl FnMut(ProcessId, &P::State) -> P,
    ) -> Result<Node<P>, ClusterError> {
        let wiring = Arc::new(self.topology.validate().map_err(BuildError::from)?);
        let node_of = self.placement(&wiring)?;
        let starts = restore::plan(&wiring, snapshot).map_err(BuildError::from)?;
        let apps = (0..wiring.processes())
            .map(|p| (node_of[p] == self.node).then(|| rebuild(p, &snapshot.states[p])))
            .collect();
        let checksum = checksum(snapshot);
        self.start(wiring, node_of, apps, Some(starts), Some(checksum))
    }

    /// By process, its node; checks the file against the topology and this node's index.
    fn placement(&self, wiring: &Wiring) -> Result<Vec<usize>, ClusterError> {
        let node_of = self.config.check(wiring.processes())?;
        if self.node >= self.config.nodes.len() {
            return Err(ClusterError::NoSuchNode {
                node: self.node,
                nodes: self.config.nodes.len(),
            });
        }
        Ok(node_of)
    }

    fn start(
        self,
        wiring: Arc<Wiring>,
        node_of: Vec<usize>,
        apps: Vec<Option<P>>,
        starts: Option<Vec<ChannelStart<P::Message>>>,
        checkpoint: Option<u64>,
    ) -> Result<Node<P>, ClusterError> {
        let me = self.node;
        let nodes = self.config.nodes.len();
        let keys = match (self.keys, &self.config.keys) {
            (Some(keys), _) => keys,
            (None, Some(dir)) => NodeKeys::load(dir, me, nodes)?,
            (None, None) => return Err(ClusterError::NoKeys),
        };
        if keys.node() != me || keys.nodes() != nodes {
            return Err(ClusterError::Keys {
                message: format!(
                    "the keys are node {}'s of a cluster of {}, not node {me}'s of {nodes}",
                    keys.node(),
                    keys.nodes()
                ),
            });
        }
        let listener = match self.listener {
            Some(listener) => listener,
            None => {
                let address = self.config.listen_address(me).to_string();
                TcpListener::bind(&address).map_err(|e| ClusterError::Bind {
                    node: me,
                    address,
                    message: e.to_string(),
                })?
            }
        };
        let local: Vec<ProcessId> = (0..wiring.processes())
            .filter(|&p| node_of[p] == me)
            .collect();
        let mut local_index = vec![usize::MAX; wiring.processes()];
        for (k, &p) in local.iter().enumerate() {
            local_index[p] = k;
        }
        let frame = FrameLimit {
            piece: self.max_frame,
            whole: self.max_frame_total,
        };
        let limits = LinkLimits {
            heartbeat: heartbeat(self.failure_timeout),
            frame,
            max_queued: self.max_queued,
            stall: self.failure_timeout,
        };
        let links: Arc<[Option<Arc<Outlink>>]> = (0..nodes)
            .map(|k| (k != me).then(|| Arc::new(Outlink::new(k, local.len(), limits))))
            .collect();
        // What the next message on each channel from elsewhere must be numbered.
        let next_seq: Vec<u64> = (0..wiring.channels().len())
            .map(|c| starts.as_ref().map_or(1, |s| s[c].sent + 1))
            .collect();
        let node_of: Arc<[usize]> = node_of.into();
        let next_in_run: Arc<[Option<u32>]> = wire::next_in_run(&wiring, &node_of).into();
        let refusals: Arc<Refusals> = Arc::default();
        let started = {
            let (wiring, node_of, links) = (wiring.clone(), node_of.clone(), links.clone());
            let (refusals, next_in_run) = (refusals.clone(), next_in_run.clone());
            // A writer and a reader per peer share the cores with the processes.
            let link_threads = 2 * (nodes - 1);
            let idle = move |processes: usize| Backoff::for_node_threads(processes + link_threads);
            self.runtime.start_part(
                wiring.clone(),
                apps,
                starts,
                idle,
                self.max_backlog,
                move |wire| {
                    let local = local_index[wire.me()];
                    NodeWire::new(
                        wire,
                        &wiring,
                        &node_of,
                        local,
                        links.clone(),
                        refusals.clone(),
                        next_in_run.clone(),
                    )
                },
            )?
        };
        let (runtime, from_elsewhere, gate) =
            (started.runtime, started.from_elsewhere, started.gate);
        runtime.shared().hub.connect(Arc::new(NodeUplink {
            node_of: node_of.clone(),
            links: links.clone(),
            wiring: wiring.clone(),
        }));
        let hello = Hello {
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            message_type: std::any::type_name::<P::Message>().to_string(),
            state_type: std::any::type_name::<P::State>().to_string(),
            node: me as u32,
            // Random: two starts of one node differ (start-up tells a restart by it).
            boot: uuid::Uuid::new_v4().as_u64_pair().0,
            settings: self.settings.clone(),
            processes: wiring.processes() as u32,
            channels: wiring
                .channels()
                .iter()
                .map(|c| (c.from as u32, c.to as u32))
                .collect(),
            placement: (0..nodes)
                .map(|k| {
                    (0..wiring.processes())
                        .filter(|&p| node_of[p] == k)
                        .map(|p| p as u32)
                        .collect()
                })
                .collect(),
            checkpoint,
            max_frame: self.max_frame as u64,
            max_frame_total: self.max_frame_total as u64,
            failure_timeout_ns: u64::try_from(self.failure_timeout.as_nanos()).unwrap_or(u64::MAX),
        };
        // On an error the gate is dropped unopened, so the threads end without running any
        // process code; then dropping the runtime joins them. (The other way round, the join
        // would wait for threads held at the gate.)
        let connections = match startup::connect(
            &self.config,
            me,
            &hello,
            &keys,
            &listener,
            self.connect_timeout,
        ) {
            Ok(connections) => connections,
            Err(e) => {
                drop(gate);
                return Err(e);
            }
        };
        let latecomers = startup::Latecomers::answer(listener, &hello, &keys, me, nodes);
        let mut inlets: Vec<Vec<Option<Inlet>>> = (0..nodes)
            .map(|_| (0..wiring.channels().len()).map(|_| None).collect())
            .collect();
        // The inboxes of the processes here with channels from others, each once; every
        // reader delivers to them all.
        let mut ends = Vec::new();
        let mut end_of: Vec<Option<usize>> = vec![None; wiring.processes()];
        // Numbered among the channels into this node from others (`Hub::learn_route`); each
        // knows the next one of a run of markers.
        for (from_others, (c, tx)) in from_elsewhere.into_iter().enumerate() {
            let channel = wiring.channels()[c];
            let (_, at) = wiring.local_slots(c);
            let inbox = *end_of[channel.to].get_or_insert_with(|| {
                let bit = inbox_bit(wiring.incoming(channel.to).len());
                ends.push(InboxEnd::new(channel.to, tx, bit));
                ends.len() - 1
            });
            inlets[node_of[channel.from]][c] = Some(Inlet::new(
                at,
                inbox,
                next_seq[c],
                (from_others, next_in_run[c]),
            ));
        }
        let core = Arc::new(Core {
            me,
            node_of,
            local,
            wiring,
            runtime,
            links: links.clone(),
            frame,
            max_backlog: self.max_backlog,
            stop_timeout: self.stop_timeout,
            failure_timeout: self.failure_timeout,
            membership: Mutex::new(Membership::new(nodes)),
            deciding: Mutex::new(()),
            ending: Mutex::new(Ending {
                stopping: None,
                note: Vec::new(),
                finished: (0..nodes).map(|k| k == me).collect(),
                reports: (0..nodes).map(|_| None).collect(),
                reported: vec![false; nodes],
                confirmed: (0..nodes).map(|k| k == me).collect(),
                broken: vec![None; nodes],
                broke_off: vec![false; nodes],
                result: None,
                taken: false,
            }),
            changed: Condvar::new(),
            latecomers,
        });
        // Weak: the processes' drivers hold this, and the core holds the processes.
        let weak = Arc::downgrade(&core);
        let _ = refusals.set(Box::new(move |peer, why| {
            if let Some(core) = weak.upgrade() {
                core.link_failed(peer, Broke::from(why));
            }
        }));
        let Connections { outgoing, incoming } = connections;
        let pairs = outgoing.into_iter().zip(incoming).zip(inlets).enumerate();
        let mut started = Ok(());
        for (peer, ((outgoing, incoming), inlets)) in pairs {
            let (Some((stream, transport)), Some(reader)) = (outgoing, incoming) else {
                continue;
            };
            let link = links[peer].clone().expect("a link to every other node");
            let writer_core = core.clone();
            started = spawn(format!("node-{me}-to-{peer}"), move || {
                let timeout = writer_core.failure_timeout;
                if let Err(broke) = link::write_loop(&link, stream, transport, timeout) {
                    let why = format!("writing failed: {}", broke.why);
                    writer_core.link_failed(peer, Broke { why, ..broke });
                }
            })
            .map(drop);
            if started.is_err() {
                break;
            }
            let reader_core = core.clone();
            let inboxes = Inboxes::new(ends.clone());
            started = spawn(format!("node-{me}-from-{peer}"), move || {
                if let Err(broke) = link::read_loop(&reader_core, peer, reader, (inlets, inboxes)) {
                    reader_core.link_failed(peer, broke);
                }
            })
            .map(drop);
            if started.is_err() {
                break;
            }
        }
        if let Err(e) = started {
            // The link threads already started hold the core: they must end rather than
            // heartbeat on for a node that never ran. The gate, dropped unopened, ends the
            // processes. Its port is let go at once, not when the last of them ends.
            core.let_go_of_links();
            core.latecomers.stop();
            return Err(e);
        }
        gate.open();
        Ok(Node {
            handle: Arc::new(Handle { core }),
        })
    }
}

/// Starts a link thread.
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, ClusterError> {
    thread::Builder::new().name(name).spawn(f).map_err(|e| {
        ClusterError::Build(BuildError::Spawn {
            process: usize::MAX,
            message: format!("a link thread: {e}"),
        })
    })
}

/// A snapshot's checksum, for nodes to check they restore from the same one: FNV-1a over what
/// identifies it and encodes the same on every node (its id, initiator, times and every
/// channel's counters and recorded sequence numbers), not over the states and messages, whose
/// encoding need not be deterministic (a `HashMap` in a state encodes in its own order on each
/// node). The channels are taken in (from, to) order, not the file's: restoring matches them by
/// channel, so two files listing the same channels in another order are the same checkpoint.
fn checksum<M, S>(snapshot: &GlobalSnapshot<M, S>) -> u64 {
    let mut channels: Vec<(usize, usize, u64, u64, Vec<u64>)> = snapshot
        .channels
        .iter()
        .map(|c| {
            let seqs = c.messages.iter().map(|m| m.seq).collect();
            (c.channel.from, c.channel.to, c.sent, c.received, seqs)
        })
        .collect();
    // Restoring refused a channel listed twice: (from, to) orders them all.
    channels.sort_unstable_by_key(|&(from, to, ..)| (from, to));
    let identity = (
        snapshot.id,
        snapshot.initiator,
        snapshot.started_at,
        snapshot.completed_at,
        &snapshot.recorded_at,
        snapshot.states.len(),
        channels,
    );
    let mut bytes = Vec::new();
    if wire::encode(&mut bytes, &identity).is_err() {
        return 0;
    }
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The hub's links to the other nodes (see `Uplink`): parts go to their initiator's node,
/// outcomes to the node that asked, failures to everyone.
struct NodeUplink {
    node_of: Arc<[usize]>,
    links: Arc<[Option<Arc<Outlink>>]>,
    /// The cluster's channels, in whose order outcomes travel.
    wiring: Arc<Wiring>,
}

impl NodeUplink {
    fn link(&self, node: usize) -> Option<&Outlink> {
        self.links.get(node).and_then(|l| l.as_deref())
    }
}

impl<M: Serialize, S: Serialize> Uplink<M, S> for NodeUplink {
    fn part(&self, initiator: ProcessId, part: LocalSnapshot<M, S>, recorded_before: Duration) {
        let Some(link) = self.link(self.node_of[initiator]) else {
            return;
        };
        let frame: FrameOut<'_, M, S> = Frame::Part {
            recorded_before,
            part: PartOut::new(&part),
        };
        if let Err(reason) = link.send(&frame) {
            log::error!(
                "process {}: its part of snapshot {} cannot be encoded: {reason}",
                part.process,
                part.id
            );
            let lost: FrameOut<'_, M, S> = Frame::PartLost {
                snapshot: part.id,
                process: part.process as u32,
                reason,
            };
            let _ = link.send(&lost);
        }
    }

    fn outcome(&self, node: usize, event: &SnapshotEvent<M, S>) {
        let Some(link) = self.link(node) else {
            return;
        };
        let frame: FrameOut<'_, M, S> = Frame::Outcome {
            snapshot: event.id,
            outcome: event
                .outcome
                .as_ref()
                .map(|s| GlobalOut::new(s, self.wiring.channels()))
                .map_err(WireError::from),
        };
        if let Err(reason) = link.send(&frame) {
            let failed: FrameOut<'_, M, S> = Frame::Outcome {
                snapshot: event.id,
                outcome: Err(WireError::Other(format!(
                    "the snapshot cannot be encoded: {reason}"
                ))),
            };
            let _ = link.send(&failed);
        }
    }

    fn failed(&self, process: ProcessId, message: &str) {
        let frame: FrameOut<'_, M, S> = Frame::Failed {
            process: process as u32,
            message: message.to_string(),
        };
        for link in self.links.iter().flatten() {
            let _ = link.send(&frame);
        }
    }
}

/// How the cluster's stop is going, as this node sees it.
struct Ending<P: Process> {
    /// Set when the stop begins (asked here, or by another node), to when a caller waiting
    /// for its result gives up: twice the stop timeout later. One bound for the whole stop,
    /// however many callers wait (`shutdown`, then the drop of the handle it consumed), so that
    /// together they wait no longer than that.
    stopping: Option<Instant>,
    /// The note of whoever stopped the cluster.
    note: Vec<u8>,
    /// By node: it has said `Finished` (this node's own entry: true).
    finished: Vec<bool>,
    /// By node: its final report, until the result takes it.
    reports: Vec<Option<Report<P::Message, P::State>>>,
    /// By node: its final report has come.
    reported: Vec<bool>,
    /// By node: it has said it has every node's report (`Frame::HaveAll`; this node's own
    /// entry: true).
    confirmed: Vec<bool>,
    /// By node: its link failed, and why.
    broken: Vec<Option<String>>,
    /// By node: its link failed during the stop, before it had said all it had to (finished
    /// and reported). The membership rule no longer runs then (the nodes are parting), so this
    /// node counts it failed itself, in the result (`end`).
    broke_off: Vec<bool>,
    /// The node's result, once stopped.
    result: Option<Result<ClusterStopped<P>, ClusterError>>,
    /// The result has been handed to a caller.
    taken: bool,
}

/// What a node's threads and handles share.
pub(crate) struct Core<P: Process> {
    me: usize,
    /// By process: its node.
    node_of: Arc<[usize]>,
    /// This node's processes, increasing.
    local: Vec<ProcessId>,
    wiring: Arc<Wiring>,
    runtime: Runtime<P>,
    pub(crate) links: Arc<[Option<Arc<Outlink>>]>,
    /// The longest frame (piece, and whole) accepted from a peer.
    pub(crate) frame: FrameLimit,
    /// Envelopes a process's inbox from other nodes may hold before its readers hold back
    /// (and that each channel may have parked).
    pub(crate) max_backlog: usize,
    stop_timeout: Duration,
    /// How long a link may be silent before its peer is suspected.
    pub(crate) failure_timeout: Duration,
    /// Who suspects whom, who has failed (`membership.rs`); and whether a decision is due.
    membership: Mutex<Membership>,
    /// Held while a decision is applied: whoever sees a node decided failed
    /// (`failed_nodes`) also sees what follows from it (its processes failed, its link
    /// closed), and two decisions do not interleave. Taken before `membership`, never after.
    deciding: Mutex<()>,
    ending: Mutex<Ending<P>>,
    changed: Condvar,
    /// Tells nodes that connect while the cluster runs that it does, until the node stops.
    latecomers: startup::Latecomers,
}

impl<P: Process> Core<P> {
    pub(crate) fn shared(&self) -> &Shared<P> {
        self.runtime.shared()
    }

    /// Whether the cluster's stop has begun (here or on another node).
    pub(crate) fn is_stopping(&self) -> bool {
        self.ending.lock().stopping.is_some()
    }

    /// Whether `peer` has said all it had to (finished, reported, and confirmed it has every
    /// report): its connection may close.
    pub(crate) fn peer_done(&self, peer: usize) -> bool {
        let ending = self.ending.lock();
        ending.finished[peer] && ending.reported[peer] && ending.confirmed[peer]
    }

    /// The link with `peer` has failed (closed, a read or write failed, or nothing arrived
    /// for the failure timeout). While the cluster stops, it is noted, and stopping does not
    /// wait for that peer. Before, this node suspects the peer, tells the others, and a while
    /// later decides with what it has heard who failed (`suspect`, `membership.rs`).
    pub(crate) fn link_failed(self: &Arc<Self>, peer: usize, broke: Broke) {
        let Broke { why, silent } = broke;
        let stopping = {
            let mut ending = self.ending.lock();
            let reported = ending.finished[peer] && ending.reported[peer];
            if reported && ending.confirmed[peer] {
                return;
            }
            if ending.broken[peer].is_some() {
                return;
            }
            ending.broken[peer] = Some(why.clone());
            self.changed.notify_all();
            if reported {
                // It parted after its report, without saying it had every node's (it gave up
                // on another): not failed, but not waited for either (`unconfirmed`).
                return;
            }
            // It broke off with its report unsaid.
            ending.broke_off[peer] = ending.stopping.is_some();
            ending.stopping.is_some()
        };
        log::error!("node {}: the link with node {peer} failed: {why}", self.me);
        if let Some(link) = &self.links[peer] {
            link.put_down();
        }
        if !stopping {
            self.suspect(self.me, peer, &why, silent);
        }
    }

    /// How long a node waits after a new suspicion before it decides, so that the other
    /// survivors' word on the same failure has come (`membership.rs`). A node that dies closes
    /// its connections, and every survivor sees that within moments of the others: a quarter
    /// of the failure timeout is plenty. A node that falls silent (its machine frozen, its
    /// network cut) is seen by each survivor when its own read times out, the failure timeout
    /// after the last frame it had; those frames were up to a heartbeat apart (an idle link
    /// carries one every fifth of the timeout), so the survivors suspect up to a heartbeat
    /// apart, and the wait is a heartbeat longer. Without that, the first survivor to suspect
    /// could decide alone, see one broken link, and fail the higher end of it: itself, when
    /// the silent node is the lower. Another node's report does not say how it saw the
    /// failure, so it is waited for as silence: that only ever delays a decision.
    fn decision_wait(&self, by: usize, silent: bool) -> Duration {
        let quarter = self.failure_timeout / 4;
        if by == self.me && !silent {
            quarter
        } else {
            quarter + heartbeat(self.failure_timeout)
        }
    }

    /// Node `by` suspects `node` (this node itself, or as another node reported; `silent`: the
    /// suspicion is this node's own and came from silence, see `decision_wait`). This node's
    /// own suspicions go to every node it can still reach; each new suspicion arms a decision
    /// `decision_wait` later (by then the others' reports of the same failure have come).
    pub(crate) fn suspect(self: &Arc<Self>, by: usize, node: usize, why: &str, silent: bool) {
        let wait = self.decision_wait(by, silent);
        let ripe_at = self.runtime.elapsed().saturating_add(wait);
        let corroborated = {
            let mut membership = self.membership.lock();
            if !membership.suspect(by, node, ripe_at) {
                return;
            }
            membership.corroborated(node)
        };
        log::warn!("node {}: node {by} suspects node {node}: {why}", self.me);
        if by == self.me {
            let frame: Frame<(), (), (), ()> = Frame::Suspect {
                node: node as u32,
                reason: why.to_string(),
            };
            for link in self.links.iter().flatten() {
                if link.peer != node && !link.is_broken() {
                    let _ = link.send(&frame);
                }
            }
        }
        // Two nodes that have not failed suspect `node`: rule 1 fails it whenever the rule is
        // applied, so it is applied now (on a thread of its own, as the timed one: this may be
        // a process's thread), and the wait is only for what is still unknown.
        let core = self.clone();
        let spawned = thread::Builder::new()
            .name(format!("node-{}-decides", self.me))
            .spawn(move || {
                if corroborated {
                    core.decide();
                }
                thread::sleep(wait);
                core.decide();
            });
        if spawned.is_err() {
            // No timer: decided now, on this suspicion too, as at the stop.
            self.decide_at(Duration::MAX);
        }
    }

    /// Applies the membership rule to what this node knows now, and acts on what it decides:
    /// a failed peer's processes count as failed (every snapshot that needs them fails, sends
    /// to them are refused) and its link is closed; if this node itself is failed, its own
    /// processes fail and every link is closed.
    fn decide(&self) {
        self.decide_at(self.runtime.elapsed());
    }

    /// `decide`, counting the suspicions ripe at `now` (`Duration::MAX`: every one).
    fn decide_at(&self, now: Duration) {
        let _deciding = self.deciding.lock();
        let mut failed = self.membership.lock().decide(now);
        // This node first, if it is failed: its word goes out on every link before any of
        // them closes (below), or the nodes whose links closed first would not have it.
        failed.sort_by_key(|&node| node != self.me);
        for node in failed {
            let processes: Vec<ProcessId> = (0..self.node_of.len())
                .filter(|&p| self.node_of[p] == node)
                .collect();
            let reason = if node == self.me {
                "this node: the others cannot hear it, it cannot hear them, or too few nodes are left \
                 to run on (not a majority of the cluster)"
                    .to_string()
            } else {
                let ending = self.ending.lock();
                ending.broken[node]
                    .clone()
                    .unwrap_or_else(|| "other nodes cannot reach it".to_string())
            };
            log::error!(
                "node {}: node {node} has failed ({reason}); its processes {processes:?} with it",
                self.me
            );
            let error = Error::NodeFailed {
                node,
                processes: processes.clone(),
                reason: reason.clone(),
            };
            self.shared()
                .node_failed(&processes, &format!("node {node} failed: {reason}"), error);
            let closing: Vec<usize> = if node == self.me {
                // Said to every node still reachable before the links close: a node that sees
                // a link close without it would suspect this one alone, and might fail itself.
                let said: Frame<(), (), (), ()> = Frame::Suspect {
                    node: self.me as u32,
                    reason: reason.clone(),
                };
                for link in self.links.iter().flatten() {
                    if !link.is_broken() {
                        let _ = link.send(&said);
                    }
                }
                (0..self.links.len()).filter(|&k| k != self.me).collect()
            } else {
                vec![node]
            };
            let mut ending = self.ending.lock();
            for k in closing {
                if ending.broken[k].is_none() {
                    ending.broken[k] = Some(format!("node {node} failed"));
                }
                if let Some(link) = &self.links[k] {
                    link.close();
                }
            }
            self.changed.notify_all();
        }
    }

    /// The nodes decided failed so far.
    pub(crate) fn failed_nodes(&self) -> Vec<usize> {
        let _decided = self.deciding.lock();
        let membership = self.membership.lock();
        (0..self.links.len())
            .filter(|&k| membership.is_failed(k))
            .collect()
    }
}

impl<P: NodeProcess> Core<P> {
    /// A run of markers of `snapshot`, started by `initiator`, came from `peer`: one on each
    /// of `run.channels`, which are the `run.remotes`-th channels into this node from others.
    pub(crate) fn markers_from(
        &self,
        peer: usize,
        run: &MarkerRun,
        snapshot: SnapshotId,
        initiator: ProcessId,
    ) -> Result<(), Refusal> {
        let Some(&node) = self.node_of.get(initiator) else {
            return Err(format!(
                "a marker from node {peer} names process {initiator}, which does not exist"
            ));
        };
        self.shared()
            .hub
            .learn_route(snapshot, initiator, node == self.me, &run.remotes)
            .map_err(|e| match e {
                MarkerRefused::Snapshot(CollectError::DuplicateSnapshot(id)) => format!(
                    "a marker from node {peer} of snapshot {id}, whose every part here is done \
                     (no honest marker of it can still come)"
                ),
                MarkerRefused::Snapshot(e) => format!("a marker from node {peer}: {e}"),
                MarkerRefused::Again(at) => format!(
                    "a second marker from node {peer} of snapshot {snapshot} on channel {} \
                     (an honest node sends one)",
                    run.channels[at]
                ),
            })
    }

    /// Acts on a frame from `peer` other than a message or a marker.
    pub(crate) fn control_from(
        self: &Arc<Self>,
        peer: usize,
        frame: FrameIn<P::Message, P::State>,
    ) -> Result<(), Refusal> {
        let shared = self.shared();
        let here = |process: u32| self.node_of.get(process as usize) == Some(&self.me);
        let theirs = |process: u32| self.node_of.get(process as usize) == Some(&peer);
        match frame {
            Frame::Start {
                snapshot,
                initiator,
            } => {
                if !here(initiator) {
                    return Err(format!(
                        "node {peer} asked process {initiator}, not run here, to start a snapshot"
                    ));
                }
                let p = initiator as usize;
                let begun = shared.hub.begin_for(snapshot, p, peer).map_err(|_| {
                    format!(
                        "node {peer} asked for snapshot {snapshot}, an id already used here \
                         (a replay: an honest node picks a fresh one)"
                    )
                })?;
                match begun {
                    Ok(()) => {
                        if let Err(e) = shared.control(p, Control::StartSnapshot(snapshot)) {
                            shared.hub.withdraw(snapshot, e);
                        }
                    }
                    Err(e) => {
                        let outcome: FrameOut<'_, P::Message, P::State> = Frame::Outcome {
                            snapshot,
                            outcome: Err(WireError::from(&e)),
                        };
                        if let Some(link) = &self.links[peer] {
                            let _ = link.send(&outcome);
                        }
                    }
                }
            }
            Frame::Watch { snapshot } => {
                if let Err(e) = shared.hub.watch_for(snapshot, peer) {
                    let outcome: FrameOut<'_, P::Message, P::State> = Frame::Outcome {
                        snapshot,
                        outcome: Err(WireError::from(&e)),
                    };
                    if let Some(link) = &self.links[peer] {
                        let _ = link.send(&outcome);
                    }
                }
            }
            Frame::Part {
                recorded_before,
                part,
            } => {
                // By the whole number: cast to `u32`, a process past it would pass for another.
                if self.node_of.get(part.process()) != Some(&peer) {
                    return Err(format!(
                        "node {peer} sent a part of process {}, which it does not run",
                        part.process()
                    ));
                }
                let part = part
                    .unpack()
                    .map_err(|e| format!("a part from node {peer}: {e}"))?;
                shared
                    .hub
                    .submit_remote(part, recorded_before)
                    .map_err(|e| format!("a part from node {peer}: {e}"))?;
            }
            Frame::PartLost {
                snapshot,
                process,
                reason,
            } => {
                // Only a process's own node can say its part is lost.
                if !theirs(process) {
                    return Err(format!(
                        "node {peer} said the part of process {process}, which it does not run, could not be sent"
                    ));
                }
                shared.hub.withdraw(
                    snapshot,
                    Error::Cluster(format!(
                        "the part of process {process} could not be sent: {reason}"
                    )),
                );
            }
            Frame::Outcome { snapshot, outcome } => {
                // Only the node that assembles a snapshot (its initiator's) knows its outcome.
                // One this node no longer waits for (it ended here first: a failure, the
                // stop) is dropped below, once its sender is checked.
                if let Some(initiator) = shared.hub.awaited_from(snapshot) {
                    if !theirs(initiator as u32) {
                        return Err(format!(
                            "node {peer} sent the outcome of snapshot {snapshot}, assembled on node {}",
                            self.node_of[initiator]
                        ));
                    }
                }
                let outcome = match outcome {
                    Ok(global) => Ok(global
                        .unpack_outcome(snapshot, self.wiring.channels(), self.wiring.processes())
                        .map_err(|e| {
                            format!("node {peer} sent the outcome of snapshot {snapshot}: {e}")
                        })?),
                    Err(e) => Err(Error::from(e)),
                };
                shared.hub.finish_elsewhere(snapshot, outcome);
            }
            Frame::Failed { process, message } => {
                if !theirs(process) {
                    return Err(format!(
                        "node {peer} reported a failure of process {process}, which it does not run"
                    ));
                }
                shared.process_failed_elsewhere(process as usize, message);
            }
            Frame::Heartbeat => {}
            Frame::Suspect { node, reason } => {
                if node as usize >= self.links.len() {
                    return Err(format!(
                        "node {peer} suspects node {node}, which does not exist"
                    ));
                }
                if node as usize == peer {
                    // The peer says it has failed itself: so it has, now, before its links
                    // close (see `Membership::said_failed`).
                    log::warn!("node {}: node {peer} says it has failed: {reason}", self.me);
                    if self.membership.lock().said_failed(peer) {
                        self.decide();
                    }
                } else {
                    self.suspect(peer, node as usize, &reason, false);
                }
            }
            Frame::Shutdown { note } => {
                self.begin_end(note);
            }
            Frame::Finished => {
                self.ending.lock().finished[peer] = true;
                self.changed.notify_all();
            }
            Frame::Report(report) => {
                self.check_report(peer, &report)?;
                let mut ending = self.ending.lock();
                ending.reports[peer] = Some(report);
                ending.reported[peer] = true;
                self.changed.notify_all();
            }
            Frame::HaveAll => {
                let mut ending = self.ending.lock();
                // An honest node sends it after its own report, on the same link.
                if !ending.reported[peer] {
                    return Err(format!(
                        "node {peer} said it had every final report before sending its own"
                    ));
                }
                ending.confirmed[peer] = true;
                self.changed.notify_all();
            }
            Frame::Message { .. } | Frame::Markers { .. } => {
                unreachable!("the reader delivers messages and markers itself")
            }
        }
        Ok(())
    }

    /// Refuses a final report from `peer` that speaks for what it does not run: a process of
    /// another node, a channel into or out of one, or counts that do not fit (`received` plus
    /// the messages still on the channel past the largest count). Each node's report says only
    /// what it owns, so one that does not cannot overwrite another node's.
    fn check_report(
        &self,
        peer: usize,
        report: &Report<P::Message, P::State>,
    ) -> Result<(), Refusal> {
        let theirs = |p: usize| self.node_of.get(p) == Some(&peer);
        let channel = |c: u32| self.wiring.channels().get(c as usize).copied();
        if let Some((p, ..)) = report.processes.iter().find(|(p, ..)| !theirs(*p as usize)) {
            return Err(format!(
                "node {peer}'s final report speaks for process {p}, which it does not run"
            ));
        }
        for (c, received, left) in &report.incoming {
            match channel(*c) {
                Some(ch) if theirs(ch.to) => {}
                _ => return Err(format!("node {peer}'s final report names channel {c}, which runs into none of its processes")),
            }
            // The messages left are numbered from `received + 1` on: the last must fit too.
            if received.checked_add(left.len() as u64 + 1).is_none() {
                return Err(format!("node {peer}'s final report counts {received} messages received on channel {c}, with {} more", left.len()));
            }
        }
        if let Some((c, _)) = report
            .outgoing
            .iter()
            .find(|(c, _)| !channel(*c).is_some_and(|ch| theirs(ch.from)))
        {
            return Err(format!("node {peer}'s final report names channel {c}, which runs out of none of its processes"));
        }
        Ok(())
    }

    /// Puts every link down and lets every process waiting for room go on: the link threads
    /// end (the peers see the connections close), and with the last of them the node's
    /// memory. For a node that failed to start, or to stop.
    fn let_go_of_links(&self) {
        for link in self.links.iter().flatten() {
            link.put_down();
            link.release();
        }
    }

    /// Begins stopping the cluster, once: `note` is for every node. Returns when a caller
    /// waiting for the stop's result gives up (`Ending::stopping`), whether the stop began now
    /// or before.
    fn begin_end(self: &Arc<Self>, note: Vec<u8>) -> Instant {
        let bound = {
            let mut ending = self.ending.lock();
            if let Some(bound) = ending.stopping {
                return bound;
            }
            // Twice: the stop thread gives up after one stop timeout, and the margin leaves it
            // the time to say so (its error names who was too slow) before the callers give up.
            let bound = crate::deadline::deadline_after(self.stop_timeout.saturating_mul(2));
            ending.stopping = Some(bound);
            ending.note = note.clone();
            bound
        };
        // Processes held back by a full link stop waiting: they are about to stop, and the
        // stop must not wait for a slow peer to drain what they queued.
        for link in self.links.iter().flatten() {
            link.release();
        }
        let core = self.clone();
        let spawned = thread::Builder::new()
            .name(format!("node-{}-stop", self.me))
            .spawn(move || {
                // A stopping node no longer says the cluster runs: a new start of the whole
                // cluster, begun while this node stops, waits for its port instead.
                core.latecomers.stop();
                let result = core.end(note);
                if result.is_err() {
                    // A stop that failed (a process or a peer too slow for the stop timeout)
                    // still lets go of the links.
                    core.let_go_of_links();
                }
                core.ending.lock().result = Some(result);
                core.changed.notify_all();
            });
        if let Err(e) = spawned {
            self.ending.lock().result = Some(Err(ClusterError::Build(BuildError::Spawn {
                process: usize::MAX,
                message: format!("the thread that stops the node: {e}"),
            })));
            self.changed.notify_all();
        }
        bound
    }

    /// Stops this node's part of the cluster: its processes, then its links once every other
    /// node has said all it had to; returns the node's result.
    fn end(&self, note: Vec<u8>) -> Result<ClusterStopped<P>, ClusterError> {
        let deadline = crate::deadline::deadline_after(self.stop_timeout);
        let others = || self.links.iter().flatten();
        // Every node passes the stop on, not only the one it was asked on: a node whose link
        // to that one is down hears it from the others (a node hears it at most once per
        // peer, and acts on the first).
        let frame: FrameOut<'_, P::Message, P::State> = Frame::Shutdown { note: note.clone() };
        for link in others() {
            let _ = link.send(&frame);
        }
        // This node's own processes, not a link: said as such (it read as a link to itself).
        let exits = self
            .runtime
            .stop_threads(Some(deadline))
            .map_err(ClusterError::Processes)?;
        // Every process here has stopped: nothing more will be queued for any channel. The
        // writer writes what is left, then this.
        let finished: FrameOut<'_, P::Message, P::State> = Frame::Finished;
        for link in others() {
            let _ = link.send(&finished);
        }
        self.wait_for(deadline, |e, k| e.finished[k])?;
        let (stopped, counters) = self.runtime.collect(exits);
        let report = self.report(&stopped, &counters);
        let frame: FrameOut<'_, P::Message, P::State> = Frame::Report(&report);
        // Encoding it runs the application's `Serialize` of every state and message left: one
        // that panics is said as the failure it is, not a stop thread gone (whose result would
        // never come).
        let mut report_out = true;
        for link in others() {
            let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| link.send(&frame)))
                .unwrap_or_else(|panic| {
                    Err(format!(
                        "encoding it panicked: {}",
                        crate::process::panic_message(&*panic)
                    ))
                });
            if let Err(reason) = sent {
                log::error!(
                    "node {}: its final report cannot be encoded: {reason}",
                    self.me
                );
                // The same report to every node: the same fault.
                report_out = false;
                break;
            }
        }
        let waited = self.wait_for(deadline, |e, k| e.reported[k]);
        let every_report = {
            let ending = self.ending.lock();
            (0..self.links.len()).all(|k| k == self.me || ending.reported[k])
        };
        // Said only by a node whose own report went out too: the others check it came first.
        if every_report && report_out {
            // Every report here: say so, and hear the others say it. A node that stopped
            // waiting for one (this one held up past its failure timeout, say) says the cluster
            // has no final state; this node's result then names it (`unconfirmed`), rather than
            // have the two tell the user two different things without a word.
            let have_all: FrameOut<'_, P::Message, P::State> = Frame::HaveAll;
            for link in others() {
                let _ = link.send(&have_all);
            }
            let _ = self.wait_for(deadline, |e, k| e.confirmed[k]);
        }
        // Then wait for every writer to have written all (the report to the others
        // included): the caller may exit its process as soon as this returns.
        for link in others() {
            link.close();
        }
        for link in others() {
            if !link.wait_written(deadline) {
                log::warn!(
                    "node {}: the link to node {} was not written out in time",
                    self.me,
                    link.peer
                );
            }
        }
        waited?;
        // A suspicion whose decision is still due (the stop came within `decision_wait` of a
        // link breaking) is decided now: the result says who failed whichever
        // came first, the stop or the decision.
        self.decide_at(Duration::MAX);
        // And a node whose link broke during the stop, before its report came, failed as far
        // as this node can tell: what was queued for it is lost, and the result says so. (Its
        // processes are not counted failed: they may have stopped cleanly; `missing_reports`
        // says their final states never came.)
        let mut failed_nodes = self.failed_nodes();
        let broke_off = self.ending.lock().broke_off.clone();
        failed_nodes.extend((0..broke_off.len()).filter(|&k| broke_off[k]));
        failed_nodes.sort_unstable();
        failed_nodes.dedup();
        let lost = self.lost(&failed_nodes);
        // Taken one by one, so that the vector keeps its length for a reader that is late.
        let mut reports: Vec<_> = self
            .ending
            .lock()
            .reports
            .iter_mut()
            .map(Option::take)
            .collect();
        reports[self.me] = Some(report);
        // Only a node with every report has a verdict the others may not share (with its own
        // report not sent, none of them can have said they have every report).
        let unconfirmed = if every_report {
            let ending = self.ending.lock();
            (0..self.links.len())
                .filter(|&k| !ending.confirmed[k] && !failed_nodes.contains(&k))
                .collect()
        } else {
            Vec::new()
        };
        let failed = Failed {
            unconfirmed,
            nodes: failed_nodes,
            known: self.runtime.failures(),
            lost,
        };
        Ok(ClusterStopped::assemble(
            stopped,
            &self.wiring,
            reports,
            note,
            failed,
        ))
    }

    /// The messages this node's processes sent to a node that failed and that never left this
    /// node, by channel: queued for its link when it failed, or taken by the link's writer and
    /// not written in a whole encrypted message (the peer cannot have opened those). Those
    /// written whole before the failure went with the node: nobody can say whether it handled
    /// them.
    fn lost(&self, failed_nodes: &[usize]) -> Vec<Undelivered<P::Message>> {
        let mut lost: Vec<Undelivered<P::Message>> = Vec::new();
        for &k in failed_nodes {
            let Some(link) = self.links.get(k).and_then(|l| l.as_ref()) else {
                continue;
            };
            let bytes = link.take_unsent();
            let mut rest = &bytes[..];
            let mut frame = Vec::new();
            while wire::read_frame(&mut rest, &mut frame, FrameLimit::pieces(usize::MAX)).is_ok() {
                let Ok(Frame::Message {
                    channel, message, ..
                }) = wire::decode::<FrameIn<P::Message, P::State>>(&frame)
                else {
                    continue;
                };
                let channel = self.wiring.channels()[channel as usize];
                match lost.iter_mut().find(|u| u.channel == channel) {
                    Some(u) => u.messages.push(message),
                    None => lost.push(Undelivered {
                        channel,
                        messages: vec![message],
                    }),
                }
            }
        }
        lost
    }

    /// Waits until `done(ending, node)` for every other node whose link has not failed, or
    /// `deadline`; fails naming the nodes still waited for.
    fn wait_for(
        &self,
        deadline: Instant,
        done: impl Fn(&Ending<P>, usize) -> bool,
    ) -> Result<(), ClusterError> {
        let mut ending = self.ending.lock();
        loop {
            let waiting: Vec<usize> = (0..self.links.len())
                .filter(|&k| k != self.me && ending.broken[k].is_none() && !done(&ending, k))
                .collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if self.changed.wait_until(&mut ending, deadline).timed_out() {
                return Err(ClusterError::StopTimeout { nodes: waiting });
            }
        }
    }

    /// This node's final report: its processes' states and counters, what is left on the
    /// channels into them.
    fn report(
        &self,
        stopped: &Stopped<P>,
        counters: &[(ProcessId, FinalCounters)],
    ) -> Report<P::Message, P::State> {
        let wiring = &self.wiring;
        let index: HashMap<_, _> = wiring
            .channels()
            .iter()
            .enumerate()
            .map(|(c, &channel)| (channel, c))
            .collect();
        let mut undelivered: HashMap<usize, Vec<P::Message>> = stopped
            .undelivered
            .iter()
            .map(|u| (index[&u.channel], u.messages.clone()))
            .collect();
        let failure = |p: ProcessId| {
            stopped
                .failures
                .iter()
                .find(|f| f.process == p)
                .map(|f| f.message.clone())
        };
        let mut report = Report {
            processes: self
                .local
                .iter()
                .map(|&p| {
                    let state = stopped.processes[p].as_ref().map(|app| app.record());
                    (p as u32, state, failure(p))
                })
                .collect(),
            incoming: Vec::new(),
            outgoing: Vec::new(),
        };
        for (p, (sent, received)) in counters {
            for (&c, &n) in wiring.outgoing(*p).iter().zip(sent) {
                report.outgoing.push((c as u32, n));
            }
            for (&c, &n) in wiring.incoming(*p).iter().zip(received) {
                let left = undelivered.remove(&c).unwrap_or_default();
                report.incoming.push((c as u32, n, left));
            }
        }
        report
    }

    /// Refused with `WouldDeadlock` on one of this node's process threads: the node's result
    /// (and so its stop) needs every process of the node stopped, that one too.
    fn off_process_threads(&self) -> Result<(), ClusterError> {
        self.runtime
            .guard()
            .check()
            .map_err(ClusterError::Processes)
    }

    /// Waits for the node's result until `deadline`, and takes it; refused at once on one of
    /// this node's process threads (`off_process_threads`).
    fn take_result(&self, deadline: Instant) -> Result<ClusterStopped<P>, ClusterError> {
        self.off_process_threads()?;
        let mut ending = self.ending.lock();
        loop {
            if ending.taken {
                return Err(ClusterError::Stopped);
            }
            if let Some(result) = ending.result.take() {
                ending.taken = true;
                return result;
            }
            if self.changed.wait_until(&mut ending, deadline).timed_out() {
                return Err(ClusterError::WaitTimeout);
            }
        }
    }
}

/// The last handle's drop stops the cluster, as [`Node::shutdown`] does.
struct Handle<P: NodeProcess> {
    core: Arc<Core<P>>,
}

impl<P: NodeProcess> Drop for Handle<P> {
    fn drop(&mut self) {
        if self.core.ending.lock().taken {
            return;
        }
        let bound = self.core.begin_end(Vec::new());
        // On one of this node's process threads this returns at once: the stop cannot end
        // until this thread returns from its callback, and goes on in its own thread, as a
        // runtime's last handle dropped on a process thread does.
        let _ = self.core.take_result(bound);
    }
}

/// A handle on one node of a running cluster: a node's processes run here, the rest on other
/// nodes, and every call that names a process works for any process of the cluster.
///
/// Cheap to clone. Dropping the last clone stops the whole cluster, as
/// [`shutdown`](Node::shutdown) does.
///
/// Per node or cluster-wide:
/// - [`start_snapshot`](Node::start_snapshot), [`snapshot`](Node::snapshot): any process of
///   the cluster as initiator; the outcome is delivered on this node (the initiator's node
///   assembles the snapshot and sends it here). The in-flight limit counts the snapshots
///   started from this node.
/// - [`subscribe`](Node::subscribe): the snapshots whose outcome is delivered on this node:
///   those asked for here, and those started by this node's processes.
/// - [`stats`](Node::stats), [`failures`](Node::failures): this node's view.
/// - [`shutdown`](Node::shutdown): stops every node.
/// - [`with_process`](Node::with_process): this node's processes only.
///
/// Times: a snapshot delivered here has its start, its end and its record times on this node's
/// clock (measured from this node's start). Its latency is what this node saw: for a snapshot
/// asked for here and assembled on another node, from the asking to the outcome's arrival. A
/// process on another node recorded its state at the time its part says, put on the
/// assembling node's clock when the part arrives (late by the part's time on its way, at
/// most), and for a snapshot assembled elsewhere as long after the start as there.
pub struct Node<P: NodeProcess> {
    handle: Arc<Handle<P>>,
}

impl<P: NodeProcess> Clone for Node<P> {
    fn clone(&self) -> Self {
        Node {
            handle: self.handle.clone(),
        }
    }
}

/// For tests that play a member gone bad: `bytes` go to `peer` as they are, inside the
/// authenticated, encrypted link, where frames go. And a way to see that a node has been let
/// go of (every thread that held it has ended).
#[cfg(all(test, not(miri)))]
impl<P: NodeProcess> Node<P> {
    pub(crate) fn weak_core(&self) -> std::sync::Weak<Core<P>> {
        Arc::downgrade(&self.handle.core)
    }

    pub(crate) fn send_raw(&self, peer: usize, bytes: &[u8]) {
        if let Some(link) = &self.handle.core.links[peer] {
            let _ = link.send_control(|buf| {
                buf.extend_from_slice(bytes);
                Ok(())
            });
        }
    }
}

impl<P: NodeProcess> std::fmt::Debug for Node<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("index", &self.index())
            .field("nodes", &self.nodes())
            .field("processes", &self.local_processes())
            .finish_non_exhaustive()
    }
}

impl<P: NodeProcess> Node<P> {
    /// A builder for node `node` (its position among the cluster's nodes) of a cluster running
    /// `topology` placed as `config` says.
    pub fn builder(topology: Topology, config: ClusterConfig, node: usize) -> NodeBuilder<P> {
        NodeBuilder {
            runtime: Runtime::builder(topology.clone()),
            topology,
            config,
            node,
            listener: None,
            keys: None,
            failure_timeout: FAILURE_TIMEOUT,
            connect_timeout: CONNECT_TIMEOUT,
            stop_timeout: STOP_TIMEOUT,
            max_frame: wire::DEFAULT_MAX_FRAME,
            max_frame_total: wire::DEFAULT_MAX_FRAME_TOTAL,
            max_queued: MAX_QUEUED,
            max_backlog: MAX_BACKLOG,
            settings: String::new(),
        }
    }

    fn core(&self) -> &Core<P> {
        &self.handle.core
    }

    /// This node's index.
    pub fn index(&self) -> usize {
        self.core().me
    }

    /// How many nodes the cluster has.
    pub fn nodes(&self) -> usize {
        self.core().links.len()
    }

    /// The processes this node runs, increasing.
    pub fn local_processes(&self) -> &[ProcessId] {
        &self.core().local
    }

    /// The node that runs `process`.
    pub fn node_of(&self, process: ProcessId) -> Option<usize> {
        self.core().node_of.get(process).copied()
    }

    /// The cluster's validated topology.
    pub fn wiring(&self) -> &Wiring {
        &self.core().wiring
    }

    /// Starts a snapshot with `initiator`, on any node, as initiator, and returns a ticket to
    /// wait on here. For a process on another node, the request goes to that node, which
    /// assembles the snapshot and sends the outcome back.
    pub fn start_snapshot(
        &self,
        initiator: ProcessId,
    ) -> Result<PendingSnapshot<P::Message, P::State>, Error> {
        let core = self.core();
        let Some(&node) = core.node_of.get(initiator) else {
            return Err(Error::NoSuchProcess {
                process: initiator,
                processes: core.node_of.len(),
            });
        };
        if node == core.me {
            return core.runtime.start_snapshot(initiator);
        }
        let id = SnapshotId::random();
        let ticket = core
            .shared()
            .hub
            .begin_elsewhere(id, initiator, core.runtime.guard())?;
        self.ask(
            node,
            id,
            &Frame::Start {
                snapshot: id,
                initiator: initiator as u32,
            },
        );
        Ok(ticket)
    }

    /// Takes a snapshot started at `initiator` and waits until it completes.
    pub fn snapshot(&self, initiator: ProcessId) -> SnapshotOutcome<P::Message, P::State> {
        // Refused before anything starts, as `Runtime::snapshot` does: the wait would be
        // refused anyway, and a snapshot started for nobody would count against the limit.
        self.core().runtime.guard().check()?;
        self.start_snapshot(initiator)?.wait()
    }

    /// Like [`snapshot`](Node::snapshot), giving up with [`Error::Timeout`] after `timeout`.
    pub fn snapshot_timeout(
        &self,
        initiator: ProcessId,
        timeout: Duration,
    ) -> SnapshotOutcome<P::Message, P::State> {
        self.core().runtime.guard().check()?;
        self.start_snapshot(initiator)?.wait_timeout(timeout)
    }

    /// A ticket for a running snapshot started by `initiator`, whoever started it (for
    /// instance application code with [`Context::start_snapshot`], on any node). Its outcome
    /// is delivered here as for a snapshot asked for here; its start, on this node's clock, is
    /// the time of this call. Fails with [`Error::UnknownSnapshot`] (at once on the initiator's
    /// node, through the ticket on another) if no such snapshot is running: it may already have
    /// ended, so prefer [`subscribe`](Node::subscribe) on the initiator's node to see every one.
    pub fn watch_snapshot(
        &self,
        id: SnapshotId,
        initiator: ProcessId,
    ) -> Result<PendingSnapshot<P::Message, P::State>, Error> {
        let core = self.core();
        let Some(&node) = core.node_of.get(initiator) else {
            return Err(Error::NoSuchProcess {
                process: initiator,
                processes: core.node_of.len(),
            });
        };
        if node == core.me {
            return core.runtime.watch_snapshot(id);
        }
        let ticket = core
            .shared()
            .hub
            .watch_elsewhere(id, initiator, core.runtime.guard())?;
        self.ask(node, id, &Frame::Watch { snapshot: id });
        Ok(ticket)
    }

    /// Sends `node` a request about snapshot `id`, waited for here; if the link is down the
    /// wait ends at once with that error.
    fn ask(&self, node: usize, id: SnapshotId, request: &FrameOut<'_, P::Message, P::State>) {
        let core = self.core();
        let link = core.links[node]
            .as_ref()
            .expect("a link to every other node");
        if link.is_broken() || link.send(request).is_err() {
            core.shared().hub.finish_elsewhere(
                id,
                Err(Error::Cluster(format!("the link to node {node} is down"))),
            );
        }
    }

    /// From now on, the end of every snapshot whose outcome is delivered on this node: those
    /// asked for here, and those started by this node's processes (see
    /// [`Runtime::subscribe`]).
    pub fn subscribe(&self) -> Receiver<SnapshotEvent<P::Message, P::State>> {
        self.core().runtime.subscribe()
    }

    /// Runs `f` on `process`'s thread (a process of this node) and returns its result; see
    /// [`Runtime::with_process`].
    pub fn with_process<R: Send + 'static>(
        &self,
        process: ProcessId,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.check_here(process)?;
        self.core().runtime.with_process(process, f)
    }

    /// Like [`with_process`](Node::with_process), giving up with [`Error::Timeout`] after
    /// `timeout`.
    pub fn with_process_timeout<R: Send + 'static>(
        &self,
        process: ProcessId,
        timeout: Duration,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.check_here(process)?;
        self.core()
            .runtime
            .with_process_timeout(process, timeout, f)
    }

    fn check_here(&self, process: ProcessId) -> Result<(), Error> {
        match self.node_of(process) {
            None => Err(Error::NoSuchProcess {
                process,
                processes: self.core().node_of.len(),
            }),
            Some(node) if node != self.index() => Err(Error::Cluster(format!(
                "process {process} runs on node {node}, not on this node ({})",
                self.index()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Every process known here to have failed, on any node.
    pub fn failures(&self) -> Vec<ProcessFailure> {
        self.core().runtime.failures()
    }

    /// The nodes this node has decided failed (`membership.rs`: every survivor decides the
    /// same), increasing. This node's own index is in it if the others cannot hear it.
    pub fn failed_nodes(&self) -> Vec<usize> {
        self.core().failed_nodes()
    }

    /// This node's snapshot bookkeeping and links (see [`NodeStats`]).
    pub fn stats(&self) -> NodeStats {
        let core = self.core();
        let (relaying, asked_elsewhere, assembling_for_others) = core.shared().hub.crossing();
        let broken = core.ending.lock().broken.clone();
        NodeStats {
            runtime: core.runtime.stats(),
            relaying,
            asked_elsewhere,
            assembling_for_others,
            links: core
                .links
                .iter()
                .flatten()
                .map(|l| LinkStats {
                    node: l.peer,
                    writes: l.writes.load(std::sync::atomic::Ordering::Relaxed),
                    bytes: l.bytes.load(std::sync::atomic::Ordering::Relaxed),
                    queued: l.queued(),
                    stalled_for: l.stalled_for(),
                    down: broken[l.peer].clone(),
                })
                .collect(),
        }
    }

    /// Time since this node was built: the clock of the snapshots asked for here.
    pub fn elapsed(&self) -> Duration {
        self.core().runtime.elapsed()
    }

    /// Whether the cluster is stopping or has stopped.
    pub fn is_stopping(&self) -> bool {
        self.core().is_stopping()
    }

    /// Stops the whole cluster: every node stops its processes (after their current
    /// callback), every connection is read to its end (so what was on its way is counted),
    /// every node reports its final state to every other; returns this node's result (see
    /// [`ClusterStopped`]). Other nodes' handles see the same from
    /// [`wait_stopped`](Node::wait_stopped).
    ///
    /// A node's result is handed out once (it owns the processes' final states): among the
    /// clones of one node's handle, the first call of `shutdown` or `wait_stopped` to return
    /// after the stop gets it, and every later one [`ClusterError::Stopped`].
    ///
    /// Waits at most twice the [stop timeout](NodeBuilder::stop_timeout) from when the stop
    /// began, then fails with [`ClusterError::WaitTimeout`] (dropping this handle then waits no
    /// more). On one of this node's own process threads (in a callback, or in
    /// [`with_process`](Node::with_process)) it is refused at once with
    /// [`ClusterError::Processes`]`(`[`Error::WouldDeadlock`]`)`: the stop waits for every
    /// process of the node, that one too.
    pub fn shutdown(self) -> Result<ClusterStopped<P>, ClusterError> {
        self.shutdown_with(Vec::new())
    }

    /// Like [`shutdown`](Node::shutdown), with a note every node's result carries (a verdict,
    /// a summary: whatever the caller encodes).
    pub fn shutdown_with(self, note: Vec<u8>) -> Result<ClusterStopped<P>, ClusterError> {
        let core = &self.handle.core;
        // On a process thread the stop would wait for this very thread: refused before it
        // begins, as `Runtime::shutdown` refuses (dropping `self` then begins the stop if this
        // was the last handle, without waiting for it).
        core.off_process_threads()?;
        let bound = core.begin_end(note);
        core.take_result(bound)
    }

    /// Waits until the cluster has been stopped (from any node) and returns this node's result;
    /// [`ClusterError::WaitTimeout`] if it is still running after `timeout` (the node goes on;
    /// wait again). Once per node, as [`shutdown`](Node::shutdown) says: a clone that comes
    /// second gets [`ClusterError::Stopped`]. Refused like [`shutdown`](Node::shutdown) on one of
    /// this node's own process threads.
    pub fn wait_stopped(&self, timeout: Duration) -> Result<ClusterStopped<P>, ClusterError> {
        self.core()
            .take_result(crate::deadline::deadline_after(timeout))
    }
}

/// A node's snapshot bookkeeping and links: the snapshot counts are all zero once every
/// snapshot that involved this node has ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// This node's processes and hub, as a runtime's ([`Runtime::stats`]).
    pub runtime: RuntimeStats,
    /// Snapshots started on another node whose parts this node's processes still send there.
    pub relaying: usize,
    /// Snapshots asked for here and assembled on another node, not yet ended.
    pub asked_elsewhere: usize,
    /// Snapshots assembled here that another node asked for, not yet ended.
    pub assembling_for_others: usize,
    /// One per other node: the link this node writes to it.
    pub links: Vec<LinkStats>,
}

impl NodeStats {
    /// Whether no snapshot state is held on this node.
    pub fn is_idle(&self) -> bool {
        self.runtime == RuntimeStats::default()
            && self.relaying == 0
            && self.asked_elsewhere == 0
            && self.assembling_for_others == 0
    }
}

/// What this node has written to one other node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// The other node.
    pub node: usize,
    /// `write` calls made on the socket.
    pub writes: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Bytes queued for it and not yet written.
    pub queued: usize,
    /// How long this node's processes have waited for room on the link (its queue past
    /// [`max_queued`](NodeBuilder::max_queued)) while its writer took nothing; `None` while
    /// none waits. Past the failure timeout it is logged as a warning: the other node is
    /// heard but does not read, being slower than this one's senders, or, if it lasts, nodes
    /// holding each other back in a cycle (see [`max_backlog`](NodeBuilder::max_backlog)).
    pub stalled_for: Option<Duration>,
    /// Why the link is down, once it is (broken, or closed by a failure or the stop); it is
    /// not used again.
    pub down: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{ChannelSnapshot, SnapshotId};
    use crate::topology::Channel;

    /// Two files holding one checkpoint with its channels listed in another order are the same
    /// checkpoint: restoring matches channels by (from, to), and so does the checksum the nodes
    /// compare (before, it hashed the file's order, and the nodes refused each other).
    #[test]
    fn the_checksum_does_not_depend_on_the_order_of_the_channels() {
        let channel = |from, to, sent| ChannelSnapshot::<u64> {
            channel: Channel::new(from, to),
            sent,
            received: sent,
            messages: vec![],
        };
        let one = GlobalSnapshot::<u64, u64> {
            id: SnapshotId::random(),
            initiator: 0,
            started_at: Duration::ZERO,
            completed_at: Duration::ZERO,
            recorded_at: vec![Duration::ZERO; 2],
            states: vec![1, 2],
            channels: vec![channel(0, 1, 3), channel(1, 0, 5)],
        };
        let mut other = one.clone();
        other.channels.reverse();
        assert_eq!(checksum(&one), checksum(&other));
        // Still a checksum of the counters.
        other.channels[0].sent = 6;
        other.channels[0].received = 6;
        assert_ne!(checksum(&one), checksum(&other));
    }
}
