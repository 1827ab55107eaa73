//! Every error type of the crate, in one place. (Over 500 lines for that reason: each type with
//! its variants' documentation and its `Display` text, kept together so every message reads
//! alike and a reader finds all the ways a call can fail on one page.)
//!
//! Each type implements `Display`, `std::error::Error` and (where its payload allows) `PartialEq`,
//! so tests can `assert_eq!` on the exact failure. A failed send hands the message back.

use std::fmt;

use crate::ids::{Channel, ProcessId, SnapshotId};

/// `n` things, in words: `1 process`, `2 processes`, `0 bytes`. Here, at the bottom of the
/// crate, because most counts the crate prints are in these messages, and every module may
/// use this one.
pub(crate) fn plural<N: fmt::Display + PartialEq + From<u8>>(n: N, one: &str) -> String {
    if n == N::from(1) {
        format!("{n} {one}")
    } else if one.ends_with('s') {
        format!("{n} {one}es")
    } else {
        format!("{n} {one}s")
    }
}

/// Why a [`Topology`](crate::Topology) cannot carry snapshots.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopologyError {
    /// The topology has no process at all.
    NoProcesses,
    /// An edge names a process that does not exist.
    UnknownProcess {
        /// The edge's source.
        from: ProcessId,
        /// The edge's destination.
        to: ProcessId,
        /// How many processes the topology has (valid ids are `0..processes`).
        processes: usize,
    },
    /// An edge goes from a process to itself.
    SelfLoop {
        /// The process with the loop.
        process: ProcessId,
    },
    /// The same directed edge is listed twice.
    DuplicateChannel {
        /// The edge's source.
        from: ProcessId,
        /// The edge's destination.
        to: ProcessId,
    },
    /// There is no directed path from `from` to `to`, so a marker sent by `from` could never
    /// reach `to` and a snapshot started at `from` could never complete.
    NotStronglyConnected {
        /// A process that cannot reach `to`.
        from: ProcessId,
        /// A process unreachable from `from`.
        to: ProcessId,
    },
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::NoProcesses => write!(f, "the topology has no process"),
            TopologyError::UnknownProcess {
                from,
                to,
                processes,
            } => write!(
                f,
                "edge {from}->{to} names a process outside 0..{processes}"
            ),
            TopologyError::SelfLoop { process } => {
                write!(f, "edge {process}->{process} is a self-loop")
            }
            TopologyError::DuplicateChannel { from, to } => {
                write!(f, "edge {from}->{to} is listed more than once")
            }
            TopologyError::NotStronglyConnected { from, to } => write!(
                f,
                "the topology is not strongly connected: no path from process {from} to process {to}"
            ),
        }
    }
}

impl std::error::Error for TopologyError {}

/// Why a runtime could not be built.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// The topology is invalid.
    Topology(TopologyError),
    /// The number of processes given differs from the topology's.
    ProcessCount {
        /// Processes in the topology.
        topology: usize,
        /// Processes handed to `build`.
        given: usize,
    },
    /// The snapshot to restore from does not fit.
    Restore(RestoreError),
    /// The operating system refused to start a process thread.
    Spawn {
        /// The process whose thread could not start.
        process: ProcessId,
        /// The operating system's message.
        message: String,
    },
    /// The thread name prefix (see
    /// [`RuntimeBuilder::thread_name`](crate::RuntimeBuilder::thread_name)) holds a NUL byte,
    /// which no thread name can.
    ThreadName {
        /// The prefix given.
        prefix: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Topology(e) => write!(f, "invalid topology: {e}"),
            BuildError::ProcessCount { topology, given } => write!(
                f,
                "the topology has {} but {given} {} given",
                plural(*topology, "process"),
                if *given == 1 { "was" } else { "were" }
            ),
            BuildError::Restore(e) => write!(f, "cannot restore: {e}"),
            BuildError::Spawn { process, message } => {
                write!(
                    f,
                    "could not start the thread of process {process}: {message}"
                )
            }
            BuildError::ThreadName { prefix } => {
                write!(f, "thread name prefix {prefix:?} holds a NUL byte")
            }
        }
    }
}

impl std::error::Error for BuildError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BuildError::Topology(e) => Some(e),
            BuildError::Restore(e) => Some(e),
            _ => None,
        }
    }
}

impl From<RestoreError> for BuildError {
    fn from(e: RestoreError) -> Self {
        BuildError::Restore(e)
    }
}

impl From<TopologyError> for BuildError {
    fn from(e: TopologyError) -> Self {
        BuildError::Topology(e)
    }
}

/// Why a call on a running [`Runtime`](crate::Runtime) or a snapshot failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The call named a process that does not exist.
    NoSuchProcess {
        /// The id given.
        process: ProcessId,
        /// How many processes the runtime has.
        processes: usize,
    },
    /// A process panicked: it has stopped, and a snapshot that still needed it cannot complete.
    ProcessFailed {
        /// The process that panicked.
        process: ProcessId,
        /// Its panic message.
        message: String,
    },
    /// The runtime has been shut down (or was shutting down when the snapshot was still running).
    Shutdown,
    /// The wait ended before the result was there. Nothing is lost: wait again to get it.
    Timeout,
    /// No running snapshot has this id (it never existed, or it has already ended).
    UnknownSnapshot(SnapshotId),
    /// The call would block the thread of `process` until that same thread served it, which can
    /// never happen. Blocking calls are refused on the runtime's own threads.
    WouldDeadlock {
        /// The process on whose thread the call was made.
        process: ProcessId,
    },
    /// `shutdown_timeout` gave up waiting for these processes: their threads had not stopped
    /// when the timeout ran out, because their application code was still in a callback, or
    /// because the timeout was too short for a thread to see the stop at all (with
    /// `Duration::ZERO`, even idle processes are named). Their threads are detached and stop
    /// once their callback returns.
    ShutdownTimeout {
        /// Processes still running.
        running: Vec<ProcessId>,
    },
    /// [`Stopped::into_processes`](crate::Stopped::into_processes): this process did not fail,
    /// yet its entry in [`Stopped::processes`](crate::Stopped) is empty (taken out by the
    /// caller).
    ProcessTaken {
        /// The process.
        process: ProcessId,
    },
    /// The runtime already holds `limit` snapshots in flight (started and not yet complete),
    /// the most it was built to hold (see
    /// [`RuntimeBuilder::max_snapshots_in_flight`](crate::RuntimeBuilder::max_snapshots_in_flight)).
    /// This snapshot was not started; the running ones go on. Retry once some have completed.
    TooManySnapshots {
        /// The configured maximum of snapshots in flight.
        limit: usize,
    },
    /// A node of a cluster could not do what was asked of it; the message says why (cargo
    /// feature `cluster`).
    Cluster(String),
    /// A node of a cluster has failed (it died, or a link to it went silent or broke): its
    /// processes count as failed, and a snapshot that needed them cannot complete (cargo feature
    /// `cluster`).
    NodeFailed {
        /// The node.
        node: usize,
        /// Its processes.
        processes: Vec<ProcessId>,
        /// Why it was declared failed.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSuchProcess { process, processes } => {
                write!(f, "no process {process}: the runtime has processes 0..{processes}")
            }
            Error::ProcessFailed { process, message } => {
                write!(f, "process {process} panicked: {message}")
            }
            Error::Shutdown => write!(f, "the runtime has been shut down"),
            Error::Timeout => write!(f, "timed out"),
            Error::UnknownSnapshot(id) => write!(f, "no running snapshot has id {id}"),
            Error::WouldDeadlock { process } => write!(
                f,
                "blocking call made on the thread of process {process}, which would have to serve it"
            ),
            Error::ShutdownTimeout { running } => {
                write!(f, "shutdown timed out; processes still running: {running:?}")
            }
            Error::ProcessTaken { process } => write!(
                f,
                "process {process} did not fail but is no longer in the stopped runtime's processes"
            ),
            Error::TooManySnapshots { limit } => write!(
                f,
                "{} already in flight, the most this runtime holds \
                 (RuntimeBuilder::max_snapshots_in_flight); this one was not started",
                match limit {
                    1 => "1 snapshot is".to_string(),
                    n => format!("{n} snapshots are"),
                }
            ),
            Error::Cluster(message) => write!(f, "cluster: {message}"),
            Error::NodeFailed {
                node,
                processes,
                reason,
            } => write!(
                f,
                "node {node} failed ({reason}); its processes {processes:?} with it"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Why application code could not send a message. The message is handed back.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError<M> {
    /// There is no channel from the sender to `to` in the topology.
    NotNeighbour {
        /// The sending process.
        from: ProcessId,
        /// The intended destination.
        to: ProcessId,
        /// The message, unsent.
        message: M,
    },
    /// The destination process has panicked and takes no more messages.
    Disconnected {
        /// The sending process.
        from: ProcessId,
        /// The destination that has stopped.
        to: ProcessId,
        /// The message, unsent.
        message: M,
    },
    /// The destination runs on another node of a cluster, and the message could not be
    /// encoded for the wire (its `Serialize` failed; cargo feature `cluster`).
    Unencodable {
        /// The sending process.
        from: ProcessId,
        /// The intended destination.
        to: ProcessId,
        /// The message, unsent.
        message: M,
        /// The codec's reason.
        reason: String,
    },
}

impl<M> SendError<M> {
    /// Takes back the message that could not be sent.
    pub fn into_message(self) -> M {
        match self {
            SendError::NotNeighbour { message, .. }
            | SendError::Disconnected { message, .. }
            | SendError::Unencodable { message, .. } => message,
        }
    }
}

// Like crossbeam's `SendError`, `Debug` does not require `M: Debug`.
impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotNeighbour { from, to, .. } => f
                .debug_struct("NotNeighbour")
                .field("from", from)
                .field("to", to)
                .finish_non_exhaustive(),
            SendError::Disconnected { from, to, .. } => f
                .debug_struct("Disconnected")
                .field("from", from)
                .field("to", to)
                .finish_non_exhaustive(),
            SendError::Unencodable {
                from, to, reason, ..
            } => f
                .debug_struct("Unencodable")
                .field("from", from)
                .field("to", to)
                .field("reason", reason)
                .finish_non_exhaustive(),
        }
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotNeighbour { from, to, .. } => {
                write!(f, "process {from} has no channel to process {to}")
            }
            SendError::Disconnected { from, to, .. } => {
                write!(
                    f,
                    "process {from} cannot send to process {to}: it has stopped"
                )
            }
            SendError::Unencodable {
                from, to, reason, ..
            } => write!(
                f,
                "process {from} cannot send to process {to}, on another node: the message \
                 cannot be encoded: {reason}"
            ),
        }
    }
}

impl<M> std::error::Error for SendError<M> {}

/// How a global snapshot breaks the consistent-cut criterion
/// ([`algorithm`](crate::algorithm), "Correctness").
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CutError {
    /// The receiver had received more messages on `channel` than the sender had sent when each
    /// recorded its state: a message received inside the cut was sent outside it.
    Orphan {
        /// The channel.
        channel: Channel,
        /// Messages the sender had sent at its cut.
        sent: u64,
        /// Messages the receiver had received at its cut.
        received: u64,
    },
    /// The recorded messages of `channel` are not exactly those numbered `received+1 ..= sent`
    /// in order. `index` is the first position that differs; `expected`/`found` are the sequence
    /// numbers there (`None`: the recording ends too early, or runs past `sent`).
    WrongRecording {
        /// The channel.
        channel: Channel,
        /// Messages the sender had sent at its cut.
        sent: u64,
        /// Messages the receiver had received at its cut.
        received: u64,
        /// Position of the first wrong recorded message.
        index: usize,
        /// The sequence number that belongs at `index`.
        expected: Option<u64>,
        /// The sequence number recorded at `index`.
        found: Option<u64>,
    },
}

impl fmt::Display for CutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CutError::Orphan {
                channel,
                sent,
                received,
            } => write!(
                f,
                "channel {channel}: received {received} > sent {sent} (orphan message)"
            ),
            CutError::WrongRecording {
                channel,
                sent,
                received,
                index,
                expected,
                found,
            } => {
                let show = |x: &Option<u64>| x.map_or("nothing".to_string(), |s| format!("#{s}"));
                write!(
                    f,
                    "channel {channel}: recording must be messages #{}..=#{sent}, but at position \
                     {index} expected {} and found {}",
                    received + 1,
                    show(expected),
                    show(found)
                )
            }
        }
    }
}

impl std::error::Error for CutError {}

/// A protocol violation seen by the pure marker core ([`Recorder`](crate::recorder::Recorder)).
/// In the drivers of this crate these mean a bug, and the process reports it as a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MarkerError {
    /// A second marker of the same snapshot arrived on the same channel.
    DuplicateMarker {
        /// The receiving process.
        process: ProcessId,
        /// The snapshot.
        snapshot: SnapshotId,
        /// Local index of the incoming channel.
        channel: usize,
    },
    /// A snapshot with this id is already being recorded at this process.
    DuplicateSnapshot {
        /// The process.
        process: ProcessId,
        /// The snapshot.
        snapshot: SnapshotId,
    },
}

impl fmt::Display for MarkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MarkerError::DuplicateMarker {
                process,
                snapshot,
                channel,
            } => write!(
                f,
                "process {process}: second marker of snapshot {snapshot} on incoming channel {channel}"
            ),
            MarkerError::DuplicateSnapshot { process, snapshot } => write!(
                f,
                "process {process}: snapshot {snapshot} is already being recorded"
            ),
        }
    }
}

impl std::error::Error for MarkerError {}

/// A local part that the [`Collector`](crate::collector::Collector) cannot place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CollectError {
    /// No snapshot with this id was begun (or it has already ended).
    UnknownSnapshot(SnapshotId),
    /// A snapshot with this id was already begun.
    DuplicateSnapshot(SnapshotId),
    /// A process has failed, so no snapshot can start (this is the failure).
    Failed(Error),
    /// This process already handed in its part of this snapshot.
    DuplicatePart {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The process.
        process: ProcessId,
    },
    /// The part does not fit the topology (wrong process, or wrong number of channels).
    MalformedPart {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The process the part claims to come from.
        process: ProcessId,
    },
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CollectError::UnknownSnapshot(id) => write!(f, "no snapshot {id} is being collected"),
            CollectError::DuplicateSnapshot(id) => write!(f, "snapshot {id} was already begun"),
            CollectError::Failed(e) => write!(f, "no snapshot can start: {e}"),
            CollectError::DuplicatePart { snapshot, process } => {
                write!(f, "process {process} handed in snapshot {snapshot} twice")
            }
            CollectError::MalformedPart { snapshot, process } => write!(
                f,
                "the part of process {process} in snapshot {snapshot} does not fit the topology"
            ),
        }
    }
}

impl std::error::Error for CollectError {}

/// Why a snapshot cannot be restored into a topology. Nothing is started.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreError {
    /// The snapshot has a different number of processes.
    ProcessCount {
        /// Processes in the snapshot.
        snapshot: usize,
        /// Processes in the topology.
        topology: usize,
    },
    /// A channel is in the topology but not in the snapshot.
    MissingChannel(Channel),
    /// A channel is in the snapshot but not in the topology.
    ExtraChannel(Channel),
    /// The snapshot is not a consistent cut, so it cannot be a state the system was in.
    Inconsistent(CutError),
    /// A channel's sender has already numbered `u64::MAX` messages: the channel could not number
    /// another one.
    CounterFull(Channel),
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::ProcessCount { snapshot, topology } => write!(
                f,
                "the snapshot has {}, the topology {topology}",
                plural(*snapshot, "process")
            ),
            RestoreError::MissingChannel(c) => {
                write!(f, "channel {c} of the topology is not in the snapshot")
            }
            RestoreError::ExtraChannel(c) => {
                write!(f, "channel {c} of the snapshot is not in the topology")
            }
            RestoreError::Inconsistent(e) => write!(f, "the snapshot is inconsistent: {e}"),
            RestoreError::CounterFull(c) => write!(
                f,
                "channel {c} has numbered u64::MAX messages and cannot number another"
            ),
        }
    }
}

impl std::error::Error for RestoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RestoreError::Inconsistent(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "serde")]
/// Why a checkpoint file cannot be written or read back. A file that fails any check is
/// refused whole.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Reading or writing the file failed.
    Io {
        /// The file.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// Not a checkpoint of this crate (or of another version of its format).
    Format {
        /// What the file says it is.
        found: String,
    },
    /// The file ends early (or has bytes missing): `found` of the `expected` bytes of the
    /// snapshot are there.
    Truncated {
        /// Bytes the header announces.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The snapshot's line is longer than the header announces (bytes were added, or two
    /// files ran together): it has `found` bytes, not `expected`.
    TooLong {
        /// Bytes the header announces.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The snapshot's bytes are not the ones the header's checksum was computed over: the file
    /// was altered or damaged.
    Checksum {
        /// The checksum in the header.
        expected: String,
        /// The checksum of the bytes present.
        found: String,
    },
    /// A line is not the JSON it should be (`line` counts from 1).
    Malformed {
        /// The line.
        line: usize,
        /// What is wrong with it, as the rest of a sentence that starts with the line (`is not
        /// a checkpoint header: ...`).
        message: String,
    },
    /// The snapshot could not be serialised.
    Encode(String),
    /// The file holds a snapshot that is not a consistent cut.
    Inconsistent(CutError),
}

#[cfg(feature = "serde")]
impl fmt::Display for CheckpointError {
    // Each message says first what is wrong with the checkpoint as a whole (damaged, malformed,
    // of another format...), then where and by how much: the first words are what a user
    // acts on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckpointError::Io { path, message } => {
                write!(
                    f,
                    "cannot read or write the checkpoint file {path}: {message}"
                )
            }
            CheckpointError::Format { found } => write!(
                f,
                "not a checkpoint this version of chandy-lamport reads: its header says {found:?}"
            ),
            CheckpointError::Truncated { expected, found } => write!(
                f,
                "damaged checkpoint, cut short: line 2 has {found} of the {} its header \
                 announces",
                plural(*expected, "byte")
            ),
            CheckpointError::TooLong { expected, found } => write!(
                f,
                "damaged checkpoint: line 2 has {} more than the {expected} its header announces",
                plural(found.saturating_sub(*expected), "byte")
            ),
            CheckpointError::Checksum { expected, found } => write!(
                f,
                "damaged checkpoint: line 2 does not have the checksum its header announces \
                 (header {expected}, line 2 {found}): the file was altered"
            ),
            CheckpointError::Malformed { line, message } => {
                write!(f, "malformed checkpoint: line {line} {message}")
            }
            CheckpointError::Encode(message) => write!(
                f,
                "cannot write the checkpoint: the snapshot does not serialise: {message}"
            ),
            CheckpointError::Inconsistent(e) => write!(
                f,
                "inconsistent checkpoint: its snapshot is not a consistent cut: {e}"
            ),
        }
    }
}

#[cfg(feature = "serde")]
impl std::error::Error for CheckpointError {}

/// Why a cluster node could not be configured, started or stopped (cargo feature `cluster`).
/// Errors about the cluster file carry its line, where there is one.
#[cfg(feature = "cluster")]
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterError {
    /// The cluster file could not be read.
    Read {
        /// The operating system's message.
        message: String,
    },
    /// The cluster file is not valid TOML, or has keys or values a cluster file does not.
    Syntax {
        /// The line, when the parser knows it.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// The file lists no node.
    NoNodes,
    /// A node lists a process the topology does not have.
    UnknownProcess {
        /// The node (its position among the `[[node]]` tables, from 0).
        node: usize,
        /// The process.
        process: ProcessId,
        /// How many processes the topology has.
        processes: usize,
        /// The line of the node's `processes`.
        line: Option<usize>,
    },
    /// A process of the topology is on no node.
    Unplaced {
        /// The process.
        process: ProcessId,
    },
    /// A process is on two nodes, or listed twice on one.
    PlacedTwice {
        /// The process.
        process: ProcessId,
        /// The first node that lists it.
        first: usize,
        /// The node that lists it again.
        second: usize,
        /// The line of the second listing.
        line: Option<usize>,
    },
    /// Two nodes have the same address.
    DuplicateAddress {
        /// The address.
        address: String,
        /// The first node with it.
        first: usize,
        /// The second.
        second: usize,
        /// The line of the second.
        line: Option<usize>,
    },
    /// This node's index is not one of the file's nodes.
    NoSuchNode {
        /// The index asked for.
        node: usize,
        /// How many nodes the file lists.
        nodes: usize,
    },
    /// An address that is not `host:port`, or whose host does not resolve.
    BadAddress {
        /// The node.
        node: usize,
        /// The address.
        address: String,
        /// Why.
        message: String,
        /// Its line.
        line: Option<usize>,
    },
    /// The address this node listens on could not be bound.
    Bind {
        /// This node.
        node: usize,
        /// The address.
        address: String,
        /// The operating system's message.
        message: String,
    },
    /// Start-up gave up: these nodes never answered by the deadline (this node could not
    /// connect to them, or they never connected to it).
    Unreachable {
        /// The nodes, by index.
        nodes: Vec<usize>,
        /// How long this node waited.
        waited: std::time::Duration,
        /// What was last seen of each.
        detail: String,
    },
    /// Start-up gave up: these nodes connected to and from this node, but never said they
    /// were connected to every other node by the deadline (one of them could not reach a
    /// third node, or stopped). This node ran none of its processes.
    NotReady {
        /// The nodes, by index.
        nodes: Vec<usize>,
        /// How long this node waited, from the start.
        waited: std::time::Duration,
        /// What was seen of each.
        detail: String,
    },
    /// Node `node` is already running a cluster, started without this start of this node (it
    /// failed and was started again, or the others started without it): a node does not join
    /// a running cluster. Stop every node and start them all again, from a checkpoint to go on.
    Running {
        /// The node that answered.
        node: usize,
    },
    /// A peer and this node disagree (topology, placement, wire format, crate version, message
    /// types, checkpoint): one refused the other.
    Mismatch {
        /// The peer.
        node: usize,
        /// What differs.
        message: String,
    },
    /// A link to a peer failed while the cluster started or stopped.
    Link {
        /// The peer.
        node: usize,
        /// What happened.
        message: String,
    },
    /// This node's own processes could not be stopped (one was still in a callback when the
    /// stop timeout ran out, or the stop was asked for on one of their own threads,
    /// [`Error::WouldDeadlock`]): the runtime's error.
    Processes(Error),
    /// Stopping gave up waiting for these nodes.
    StopTimeout {
        /// The nodes, by index.
        nodes: Vec<usize>,
    },
    /// The cluster names no keys: every connection between nodes must be authenticated, so a
    /// node needs its key pair and the others' public keys.
    NoKeys,
    /// The keys could not be made or read.
    Keys {
        /// What went wrong, with the file.
        message: String,
    },
    /// This node's own processes could not start.
    Build(BuildError),
    /// The cluster's result has already been handed to another caller (another clone of the
    /// node's handle).
    Stopped,
    /// The wait for the cluster to stop ran out; it is still running.
    WaitTimeout,
}

#[cfg(feature = "cluster")]
impl ClusterError {
    /// The cluster file's line the error is about, if it is about one.
    pub fn line(&self) -> Option<usize> {
        match self {
            ClusterError::Syntax { line, .. }
            | ClusterError::UnknownProcess { line, .. }
            | ClusterError::PlacedTwice { line, .. }
            | ClusterError::DuplicateAddress { line, .. }
            | ClusterError::BadAddress { line, .. } => *line,
            _ => None,
        }
    }

    /// Whether the error is the cluster file's (bad or unreadable), as opposed to one of
    /// starting or running the cluster.
    pub fn is_in_file(&self) -> bool {
        matches!(
            self,
            ClusterError::Read { .. }
                | ClusterError::Syntax { .. }
                | ClusterError::NoNodes
                | ClusterError::UnknownProcess { .. }
                | ClusterError::Unplaced { .. }
                | ClusterError::PlacedTwice { .. }
                | ClusterError::DuplicateAddress { .. }
                | ClusterError::NoSuchNode { .. }
                | ClusterError::BadAddress { .. }
                | ClusterError::NoKeys
                | ClusterError::Keys { .. }
        )
    }
}

#[cfg(feature = "cluster")]
impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::Read { message } => write!(f, "cannot read the cluster file: {message}"),
            ClusterError::Syntax { message, .. } => write!(f, "not a cluster file: {message}"),
            ClusterError::NoNodes => write!(f, "the cluster file lists no [[node]]"),
            ClusterError::UnknownProcess {
                node,
                process,
                processes,
                ..
            } => write!(
                f,
                "node {node} lists process {process}, but the topology has processes 0..{processes}"
            ),
            ClusterError::Unplaced { process } => {
                write!(
                    f,
                    "process {process} is on no node: every process must be on one"
                )
            }
            ClusterError::PlacedTwice {
                process,
                first,
                second,
                ..
            } if first == second => {
                write!(f, "node {first} lists process {process} twice")
            }
            ClusterError::PlacedTwice {
                process,
                first,
                second,
                ..
            } => write!(
                f,
                "process {process} is on two nodes, {first} and {second}: a process runs on one"
            ),
            ClusterError::DuplicateAddress {
                address,
                first,
                second,
                ..
            } => write!(f, "nodes {first} and {second} both have address {address}"),
            ClusterError::NoSuchNode { node, nodes } => {
                write!(f, "no node {node}: the cluster file lists nodes 0..{nodes}")
            }
            ClusterError::BadAddress {
                node,
                address,
                message,
                ..
            } => write!(f, "node {node}'s address {address:?}: {message}"),
            ClusterError::Bind {
                node,
                address,
                message,
            } => write!(f, "node {node} cannot listen on {address}: {message}"),
            ClusterError::Running { node } => write!(
                f,
                "node {node} is already running a cluster that started without this node: a \
                 node does not join a running cluster (stop every node and start them all \
                 again, from a checkpoint to go on)"
            ),
            ClusterError::NotReady {
                nodes,
                waited,
                detail,
            } => write!(
                f,
                "gave up after {:.1} s: {} connected but never got connected to every node \
                 ({detail})",
                waited.as_secs_f64(),
                match nodes.as_slice() {
                    [one] => format!("node {one}"),
                    many => format!("nodes {many:?}"),
                }
            ),
            ClusterError::Unreachable {
                nodes,
                waited,
                detail,
            } => write!(
                f,
                "gave up after {:.1} s: {} never answered ({detail})",
                waited.as_secs_f64(),
                match nodes.as_slice() {
                    [one] => format!("node {one}"),
                    many => format!("nodes {many:?}"),
                }
            ),
            ClusterError::Mismatch { node, message } => {
                write!(f, "node {node} and this node disagree: {message}")
            }
            ClusterError::Link { node, message } => {
                write!(f, "the link with node {node}: {message}")
            }
            ClusterError::Processes(e) => write!(f, "stopping this node's processes: {e}"),
            ClusterError::StopTimeout { nodes } => {
                write!(
                    f,
                    "stopping the cluster gave up waiting for nodes {nodes:?}"
                )
            }
            ClusterError::NoKeys => write!(
                f,
                "the cluster names no keys: every connection between nodes is authenticated, \
                 so each node needs its key pair and the others' public keys (`keys = \"DIR\"` \
                 in the cluster file)"
            ),
            ClusterError::Keys { message } => write!(f, "keys: {message}"),
            ClusterError::Build(e) => write!(f, "{e}"),
            ClusterError::Stopped => {
                write!(
                    f,
                    "the cluster has stopped, and its result was taken by another handle"
                )
            }
            ClusterError::WaitTimeout => write!(f, "timed out waiting for the cluster to stop"),
        }
    }
}

#[cfg(feature = "cluster")]
impl std::error::Error for ClusterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClusterError::Build(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(feature = "cluster")]
impl From<BuildError> for ClusterError {
    fn from(e: BuildError) -> Self {
        ClusterError::Build(e)
    }
}
