//! The cluster's wire format (version [`FORMAT`]): what travels between two nodes, and how it is
//! framed. Everything is encoded with serde through postcard. Written by hand, in postcard's own
//! format: the frame's length, the connection's first six bytes, the two numbers ahead of each
//! message ([`encode_message`]), and the counts of snapshot parts and outcomes, packed into a
//! byte string (`packed.rs`).
//!
//! A connection carries one direction, from the node that opened it to the one that accepted
//! it. It starts with the six bytes `CLSN` and the format version (`u16`, little-endian), then
//! one frame with the [`Hello`] (who the opener is and what it runs); the acceptor answers with
//! one frame, a [`Reply`]. Once connected to and from every other node, the opener sends
//! [`Ready`]. From then on the opener sends [`Frame`]s, each as a `u32`
//! little-endian length followed by that many bytes of postcard. A frame longer than the
//! receivers' limit (the same on every node: the `Hello` compares it) is sent in pieces, each
//! a length and that many bytes, the length's top bit ([`CONTINUED`]) set on all but the last;
//! the reader joins them before decoding. A piece that announces more than the limit is
//! refused before anything is allocated for it.
//!
//! Postcard is not self-describing: a frame decoded as the wrong type can come out as garbage
//! rather than an error. So the [`Hello`] carries the crate version and the Rust type names of
//! the message and state types, and a node refuses a peer whose differ.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::time::Duration;

use postcard::ser_flavors::Flavor;
use serde::{Deserialize, Serialize};

use super::packed::{GlobalIn, GlobalOut, PartIn, PartOut};
use super::window::{varint_with, Unwritten, Window, WINDOW};
use crate::error::Error;
use crate::snapshot::SnapshotId;
use crate::topology::Wiring;

/// The format version this build speaks. A node refuses a peer that speaks another.
pub(crate) const FORMAT: u16 = 7;

/// The first four bytes of every connection.
pub(crate) const MAGIC: [u8; 4] = *b"CLSN";

/// The longest frame a node accepts by default: 64 MiB. A frame announcing more is refused
/// before anything is allocated for it; an honest sender splits a longer one into pieces
/// under the limit ([`encode_within`]).
pub(crate) const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// The longest whole frame a node assembles from pieces by default: 1 GiB. Without a bound on
/// the whole, a peer could send pieces under the piece limit for ever, each a sign of life, and
/// the reader would keep them all.
pub(crate) const DEFAULT_MAX_FRAME_TOTAL: usize = 1 << 30;

/// How long a frame may be: each piece (`piece`: what a claimed length can make a reader set
/// aside at once) and the whole frame its pieces make (`whole`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameLimit {
    /// The longest piece.
    pub(crate) piece: usize,
    /// The longest whole frame.
    pub(crate) whole: usize,
}

impl FrameLimit {
    /// Pieces of at most `piece` bytes, and no bound on the whole (frames this node made).
    pub(crate) fn pieces(piece: usize) -> Self {
        FrameLimit {
            piece,
            whole: usize::MAX,
        }
    }
}

/// The flag, in a frame's length, that says the frame goes on in the next piece.
pub(crate) const CONTINUED: u32 = 1 << 31;

/// The longest piece: a length with [`CONTINUED`] clear.
pub(crate) const MAX_PIECE: usize = (CONTINUED - 1) as usize;

/// The opener's first frame: who it is and what it runs, for the acceptor to compare.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// The crate's version (`CARGO_PKG_VERSION`).
    pub(crate) crate_version: String,
    /// `std::any::type_name` of the message type.
    pub(crate) message_type: String,
    /// `std::any::type_name` of the state type.
    pub(crate) state_type: String,
    /// The opener's node index.
    pub(crate) node: u32,
    /// This start of the opener: a number it picks at random each time it starts, so that the
    /// acceptor can tell a node started again (whose earlier connections are dead) from a
    /// second connection of the same start (a retry). Not compared.
    pub(crate) boot: u64,
    /// Processes of the topology.
    pub(crate) processes: u32,
    /// Its channels, in order.
    pub(crate) channels: Vec<(u32, u32)>,
    /// By node: the processes it runs.
    pub(crate) placement: Vec<Vec<u32>>,
    /// The checksum of the snapshot every node restores from, if they restore.
    pub(crate) checkpoint: Option<u64>,
    /// The longest frame each node accepts (a local part longer than it is sent in pieces).
    pub(crate) max_frame: u64,
    /// The longest whole frame each node assembles from pieces.
    pub(crate) max_frame_total: u64,
    /// The failure timeout, in nanoseconds: each node sends an idle link a heartbeat every
    /// fifth of its own and takes a link silent for its own as broken, so a node with a
    /// shorter one than a peer's fails that peer while it is well.
    pub(crate) failure_timeout_ns: u64,
    /// The application's own settings (`NodeBuilder::settings`).
    pub(crate) settings: String,
}

impl Hello {
    /// What differs between `self` (this node's) and `peer` (the peer's), in words; `None` if
    /// they agree. Each value is said with the node that has it, not as "ours" and "theirs":
    /// the refused node prints the refuser's words as its reason, and must read them right.
    pub(crate) fn differences(&self, peer: &Hello) -> Option<String> {
        let (a, b) = (self.node, peer.node);
        let same = |differ: &mut Vec<String>, what: &str, ours: String, theirs: String| {
            if ours != theirs {
                differ.push(format!("{what}: {ours} on node {a}, {theirs} on node {b}"));
            }
        };
        let mut differ = Vec::new();
        same(
            &mut differ,
            "crate version",
            self.crate_version.clone(),
            peer.crate_version.clone(),
        );
        same(
            &mut differ,
            "message type",
            self.message_type.clone(),
            peer.message_type.clone(),
        );
        same(
            &mut differ,
            "state type",
            self.state_type.clone(),
            peer.state_type.clone(),
        );
        same(
            &mut differ,
            "processes",
            self.processes.to_string(),
            peer.processes.to_string(),
        );
        if self.channels != peer.channels {
            differ.push(format!(
                "topology: {} channels on node {a}, {} on node {b}{}",
                self.channels.len(),
                peer.channels.len(),
                first_difference(&self.channels, &peer.channels)
                    .map(|(k, x, y)| {
                        // As a user names a channel (`0 -> 2`), not as Rust prints an option.
                        let edge = |e: Option<(u32, u32)>| {
                            e.map_or("none".to_string(), |(from, to)| format!("{from} -> {to}"))
                        };
                        format!(
                            " (channel {k}: {} on node {a}, {} on node {b})",
                            edge(x),
                            edge(y)
                        )
                    })
                    .unwrap_or_default()
            ));
        }
        same(
            &mut differ,
            "placement",
            format!("{:?}", self.placement),
            format!("{:?}", peer.placement),
        );
        same(
            &mut differ,
            "longest frame",
            self.max_frame.to_string(),
            peer.max_frame.to_string(),
        );
        same(
            &mut differ,
            "longest whole frame",
            self.max_frame_total.to_string(),
            peer.max_frame_total.to_string(),
        );
        same(
            &mut differ,
            "failure timeout",
            format!("{:?}", Duration::from_nanos(self.failure_timeout_ns)),
            format!("{:?}", Duration::from_nanos(peer.failure_timeout_ns)),
        );
        same(
            &mut differ,
            "application settings",
            format!("{:?}", self.settings),
            format!("{:?}", peer.settings),
        );
        let checksum = |c: Option<u64>| c.map_or("none".to_string(), |c| format!("{c:016x}"));
        same(
            &mut differ,
            "checkpoint restored from",
            checksum(self.checkpoint),
            checksum(peer.checkpoint),
        );
        (!differ.is_empty()).then(|| differ.join("; "))
    }
}

fn first_difference<T: Clone + PartialEq>(
    a: &[T],
    b: &[T],
) -> Option<(usize, Option<T>, Option<T>)> {
    (0..a.len().max(b.len()))
        .find(|&k| a.get(k) != b.get(k))
        .map(|k| (k, a.get(k).cloned(), b.get(k).cloned()))
}

/// The acceptor's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Reply {
    /// Welcome, from the acceptor's start `boot` (see [`Hello::boot`]): frames may follow.
    Welcome { boot: u64 },
    /// Refused, and why (what differs).
    Refused(String),
    /// The cluster already runs, started without this start of the opener: a node does not
    /// join a running cluster (it failed, or the others started without it).
    Running,
}

/// The opener's last frame of start-up, once it has a connection to and from every other
/// node. A node starts its processes, and its failure timeout, only once every other node has
/// said it: a node still connecting to a third one sends nothing for a while, and must not be
/// taken for failed by a node that was quicker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Ready {
    /// Connected to every node.
    Connected,
}

/// An error carried from the node that assembled a snapshot to the node that asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireError {
    /// [`Error::ProcessFailed`].
    ProcessFailed {
        /// The process.
        process: u32,
        /// Its panic message.
        message: String,
    },
    /// [`Error::Shutdown`].
    Shutdown,
    /// [`Error::UnknownSnapshot`].
    UnknownSnapshot(SnapshotId),
    /// [`Error::NodeFailed`].
    NodeFailed {
        /// The node.
        node: u32,
        /// Its processes.
        processes: Vec<u32>,
        /// Why it was declared failed.
        reason: String,
    },
    /// Any other error, as its message ([`Error::Cluster`] on arrival).
    Other(String),
}

impl From<&Error> for WireError {
    fn from(e: &Error) -> Self {
        match e {
            Error::ProcessFailed { process, message } => WireError::ProcessFailed {
                process: *process as u32,
                message: message.clone(),
            },
            Error::Shutdown => WireError::Shutdown,
            Error::UnknownSnapshot(id) => WireError::UnknownSnapshot(*id),
            Error::NodeFailed {
                node,
                processes,
                reason,
            } => WireError::NodeFailed {
                node: *node as u32,
                processes: processes.iter().map(|&p| p as u32).collect(),
                reason: reason.clone(),
            },
            other => WireError::Other(other.to_string()),
        }
    }
}

impl From<WireError> for Error {
    fn from(e: WireError) -> Self {
        match e {
            WireError::ProcessFailed { process, message } => Error::ProcessFailed {
                process: process as usize,
                message,
            },
            WireError::Shutdown => Error::Shutdown,
            WireError::UnknownSnapshot(id) => Error::UnknownSnapshot(id),
            WireError::NodeFailed {
                node,
                processes,
                reason,
            } => Error::NodeFailed {
                node: node as usize,
                processes: processes.into_iter().map(|p| p as usize).collect(),
                reason,
            },
            WireError::Other(message) => Error::Cluster(message),
        }
    }
}

/// What a node tells every other once the cluster has stopped: the final state of its
/// processes and channels, from which every node assembles the cluster's final state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Report<M, S> {
    /// The processes run on the sending node: id, final state (`None`: it failed), and its
    /// failure, if it failed.
    pub(crate) processes: Vec<(u32, Option<S>, Option<String>)>,
    /// Channels into those processes: channel index, messages received, and the messages
    /// left undelivered on it, oldest first.
    pub(crate) incoming: Vec<(u32, u64, Vec<M>)>,
    /// Channels out of those processes: channel index, messages sent.
    pub(crate) outgoing: Vec<(u32, u64)>,
}

/// Everything a node sends after the handshake. Generic so that the same definition encodes
/// from references (`Frame<&M, PartOut<..>, ..>`, see [`FrameOut`]) and decodes to owned
/// values ([`FrameIn`]): serde encodes `&T` as `T`, and each of `packed.rs`' pairs
/// (`PartOut` and `PartIn`, `GlobalOut` and `GlobalIn`) has the same fields, so the two are
/// one format.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Frame<M, P, G, R> {
    /// An application message on channel `channel` (an index of the topology's channels),
    /// its `seq`-th. First of the variants, so its index is 0: `decode_message` reads that.
    Message {
        /// The channel.
        channel: u32,
        /// Its number on the channel, from 1.
        seq: u64,
        /// The message.
        message: M,
    },
    /// A marker of `snapshot`, started by process `initiator`, on channel `first` and on the
    /// `count - 1` channels that follow it among those from its sender to the receiving node,
    /// in number order. One frame for a run of markers: a process that records sends a marker
    /// on every channel out of it at once, in number order, so a snapshot costs one frame per
    /// process and node on the wire instead of one per channel. It stands for `count` frames
    /// of one marker each in its place in the stream, so every channel keeps its order.
    Markers {
        /// The first channel.
        first: u32,
        /// How many channels: at least one.
        count: u32,
        /// The snapshot.
        snapshot: SnapshotId,
        /// The process that started it: where the receiving node's parts go.
        initiator: u32,
    },
    /// The sender asks for snapshot `snapshot` with `initiator` (run by the receiver) as
    /// initiator; the outcome goes back to the sender.
    Start {
        /// The snapshot's id, chosen by the asker.
        snapshot: SnapshotId,
        /// The process to start it.
        initiator: u32,
    },
    /// The sender waits for snapshot `snapshot`, assembled by the receiver: send it the
    /// outcome too (or say at once that no such snapshot is running).
    Watch {
        /// The snapshot.
        snapshot: SnapshotId,
    },
    /// A process's part of a snapshot assembled by the receiver, and when it recorded its
    /// state.
    Part {
        /// How long before the part was sent its process recorded its state, on the sender's
        /// clock (a difference: the two nodes' clocks start at different times). Until format
        /// 7, the time since the sender's node started.
        recorded_before: Duration,
        /// The part.
        part: P,
    },
    /// A process's part of a snapshot assembled by the receiver could not be encoded (its
    /// state's or a recorded message's `Serialize` failed): the snapshot cannot complete.
    PartLost {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The process.
        process: u32,
        /// The codec's reason.
        reason: String,
    },
    /// The end of a snapshot the receiver asked for.
    Outcome {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The global snapshot, or why it failed.
        outcome: Result<G, WireError>,
    },
    /// A process run by the sender has failed.
    Failed {
        /// The process.
        process: u32,
        /// Its panic message.
        message: String,
    },
    /// Nothing: keeps an idle link alive (a link from which nothing arrives for the failure
    /// timeout has failed).
    Heartbeat,
    /// The sender's link with `node` has broken: the sender suspects it (`membership.rs`). With
    /// `node` the sender itself: it has decided it failed, and is closing its links.
    Suspect {
        /// The node suspected.
        node: u32,
        /// Why.
        reason: String,
    },
    /// Stop the cluster (the sender's user asked), with a note for every node.
    Shutdown {
        /// Whatever the node that stopped the cluster wants every node to have.
        note: Vec<u8>,
    },
    /// The sender's processes have stopped: nothing more will come on any channel from them.
    Finished,
    /// The sender's final state (after `Finished` from every node).
    Report(R),
    /// The sender has every node's final report (so it has the cluster's final state): what
    /// lets a node know that the others' verdict is its own (`ClusterStopped::unconfirmed`).
    HaveAll,
}

/// A frame to encode, by reference.
pub(crate) type FrameOut<'a, M, S> =
    Frame<&'a M, PartOut<'a, M, S>, GlobalOut<'a, M, S>, &'a Report<M, S>>;

/// For every channel, the next one in number order from the same sender to a process on the
/// same node: the order a run of markers ([`Frame::Markers`]) follows. The sender joins a marker
/// to a run by it and the receiver takes a run's channels by it, and both compute it from the
/// topology and the placement, which every node shares.
pub(crate) fn next_in_run(wiring: &Wiring, node_of: &[usize]) -> Box<[Option<u32>]> {
    let channels = wiring.channels();
    let mut next = vec![None; channels.len()];
    // Going down the numbers, the last one seen from a sender to a node is the next one up.
    let mut seen: HashMap<(usize, usize), u32> = HashMap::new();
    for (c, channel) in channels.iter().enumerate().rev() {
        next[c] = seen.insert((channel.from, node_of[channel.to]), c as u32);
    }
    next.into_boxed_slice()
}

/// A frame decoded.
pub(crate) type FrameIn<M, S> = Frame<M, PartIn<M, S>, GlobalIn<M, S>, Report<M, S>>;

/// A frame being appended to `buf` from `start`: cut back off when this is dropped without
/// [`keep`](Tentative::keep), on an error or in a `Serialize` that panicked
/// (`frame_with`, under every frame).
struct Tentative<'a> {
    buf: &'a mut Vec<u8>,
    start: usize,
    kept: bool,
}

impl Tentative<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Tentative<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.buf.truncate(self.start);
        }
    }
}

/// Appends postcard's output to a `Vec`. A flavor of its own rather than `to_extend`: postcard
/// hands over each field as a slice of one to ten bytes, and `Vec::extend` made each of them a
/// call of libc's `memmove`. Pushed byte by byte they stay inline: a message frame of the
/// bench's token encodes in 33 ns instead of 38 (this machine, 20 million frames).
///
/// `Use` only tells apart instances of the same code: the application's messages are
/// encoded as `Append<'_, Messages>` on the path every message takes (`encode_message`), and
/// as `Append<'_, ()>` inside every other frame (a snapshot's channel states, say). So the
/// message's `Serialize`, and postcard's code for each of its fields, have one caller on that
/// path, where the compiler puts them inline, instead of several, where it kept them out of
/// line: a call for the message and one for each of its integers, on every message.
struct Append<'a, Use = ()>(&'a mut Vec<u8>, PhantomData<Use>);

/// [`Append`]'s use on the per-message path.
enum Messages {}

impl<'a, Use> Append<'a, Use> {
    fn new(buf: &'a mut Vec<u8>) -> Self {
        Append(buf, PhantomData)
    }
}

/// Slices up to this long are pushed byte by byte: postcard's varints (at most 10 bytes) and
/// small fixed fields.
const SHORT_SLICE: usize = 16;

impl<Use> Flavor for Append<'_, Use> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        if bytes.len() <= SHORT_SLICE {
            self.0.reserve(bytes.len());
            for &byte in bytes {
                self.0.push(byte);
            }
        } else {
            self.0.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Appends `value` to `buf` as one frame (length, then postcard), split into pieces of at most
/// [`MAX_PIECE`] bytes if longer. On an error nothing is appended, and the error says why (a
/// `Serialize` that failed).
pub(crate) fn encode(buf: &mut Vec<u8>, value: &impl Serialize) -> Result<(), String> {
    encode_within(buf, value, FrameLimit::pieces(MAX_PIECE))
}

/// Appends `value` to `buf` as one frame, split into pieces of at most `limit` bytes (the
/// receiver's frame limit, at most [`MAX_PIECE`]) when longer: each piece has its own length,
/// with [`CONTINUED`] set on all but the last, and the reader joins them
/// ([`read_frame`]). So a frame of any size gets through a reader that allocates nothing for
/// a length over its limit. On an error nothing is appended, nor if `value`'s `Serialize`
/// panics (the application's code: the bytes it got out would be half a frame, which the
/// peer would take for garbage from this node).
pub(crate) fn encode_within(
    buf: &mut Vec<u8>,
    value: &impl Serialize,
    limit: FrameLimit,
) -> Result<(), String> {
    frame_with(buf, limit, |buf| {
        postcard::serialize_with_flavor(value, Append::<()>::new(buf))
    })
}

/// Appends `Frame::Message { channel, seq, message }` to `buf` as [`encode_within`] does, with
/// the same bytes (tested), the way every message to another node takes.
///
/// A frame that fits in [`WINDOW`](super::window::WINDOW) bytes (every message of the bench
/// and the bank) is written straight into `WINDOW` zeroed bytes at the end of `buf`, length
/// included, by a serializer of postcard's format of its own ([`Window`]), and `buf` is cut
/// back to the frame's end. A byte written there costs a compare and a store; pushed onto the
/// `Vec` it cost a load of its length and capacity, a compare and two stores (callgrind, 3
/// nodes x 16: `NodeWire::encode` took 343 instructions a frame, 28% of the process threads'
/// own; 251 through postcard into an array on the stack, copied whole; 211 this way). Not on
/// the stack: the array was written a byte at a time and copied out in 16-byte loads, which
/// the processor cannot forward from byte stores (the first of those loads held 30% of
/// `encode`'s samples, `perf annotate`). Anything else (a longer frame, one the limits cut into
/// pieces, a value the window does not write, a message whose `Serialize` fails) takes the
/// general way, through postcard, which gives the same bytes or postcard's error.
#[inline]
pub(crate) fn encode_message<M: Serialize>(
    buf: &mut Vec<u8>,
    channel: u32,
    seq: u64,
    message: &M,
    limit: FrameLimit,
) -> Result<(), String> {
    let start = buf.len();
    buf.extend_from_slice(&[0; WINDOW]);
    // Cut back off unless kept: on the general way below, and if the message's `Serialize`
    // panics half-way.
    let frame = Tentative {
        buf,
        start,
        kept: false,
    };
    let written = match <&mut [u8; WINDOW]>::try_from(&mut frame.buf[start..start + WINDOW]) {
        Ok(bytes) => {
            let mut window = Window::over(bytes, 4);
            message_header(channel, seq, &mut window)
                .and_then(|()| message.serialize(&mut window))
                .map(|()| window.end())
        }
        // Never: the bytes were just added.
        Err(_) => Err(Unwritten),
    };
    if let Ok(end) = written {
        let len = end - 4;
        if len <= limit.whole && len <= limit.piece.clamp(1, MAX_PIECE) {
            frame.buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
            frame.buf.truncate(start + end);
            frame.keep();
            return Ok(());
        }
    }
    drop(frame);
    frame_with(buf, limit, |buf| {
        // The header through a window of its own, so that one function writes it both ways.
        // It takes at most 16 bytes of the 64: the error cannot happen.
        let mut head = [0; WINDOW];
        let mut window = Window::over(&mut head, 0);
        message_header(channel, seq, &mut window)
            .map_err(|Unwritten| postcard::Error::SerializeBufferFull)?;
        let end = window.end();
        buf.extend_from_slice(&head[..end]);
        postcard::serialize_with_flavor(message, Append::<Messages>::new(buf))
    })
}

/// Writes what a message frame holds before its message, as postcard writes
/// `Frame::Message`'s: the variant's index, the channel and the number, into `window` (the
/// frame's, or on the general way one of the header's own).
#[inline(always)]
fn message_header(channel: u32, seq: u64, window: &mut Window<'_>) -> Result<(), Unwritten> {
    window.byte(MESSAGE_VARIANT)?;
    window.varint(u64::from(channel))?;
    window.varint(seq)
}

/// Appends `n` as postcard writes an unsigned integer of any width ([`varint_with`]).
#[inline]
pub(super) fn push_varint(buf: &mut Vec<u8>, n: u64) {
    let pushed: Result<(), std::convert::Infallible> = varint_with(n, |byte| {
        buf.push(byte);
        Ok(())
    });
    pushed.unwrap_or_else(|never| match never {})
}

/// Appends a frame whose body `body` writes: its length first, then the body, split into
/// pieces as [`encode_within`] says.
#[inline]
fn frame_with(
    buf: &mut Vec<u8>,
    limit: FrameLimit,
    body: impl FnOnce(&mut Vec<u8>) -> postcard::Result<()>,
) -> Result<(), String> {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    let frame = Tentative {
        buf,
        start,
        kept: false,
    };
    body(&mut *frame.buf).map_err(|e| e.to_string())?;
    let buf = &mut *frame.buf;
    let len = buf.len() - start - 4;
    if len > limit.whole {
        return Err(format!(
            "{len} bytes encoded, over the cluster's limit of {} for a whole frame",
            limit.whole
        ));
    }
    let limit = limit.piece.clamp(1, MAX_PIECE);
    if len <= limit {
        // `limit` is at most `MAX_PIECE`, which fits with the flag clear.
        buf[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    } else {
        // Rare (a large snapshot part, a large message): a copy is cheap beside the frame.
        let body = buf.split_off(start + 4);
        buf.truncate(start);
        let mut pieces = body.chunks(limit).peekable();
        while let Some(piece) = pieces.next() {
            let more = if pieces.peek().is_some() {
                CONTINUED
            } else {
                0
            };
            buf.extend_from_slice(&(piece.len() as u32 | more).to_le_bytes());
            buf.extend_from_slice(piece);
        }
    }
    frame.keep();
    Ok(())
}

/// `value` in postcard alone, without a frame's length (the `Hello` rides in the handshake's
/// last message, which has its own).
pub(crate) fn to_bytes(value: &impl Serialize) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(value).map_err(|e| e.to_string())
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The connection closed at a frame boundary.
    Closed,
    /// The connection failed, or closed inside a frame.
    Io(io::Error),
    /// A frame announced more bytes than the limit.
    TooLong {
        /// What it announced.
        announced: u64,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a frame of this format.
    Malformed(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "the connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::TooLong { announced, limit } => {
                write!(f, "a frame of {announced} bytes, over the limit of {limit}")
            }
            ReadError::Malformed(why) => write!(f, "a malformed frame: {why}"),
        }
    }
}

/// Reads one frame's bytes into `buf` (replacing what it held), joining its pieces. A piece
/// that announces more than `limit.piece`, or that would make the frame longer than
/// `limit.whole`, is refused before anything is allocated for it, and the bytes of a frame are
/// allocated as they arrive, not as announced, beyond a first 64 KiB: a peer's claim costs
/// nothing until it sends the bytes.
pub(crate) fn read_frame(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    limit: FrameLimit,
) -> Result<(), ReadError> {
    buf.clear();
    let mut header = [0u8; 4];
    // Only the first byte of a frame may meet a clean end of the stream.
    loop {
        match r.read(&mut header[..1]) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    r.read_exact(&mut header[1..]).map_err(ReadError::Io)?;
    loop {
        let word = u32::from_le_bytes(header);
        let announced = (word & !CONTINUED) as usize;
        if announced > limit.piece {
            return Err(ReadError::TooLong {
                announced: announced as u64,
                limit: limit.piece,
            });
        }
        if buf.len().saturating_add(announced) > limit.whole {
            return Err(ReadError::TooLong {
                announced: buf.len().saturating_add(announced) as u64,
                limit: limit.whole,
            });
        }
        let more = word & CONTINUED != 0;
        if more && announced == 0 {
            return Err(ReadError::Malformed(
                "an empty piece of a frame".to_string(),
            ));
        }
        read_piece(r, buf, announced)?;
        if !more {
            return Ok(());
        }
        r.read_exact(&mut header).map_err(ReadError::Io)?;
    }
}

/// The reader's short way: if `bytes` start with a whole frame of one piece within `limit`,
/// returns how many bytes it takes (its length and body) and its body, to decode where it
/// lies. `None` for anything else (a frame cut off at the end of `bytes`, a frame in pieces,
/// one over a limit, an empty `bytes`): [`read_frame`] then reads it, and refuses what it must.
/// Most frames are a few dozen bytes inside a decrypted message of up to 64 KiB, and taking
/// them in place saves `read_frame`'s three reads and copies, and the zeroing, of each.
#[inline]
pub(crate) fn whole_frame(bytes: &[u8], limit: FrameLimit) -> Option<(usize, &[u8])> {
    let header: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
    let word = u32::from_le_bytes(header);
    if word & CONTINUED != 0 {
        return None;
    }
    let len = word as usize;
    if len > limit.piece || len > limit.whole {
        return None;
    }
    let body = bytes.get(4..4 + len)?;
    Some((4 + len, body))
}

/// Where, in `bytes` (whole frames, as encoded), the first frame that does not end by `offset`
/// starts: the frames from there on are not all in `bytes[..offset]`. `bytes.len()` if every
/// frame ends by `offset`.
pub(crate) fn first_frame_past(bytes: &[u8], offset: usize) -> usize {
    // Walked with the frame reader itself (a failed write's path: the copy is no matter), so
    // the framing is defined in one place.
    let (mut rest, mut scratch) = (bytes, Vec::new());
    loop {
        let start = bytes.len() - rest.len();
        if read_frame(&mut rest, &mut scratch, FrameLimit::pieces(usize::MAX)).is_err()
            || bytes.len() - rest.len() > offset
        {
            return start;
        }
    }
}

/// Appends the `len` bytes of one piece to `buf`.
fn read_piece(r: &mut impl Read, buf: &mut Vec<u8>, len: usize) -> Result<(), ReadError> {
    const UPFRONT: usize = 64 << 10;
    let start = buf.len();
    if len <= UPFRONT || len <= buf.capacity() - start {
        // The usual case: room made at once, one exact read.
        buf.resize(start + len, 0);
        return r.read_exact(&mut buf[start..]).map_err(ReadError::Io);
    }
    // Grows only as bytes come.
    Read::take(&mut *r, len as u64)
        .read_to_end(buf)
        .map_err(ReadError::Io)?;
    if buf.len() - start < len {
        return Err(ReadError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Decodes a frame's bytes as a `T`; every byte must be used.
pub(crate) fn decode<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, ReadError> {
    decode_whole(postcard::Deserializer::from_bytes(bytes)).map_err(ReadError::from)
}

/// A `T` from all that `bytes` holds, every byte used, as postcard's `take_from_bytes` reads
/// it; its error kept small (a [`BadFrame`], no text) for the path that runs for every message
/// (`decode_message`), which reads through a flavor of its own. [`decode`] and that path share
/// it, so they refuse the same bytes in the same words.
#[inline]
fn decode_whole<'de, T, F>(mut bytes: postcard::Deserializer<'de, F>) -> Result<T, BadFrame>
where
    T: Deserialize<'de>,
    F: postcard::de_flavors::Flavor<'de, Remainder = &'de [u8]>,
{
    let value = T::deserialize(&mut bytes).map_err(BadFrame::Postcard)?;
    match bytes.finalize() {
        Ok([]) => Ok(value),
        Ok(rest) => Err(BadFrame::LeftOver(rest.len())),
        Err(e) => Err(BadFrame::Postcard(e)),
    }
}

/// Why a frame's bytes did not decode: not what postcard reads as the frame, or bytes left
/// over after it. A [`ReadError::Malformed`] says it in words.
#[derive(Debug)]
pub(crate) enum BadFrame {
    /// Not the frame's fields.
    Postcard(postcard::Error),
    /// This many bytes left over after them.
    LeftOver(usize),
}

impl From<BadFrame> for ReadError {
    fn from(e: BadFrame) -> Self {
        ReadError::Malformed(match e {
            BadFrame::Postcard(e) => e.to_string(),
            BadFrame::LeftOver(n) => format!("{n} bytes left over after the frame"),
        })
    }
}

/// The fields of a [`Frame::Message`] (channel, number, message), decoded straight from a
/// frame's `body` when it is one; `None` for any other frame, which [`decode`] takes as a
/// [`FrameIn`]. postcard writes an enum as its variant's index (a varint: one byte, `0`, for
/// `Message`, the first), then the fields, so both ways give the same values from the same
/// bytes, and refuse the same bytes (tested). The reader takes this way for the frame that
/// comes by the million: a `FrameIn` is as large as its largest variant, and was copied whole
/// on the way out of `decode` for each message (`memmove`, about 2% of the cluster's samples
/// at 3 nodes x 16).
///
/// The two numbers are read here ([`take_varint`]), and only the message by postcard, through
/// a flavor of its own ([`MessageBytes`]): the message's `Deserialize` and postcard's code for
/// its fields then have this one caller, and go inline. Decoded as a tuple with postcard's
/// own flavor, they were calls, and their result was read back from the stack in pieces
/// other than those it was written in (a third of `read_frames`' own samples at 3 nodes x
/// 16). The tuple through `MessageBytes` goes inline too, but costs more: the readers ran
/// 6% more instructions (callgrind, 3 nodes x 16), and this way took 0.83 and 0.93 of its
/// readers' CPU a delivery (paired runs at 2 and 3 nodes x 4).
///
/// Its error is a [`BadFrame`], a few bytes, not a [`ReadError`] with its text: the result
/// is moved through a few frames of calls for each message, and a large one, of fields of
/// several widths, was read back from the stack before its parts were all stored (the loads
/// that stall on their stores were about half the reader's own samples in `read_frames`:
/// BENCHMARKS.md, fourteenth round).
#[inline]
pub(crate) fn decode_message<'de, M: Deserialize<'de>>(
    body: &'de [u8],
) -> Option<Result<(u32, u64, M), BadFrame>> {
    match body.split_first() {
        Some((&MESSAGE_VARIANT, fields)) => Some(decode_message_fields(fields)),
        _ => None,
    }
}

/// [`decode_message`]'s fields after the variant's index.
#[inline]
fn decode_message_fields<'de, M: Deserialize<'de>>(
    fields: &'de [u8],
) -> Result<(u32, u64, M), BadFrame> {
    let (channel, rest) = take_varint(fields, U32_VARINT).map_err(BadFrame::Postcard)?;
    let (seq, rest) = take_varint(rest, U64_VARINT).map_err(BadFrame::Postcard)?;
    let message = decode_whole(postcard::Deserializer::from_flavor(MessageBytes(
        postcard::de_flavors::Slice::new(rest),
    )))?;
    // `U32_VARINT` let through 32 bits at most: the cast loses nothing.
    Ok((channel as u32, seq, message))
}

/// How postcard bounds the varint of an unsigned integer type: at most `bytes` bytes, and the
/// last of that many no more than `last` (the bits left over in the type).
#[derive(Clone, Copy)]
pub(super) struct VarintBound {
    bytes: usize,
    last: u8,
}

/// A `u32`'s: five bytes, four bits in the fifth.
const U32_VARINT: VarintBound = VarintBound {
    bytes: 5,
    last: 0x0f,
};

/// A `u64`'s: ten bytes, one bit in the tenth.
pub(super) const U64_VARINT: VarintBound = VarintBound {
    bytes: 10,
    last: 0x01,
};

/// Reads an unsigned integer off the front of `bytes` as postcard does (the inverse of
/// [`push_varint`], with postcard's checks and errors), and returns it with the bytes after it.
#[inline]
pub(super) fn take_varint(bytes: &[u8], bound: VarintBound) -> postcard::Result<(u64, &[u8])> {
    // The usual numbers first, a byte or two (a frame's channel and number mostly are), with
    // no loop: neither can be a bounded type's last byte (`bound.bytes` is 5 or 10).
    if bound.bytes > 2 {
        match bytes {
            [low, rest @ ..] if low & 0x80 == 0 => return Ok((u64::from(*low), rest)),
            [low, high, rest @ ..] if high & 0x80 == 0 => {
                return Ok((u64::from(low & 0x7f) | u64::from(*high) << 7, rest))
            }
            _ => {}
        }
    }
    let mut value = 0u64;
    for i in 0..bound.bytes {
        let Some(&byte) = bytes.get(i) else {
            return Err(postcard::Error::DeserializeUnexpectedEnd);
        };
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if i == bound.bytes - 1 && byte > bound.last {
                return Err(postcard::Error::DeserializeBadVarint);
            }
            return Ok((value, &bytes[i + 1..]));
        }
    }
    Err(postcard::Error::DeserializeBadVarint)
}

/// postcard's reading from a slice, as a type of its own for the message of each
/// [`Frame::Message`], as [`Append`] is for writing it: see [`decode_message`].
struct MessageBytes<'de>(postcard::de_flavors::Slice<'de>);

impl<'de> postcard::de_flavors::Flavor<'de> for MessageBytes<'de> {
    type Remainder = &'de [u8];
    type Source = &'de [u8];

    #[inline]
    fn pop(&mut self) -> postcard::Result<u8> {
        self.0.pop()
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }

    #[inline]
    fn try_take_n(&mut self, ct: usize) -> postcard::Result<&'de [u8]> {
        self.0.try_take_n(ct)
    }

    #[inline]
    fn finalize(self) -> postcard::Result<&'de [u8]> {
        self.0.finalize()
    }
}

/// The first byte of every [`Frame::Message`] postcard writes: its variant index.
const MESSAGE_VARIANT: u8 = 0;

/// Writes the six bytes that open a connection.
pub(crate) fn preamble() -> [u8; 6] {
    let mut p = [0; 6];
    p[..4].copy_from_slice(&MAGIC);
    p[4..].copy_from_slice(&FORMAT.to_le_bytes());
    p
}

/// Reads and checks the six bytes that open a connection: the format version, or why not.
///
/// The outer `Err` is the connection failing (closed, timed out: worth another try); the inner
/// one is a peer that speaks something else (not worth one).
pub(crate) fn read_preamble(r: &mut impl Read) -> std::io::Result<Result<(), Foreign>> {
    let mut p = [0; 6];
    r.read_exact(&mut p)?;
    if p[..4] != MAGIC {
        return Ok(Err(Foreign::Stranger));
    }
    let version = u16::from_le_bytes([p[4], p[5]]);
    if version != FORMAT {
        return Ok(Err(Foreign::Version(version)));
    }
    Ok(Ok(()))
}

/// A preamble that is not this node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Foreign {
    /// Not this crate's cluster at all: told nothing.
    Stranger,
    /// This crate's cluster, another format version: told ours, so that it can say what
    /// differs.
    Version(u16),
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Foreign::Stranger => f.write_str("not a chandy-lamport cluster connection"),
            Foreign::Version(v) => {
                write!(
                    f,
                    "wire format version {v}; this node speaks version {FORMAT}"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run goes from a sender's channel to the next of its channels to the same node, in
    /// number order, skipping those to other nodes: processes 0, 2 on node 0 and 1, 3 on node 1.
    #[test]
    fn a_run_goes_on_to_the_senders_next_channel_to_the_same_node() {
        let wiring = crate::topology::Topology::complete(4).validate().unwrap();
        let node_of = [0, 1, 0, 1];
        let next = next_in_run(&wiring, &node_of);
        let channel = |from: usize, to: usize| {
            let c = wiring
                .channels()
                .iter()
                .position(|c| (c.from, c.to) == (from, to));
            c.unwrap() as u32
        };
        let after = |from, to| next[channel(from, to) as usize];
        assert_eq!(after(0, 1), Some(channel(0, 3)));
        assert_eq!(after(0, 3), None);
        assert_eq!(after(0, 2), None);
        assert_eq!(after(2, 1), Some(channel(2, 3)));
        assert_eq!(after(1, 0), Some(channel(1, 2)));
        assert_eq!(after(3, 0), Some(channel(3, 2)));
    }

    type Plain = FrameIn<u64, u64>;

    #[test]
    fn a_frame_encoded_by_reference_decodes_to_the_owned_value() {
        let mut buf = Vec::new();
        let message = 42u64;
        let out: FrameOut<'_, u64, u64> = Frame::Message {
            channel: 3,
            seq: 7,
            message: &message,
        };
        encode(&mut buf, &out).unwrap();
        let len = u32::from_le_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len, buf.len() - 4);
        let mut read = Vec::new();
        read_frame(&mut &buf[..], &mut read, FrameLimit::pieces(1024)).unwrap();
        match decode::<Plain>(&read).unwrap() {
            Frame::Message {
                channel,
                seq,
                message,
            } => assert_eq!((channel, seq, message), (3, 7, 42)),
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn a_message_frame_decodes_the_same_by_the_short_way_and_no_other_frame_takes_it() {
        let mut buf = Vec::new();
        // Numbers past one varint byte, and a message of several fields.
        let message = (u64::MAX, 300u32);
        let out: FrameOut<'_, (u64, u32), u64> = Frame::Message {
            channel: 70_000,
            seq: 1 << 40,
            message: &message,
        };
        encode(&mut buf, &out).unwrap();
        let body = &buf[4..];
        let short = decode_message::<(u64, u32)>(body).unwrap().unwrap();
        match decode::<FrameIn<(u64, u32), u64>>(body).unwrap() {
            Frame::Message {
                channel,
                seq,
                message,
            } => assert_eq!(short, (channel, seq, message)),
            other => panic!("decoded {other:?}"),
        }
        assert_eq!(short, (70_000, 1 << 40, message));
        // Bytes left over are refused as `decode` refuses them.
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(matches!(
            decode_message::<(u64, u32)>(&longer),
            Some(Err(BadFrame::LeftOver(1)))
        ));
        // And as `decode` words it.
        let long_way = decode::<FrameIn<(u64, u32), u64>>(&longer).unwrap_err();
        let short_way = decode_message::<(u64, u32)>(&longer).unwrap().unwrap_err();
        assert_eq!(long_way.to_string(), ReadError::from(short_way).to_string());
        // Every other frame goes the long way.
        let id = SnapshotId::random();
        for other in [
            Frame::Markers {
                first: 0,
                count: 1,
                snapshot: id,
                initiator: 0,
            },
            Frame::Watch { snapshot: id },
            Frame::Heartbeat,
            Frame::Finished,
        ] {
            let out: FrameOut<'_, u64, u64> = other;
            let mut buf = Vec::new();
            encode(&mut buf, &out).unwrap();
            assert!(decode_message::<u64>(&buf[4..]).is_none(), "{out:?}");
        }
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        // Announces a piece of 2 GiB - 1 and sends nothing: refused from the length alone.
        let bytes = [0xff, 0xff, 0xff, 0xff];
        let mut buf = Vec::new();
        match read_frame(&mut &bytes[..], &mut buf, FrameLimit::pieces(1 << 20)) {
            Err(ReadError::TooLong { announced, limit }) => {
                assert_eq!((announced, limit), (MAX_PIECE as u64, 1 << 20));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.capacity(), 0, "nothing allocated");
    }

    #[test]
    fn a_claimed_length_under_the_limit_costs_only_the_bytes_that_come() {
        // Announces 1 GiB (under a limit of 2 GiB), sends 10 bytes and ends.
        let mut bytes = (1u32 << 30).to_le_bytes().to_vec();
        bytes.extend_from_slice(&[7; 10]);
        let mut buf = Vec::new();
        match read_frame(&mut &bytes[..], &mut buf, FrameLimit::pieces(MAX_PIECE)) {
            Err(ReadError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
        assert!(
            buf.capacity() < 1 << 20,
            "{} bytes set aside",
            buf.capacity()
        );
    }

    #[test]
    fn a_frame_over_the_limit_goes_in_pieces_and_comes_back_whole() {
        let big: Vec<u64> = (0..if cfg!(miri) { 300 } else { 10_000 }).collect();
        let mut whole = Vec::new();
        encode(&mut whole, &big).unwrap();
        // Every limit at most the body's length: the first piece is always a full one.
        for limit in [64, whole.len() / 3, whole.len() - 5, whole.len() - 4] {
            let mut pieces = Vec::new();
            encode_within(&mut pieces, &big, FrameLimit::pieces(limit)).unwrap();
            // Then an ordinary frame: the reader must stop at the end of the first.
            encode_within(&mut pieces, &5u64, FrameLimit::pieces(limit)).unwrap();
            let mut reader = &pieces[..];
            let mut read = Vec::new();
            read_frame(&mut reader, &mut read, FrameLimit::pieces(limit)).unwrap();
            assert_eq!(read, whole[4..], "limit {limit}");
            assert_eq!(decode::<Vec<u64>>(&read).unwrap(), big);
            read_frame(&mut reader, &mut read, FrameLimit::pieces(limit)).unwrap();
            assert_eq!(decode::<u64>(&read).unwrap(), 5);
            assert!(matches!(
                read_frame(&mut reader, &mut read, FrameLimit::pieces(limit)),
                Err(ReadError::Closed)
            ));
            // A reader with a smaller limit than the sender's refuses the first piece.
            if limit > 64 {
                assert!(matches!(
                    read_frame(&mut &pieces[..], &mut read, FrameLimit::pieces(limit - 1)),
                    Err(ReadError::TooLong { .. })
                ));
            }
        }
    }

    /// The short way takes exactly the frames the long way reads in one piece, and leaves
    /// every other case (cut, in pieces, over a limit) to it: a stream of frames read both ways
    /// gives the same bodies.
    #[test]
    fn whole_frames_are_taken_in_place_and_the_rest_left_to_read_frame() {
        let mut bytes = Vec::new();
        for k in 0..20u64 {
            encode_within(&mut bytes, &vec![k; k as usize * 3], FrameLimit::pieces(40)).unwrap();
        }
        let limit = FrameLimit::pieces(40);
        let (mut long, mut rest, mut buf) = (Vec::new(), &bytes[..], Vec::new());
        while !rest.is_empty() {
            read_frame(&mut rest, &mut buf, limit).unwrap();
            long.push(buf.clone());
        }
        let (mut short, mut at, mut in_place) = (Vec::new(), 0, 0);
        while at < bytes.len() {
            match whole_frame(&bytes[at..], limit) {
                Some((used, body)) => {
                    short.push(body.to_vec());
                    at += used;
                    in_place += 1;
                }
                None => {
                    let mut rest = &bytes[at..];
                    read_frame(&mut rest, &mut buf, limit).unwrap();
                    short.push(buf.clone());
                    at = bytes.len() - rest.len();
                }
            }
        }
        assert_eq!(short, long);
        // The frames within the limit (bodies of 1 + 3k bytes, k <= 13) went the short way.
        assert_eq!(in_place, 14);
        // A frame cut short, or none at all.
        assert_eq!(whole_frame(&bytes[..3], limit), None);
        let first = 4 + u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        assert_eq!(whole_frame(&bytes[..first - 1], limit), None);
        assert!(whole_frame(&bytes[..first], limit).is_some());
        // Over either limit: left to `read_frame`, which refuses it.
        let mut one = Vec::new();
        encode(&mut one, &vec![7u8; 100]).unwrap();
        for limit in [
            FrameLimit::pieces(50),
            FrameLimit {
                piece: 1000,
                whole: 50,
            },
        ] {
            assert_eq!(whole_frame(&one, limit), None);
            assert!(matches!(
                read_frame(&mut &one[..], &mut buf, limit),
                Err(ReadError::TooLong { .. })
            ));
        }
    }

    /// Every piece under the piece limit, but no end to them: refused once the frame passes
    /// the whole limit, before that piece is read (before, the reader kept joining pieces, each
    /// a sign of life, as long as the peer sent them).
    #[test]
    fn pieces_without_end_are_refused_at_the_whole_limit() {
        let piece = 4096;
        let mut bytes = Vec::new();
        for _ in 0..1000 {
            bytes.extend_from_slice(&(piece as u32 | CONTINUED).to_le_bytes());
            bytes.extend_from_slice(&vec![0u8; piece]);
        }
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.push(0);
        let limit = FrameLimit {
            piece,
            whole: 10 * piece,
        };
        let mut buf = Vec::new();
        match read_frame(&mut &bytes[..], &mut buf, limit) {
            Err(ReadError::TooLong { announced, limit }) => {
                assert_eq!((announced, limit), (11 * piece as u64, 10 * piece));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(buf.len(), 10 * piece, "nothing read past the limit");
        // The same frame under a whole limit it fits reads back whole.
        let fits = FrameLimit {
            piece,
            whole: 1000 * piece + 1,
        };
        read_frame(&mut &bytes[..], &mut buf, fits).unwrap();
        assert_eq!(buf.len(), 1000 * piece + 1);
    }

    /// A sender refuses to encode what its peers would refuse to read, leaving its buffer as
    /// it was.
    #[test]
    fn a_frame_over_the_whole_limit_is_not_encoded() {
        let big = vec![7u8; 1000];
        let mut buf = vec![1, 2, 3];
        let limit = FrameLimit {
            piece: 100,
            whole: 500,
        };
        let why = encode_within(&mut buf, &big, limit).unwrap_err();
        assert!(why.contains("over the cluster's limit of 500"), "{why}");
        assert_eq!(buf, [1, 2, 3]);
        encode_within(
            &mut buf,
            &big,
            FrameLimit {
                piece: 100,
                whole: 2000,
            },
        )
        .unwrap();
    }

    #[test]
    fn a_stream_that_ends_between_pieces_is_cut_not_closed() {
        let big: Vec<u64> = (0..1000).collect();
        let mut pieces = Vec::new();
        encode_within(&mut pieces, &big, FrameLimit::pieces(100)).unwrap();
        let mut read = Vec::new();
        // Cut right after the first piece: the frame was promised more.
        match read_frame(&mut &pieces[..104], &mut read, FrameLimit::pieces(100)) {
            Err(ReadError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("{other:?}"),
        }
        // An empty piece that says more follows is malformed.
        let mut empty = CONTINUED.to_le_bytes().to_vec();
        empty.extend_from_slice(&[1, 0, 0, 0, 9]);
        assert!(matches!(
            read_frame(&mut &empty[..], &mut read, FrameLimit::pieces(100)),
            Err(ReadError::Malformed(_))
        ));
    }

    #[test]
    fn truncated_and_surplus_bytes_are_errors_not_panics() {
        let mut buf = Vec::new();
        encode(&mut buf, &FrameOut::<u64, u64>::Heartbeat).unwrap();
        // Cut inside the frame.
        let mut read = Vec::new();
        let cut = &buf[..buf.len() - 1];
        assert!(matches!(
            read_frame(&mut &cut[..], &mut read, FrameLimit::pieces(1024)),
            Err(ReadError::Io(_)) | Err(ReadError::Closed)
        ));
        // A frame with a byte more than its value.
        assert!(matches!(
            decode::<Plain>(&[7, 0]),
            Err(ReadError::Malformed(_))
        ));
        // Nothing at all: closed at a boundary.
        assert!(matches!(
            read_frame(&mut &[][..], &mut read, FrameLimit::pieces(1024)),
            Err(ReadError::Closed)
        ));
    }

    #[test]
    fn typed_errors_keep_their_type_across_the_wire() {
        // A program that matches on the error (a node failure, a process failure) must see
        // the same variant whether the snapshot was assembled here or on another node.
        let errors = [
            Error::NodeFailed {
                node: 2,
                processes: vec![2, 5],
                reason: "the connection closed".into(),
            },
            Error::ProcessFailed {
                process: 4,
                message: "boom".into(),
            },
            Error::Shutdown,
            Error::UnknownSnapshot(SnapshotId::random()),
        ];
        for error in errors {
            let mut buf = Vec::new();
            encode(&mut buf, &WireError::from(&error)).unwrap();
            let back: WireError = decode(&buf[4..]).unwrap();
            assert_eq!(Error::from(back), error);
        }
    }

    /// The message path's varints at postcard's edges: each type's largest value, the first
    /// byte too many, a last byte with bits the type lacks, and a number written longer than
    /// it needs (postcard takes it): both ways agree on each.
    #[test]
    fn the_message_path_reads_varints_at_their_edges_as_postcard_does() {
        let u32_max = [0xff, 0xff, 0xff, 0xff, 0x0f];
        let u32_over = [0xff, 0xff, 0xff, 0xff, 0x10];
        let u32_long = [0xff, 0xff, 0xff, 0xff, 0x80, 0x00];
        let u64_max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let u64_over = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        let padded_zero = [0x80, 0x00];
        // The short ways' edges: the largest of one byte and of two, the smallest of two and
        // of three, and two-byte numbers that run on into the bytes after them.
        let (one_max, two_min, two_max, three_min) =
            ([0x7f], [0x80, 0x01], [0xff, 0x7f], [0x80, 0x80, 0x01]);
        let message = [0x05, 0x07];
        // The channel's bytes, the number's, and what both ways read from them.
        type Case<'a> = (&'a [u8], &'a [u8], Option<(u32, u64)>);
        let cases: [Case<'_>; 10] = [
            (&u32_max, &u64_max, Some((u32::MAX, u64::MAX))),
            (&one_max, &two_min, Some((0x7f, 0x80))),
            (&two_max, &three_min, Some((0x3fff, 0x4000))),
            (&two_min, &[0x80], None),
            (&[0x80], &[], None),
            (&u32_over, &[1], None),
            (&u32_long, &[1], None),
            (&[3], &u64_over, None),
            (&padded_zero, &padded_zero, Some((0, 0))),
            (&[3], &[], None),
        ];
        for (channel, seq, expected) in cases {
            let body = [&[MESSAGE_VARIANT][..], channel, seq, &message].concat();
            let short = decode_message::<(u8, u8)>(&body).expect("a message frame");
            let long = decode::<FrameIn<(u8, u8), u64>>(&body);
            match (short, long) {
                (
                    Ok(values),
                    Ok(Frame::Message {
                        channel,
                        seq,
                        message,
                    }),
                ) => {
                    assert_eq!(values, (channel, seq, message));
                    assert_eq!(Some((channel, seq)), expected, "{body:?}");
                }
                (Err(short), Err(long)) => {
                    assert_eq!(ReadError::from(short).to_string(), long.to_string());
                    assert_eq!(expected, None, "{body:?}");
                }
                (short, long) => panic!("{body:?}: {short:?} one way, {long:?} the other"),
            }
        }
    }

    /// Numbers of each length of varint alike, one byte, two, three or any: `any` alone gives
    /// mostly the longest, and the window and `take_varint` have ways of their own for the
    /// shortest.
    fn number() -> impl proptest::strategy::Strategy<Value = u64> {
        proptest::prop_oneof![
            0u64..0x80,
            0x80u64..0x4000,
            0x4000u64..0x20_0000,
            proptest::prelude::any::<u64>(),
        ]
    }

    /// The same as a `u32`'s.
    fn number32() -> impl proptest::strategy::Strategy<Value = u32> {
        use proptest::strategy::Strategy;
        number().prop_map(|n| n as u32)
    }

    proptest::proptest! {
        // Under Miri, which runs each case a thousand times slower, a handful.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            if cfg!(miri) { 4 } else { 256 }
        ))]

        /// Whatever bytes arrive (random, or a real stream with bytes changed, cut or added),
        /// reading and decoding return a value or an error, never a panic, and never allocate
        /// past the frame limit.
        #[test]
        fn any_bytes_are_a_frame_or_an_error(
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256),
            flips in proptest::collection::vec((0usize..4096, proptest::prelude::any::<u8>()), 0..8),
            cut in 0usize..4096,
        ) {
            let mut stream = Vec::new();
            for (seq, message) in [(1u64, 10u64), (2, u64::MAX), (3, 0)] {
                let out: FrameOut<'_, u64, u64> = Frame::Message { channel: 1, seq, message: &message };
                encode(&mut stream, &out).unwrap();
            }
            encode(&mut stream, &FrameOut::<u64, u64>::Heartbeat).unwrap();
            encode(&mut stream, &WireError::Other("x".into())).unwrap();
            for (at, byte) in &flips {
                if !stream.is_empty() {
                    let i = at % stream.len();
                    stream[i] ^= byte;
                }
            }
            stream.truncate(cut.max(1).min(stream.len()));
            stream.extend_from_slice(&noise);
            for bytes in [&stream[..], &noise[..]] {
                let mut reader = bytes;
                let mut buf = Vec::new();
                while let Ok(()) = read_frame(&mut reader, &mut buf, FrameLimit::pieces(64)) {
                    proptest::prop_assert!(buf.len() <= 64);
                    let _ = decode::<Plain>(&buf);
                    let _ = decode::<WireError>(&buf);
                }
            }
        }

        /// The message path (`encode_message`) appends the bytes of `Frame::Message` as
        /// postcard writes it (`encode_within`), for any numbers, whole or in pieces, after
        /// what the buffer holds; and refuses a frame over the whole limit as it does, leaving
        /// the buffer as it was. The messages' tails (0 to 80 bytes) put frames on both sides
        /// of the window's 64, and the limits cut some of either kind.
        #[test]
        fn the_message_path_writes_what_postcard_writes(
            channel in number32(),
            seq in number(),
            message in (number(), number32(), proptest::prelude::any::<bool>()),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            held in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
            piece in 1usize..128,
            whole in 0usize..128,
        ) {
            let message = (message.0, message.1, message.2, tail);
            for limit in [FrameLimit::pieces(piece), FrameLimit { piece, whole }] {
                both_ways_agree(channel, seq, &message, &held, limit)?;
            }
        }

        /// The window's serializer (`window.rs`) writes what postcard writes, or leaves
        /// the frame to postcard: messages of a few values of every kind serde has, each in a
        /// variant of its own, so some fit the window and some do not; among them values the
        /// window leaves to postcard (a sequence of unknown length, a string through
        /// `collect_str`) and a `Serialize` that fails, for which both ways give postcard's
        /// error and leave the buffer as it was.
        #[test]
        fn the_window_writes_what_postcard_writes_for_every_kind_of_value(
            channel in number32(),
            seq in number(),
            message in proptest::collection::vec(every_kind::leaf(), 0..6),
            held in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..8),
            piece in 1usize..128,
        ) {
            for limit in [FrameLimit::pieces(piece), FrameLimit::pieces(MAX_PIECE)] {
                both_ways_agree(channel, seq, &message, &held, limit)?;
            }
        }

        /// The message path (`decode_message`) takes from any bytes what postcard takes as a
        /// `Frame::Message`, and refuses what it refuses, in the same words: random bytes, and
        /// real frames with bytes changed, cut or added.
        #[test]
        fn the_message_path_reads_what_postcard_reads(
            channel in number32(),
            seq in number(),
            message in (number(), number32()),
            flips in proptest::collection::vec((0usize..32, proptest::prelude::any::<u8>()), 0..3),
            cut in 1usize..32,
            noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..24),
        ) {
            let mut real = Vec::new();
            encode_message(&mut real, channel, seq, &message, FrameLimit::pieces(MAX_PIECE))
                .unwrap();
            let mut changed = real[4..].to_vec();
            for (at, byte) in &flips {
                // The variant's index stays: a frame of another variant is not this path's.
                let i = 1 + at % (changed.len() - 1);
                changed[i] ^= byte;
            }
            changed.truncate(cut.max(1));
            changed.extend_from_slice(&noise);
            let random = [&[MESSAGE_VARIANT][..], &noise].concat();
            for body in [&real[4..], &changed[..], &random[..]] {
                let short = decode_message::<(u64, u32)>(body);
                let long = decode::<FrameIn<(u64, u32), u64>>(body);
                match (short, long) {
                    (Some(Ok(values)), Ok(Frame::Message { channel, seq, message })) => {
                        proptest::prop_assert_eq!(values, (channel, seq, message));
                    }
                    (Some(Err(short)), Err(long)) => {
                        proptest::prop_assert_eq!(
                            ReadError::from(short).to_string(),
                            long.to_string()
                        );
                    }
                    (short, long) => {
                        proptest::prop_assert!(false, "{body:?}: {short:?}, {long:?}");
                    }
                }
            }
            let short = decode_message::<(u64, u32)>(&real[4..]).unwrap().unwrap();
            proptest::prop_assert_eq!(short, (channel, seq, message));
        }
    }

    #[test]
    fn the_preamble_says_the_version() {
        assert!(matches!(read_preamble(&mut &preamble()[..]), Ok(Ok(()))));
        let mut other = preamble();
        other[4] = 9;
        let foreign = read_preamble(&mut &other[..]).unwrap().unwrap_err();
        assert_eq!(foreign, Foreign::Version(9));
        assert_eq!(
            foreign.to_string(),
            format!("wire format version 9; this node speaks version {FORMAT}")
        );
        assert!(read_preamble(&mut &b"GET / HTTP/1.1"[..]).unwrap().is_err());
        // Cut short is the connection failing, not a peer that speaks something else.
        assert!(read_preamble(&mut &preamble()[..3]).is_err());
    }

    #[test]
    fn hellos_that_differ_say_how() {
        let ours = Hello {
            crate_version: "0.1.0".into(),
            message_type: "bank::Transfer".into(),
            state_type: "u64".into(),
            node: 0,
            boot: 7,
            processes: 3,
            channels: vec![(0, 1), (1, 2), (2, 0)],
            placement: vec![vec![0], vec![1, 2]],
            checkpoint: None,
            max_frame: 1 << 20,
            max_frame_total: 1 << 30,
            failure_timeout_ns: 3_000_000_000,
            settings: "--in-flight 4".into(),
        };
        assert_eq!(
            ours.differences(&Hello {
                node: 1,
                boot: 8,
                ..ours.clone()
            }),
            None
        );
        let theirs = Hello {
            node: 1,
            message_type: "other::Transfer".into(),
            placement: vec![vec![0, 1], vec![2]],
            ..ours.clone()
        };
        let said = ours.differences(&theirs).unwrap();
        assert_eq!(
            said,
            "message type: bank::Transfer on node 0, other::Transfer on node 1; \
             placement: [[0], [1, 2]] on node 0, [[0, 1], [2]] on node 1"
        );
        let ring = Hello {
            node: 2,
            channels: vec![(0, 1), (1, 0)],
            ..ours.clone()
        };
        assert_eq!(
            ours.differences(&ring).unwrap(),
            "topology: 3 channels on node 0, 2 on node 2 (channel 1: 1 -> 2 on node 0, 1 -> 0 on \
             node 2)"
        );
        let shorter = Hello {
            node: 1,
            channels: vec![(0, 1), (1, 2)],
            checkpoint: Some(0xab),
            ..ours.clone()
        };
        assert_eq!(
            ours.differences(&shorter).unwrap(),
            "topology: 3 channels on node 0, 2 on node 1 (channel 2: 2 -> 0 on node 0, none on \
             node 1); checkpoint restored from: none on node 0, 00000000000000ab on node 1"
        );
        let richer = Hello {
            node: 2,
            settings: "--in-flight 10".into(),
            ..ours.clone()
        };
        assert_eq!(
            ours.differences(&richer).unwrap(),
            "application settings: \"--in-flight 4\" on node 0, \"--in-flight 10\" on node 2"
        );
        let hastier = Hello {
            node: 1,
            failure_timeout_ns: 500_000_000,
            ..ours.clone()
        };
        assert_eq!(
            ours.differences(&hastier).unwrap(),
            "failure timeout: 3s on node 0, 500ms on node 1"
        );
    }

    /// The message path (`encode_message`) appends to `held` what postcard writes as
    /// `Frame::Message { channel, seq, message }` (`encode_within`), or fails as it does, and
    /// then leaves `held` as it was.
    fn both_ways_agree<M: Serialize>(
        channel: u32,
        seq: u64,
        message: &M,
        held: &[u8],
        limit: FrameLimit,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let out: FrameOut<'_, M, u64> = Frame::Message {
            channel,
            seq,
            message,
        };
        let (mut long, mut short) = (held.to_vec(), held.to_vec());
        let long_way = encode_within(&mut long, &out, limit);
        let short_way = encode_message(&mut short, channel, seq, message, limit);
        proptest::prop_assert_eq!(&short_way, &long_way);
        proptest::prop_assert_eq!(&short, &long);
        if short_way.is_err() {
            proptest::prop_assert_eq!(&short[..], held);
        }
        Ok(())
    }

    /// A message whose `Serialize` panics half-way, after writing some of itself, leaves the
    /// staging buffer as it was, on the window's way (a short message) and on postcard's (a
    /// long one): the peer never gets half a frame.
    #[test]
    fn a_serialize_that_panics_leaves_the_buffer_as_it_was() {
        struct Panics(Vec<u8>);
        impl Serialize for Panics {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple(2)?;
                t.serialize_element(&self.0)?;
                panic!("the application's Serialize panicked");
            }
        }
        for len in [3, 200] {
            let held = vec![7u8; 5];
            let mut buf = held.clone();
            let message = Panics(vec![1; len]);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                encode_message(&mut buf, 3, 9, &message, FrameLimit::pieces(MAX_PIECE))
            }));
            assert!(outcome.is_err(), "the panic comes through");
            assert_eq!(buf, held, "a message of {len} bytes left half a frame");
        }
    }

    /// Values of every kind in serde's data model, for the window's test.
    mod every_kind {
        use std::collections::BTreeMap;
        use std::fmt;

        use proptest::prelude::*;
        use serde::ser::{Error as _, SerializeSeq};
        use serde::{Serialize, Serializer};

        #[derive(Clone, Debug, Serialize)]
        pub(super) struct UnitStruct;

        #[derive(Clone, Debug, Serialize)]
        pub(super) struct NewtypeStruct(i32);

        #[derive(Clone, Debug, Serialize)]
        pub(super) struct TupleStruct(f32, i16);

        /// Written with `serialize_bytes` (a `Vec<u8>` is a sequence).
        #[derive(Clone, Debug)]
        pub(super) struct Bytes(Vec<u8>);

        impl Serialize for Bytes {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }

        /// A sequence that does not say its length: postcard's error.
        #[derive(Clone, Debug)]
        pub(super) struct UnknownLength(u8);

        impl Serialize for UnknownLength {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(None)?;
                seq.serialize_element(&self.0)?;
                seq.end()
            }
        }

        /// A string written through `Display`.
        #[derive(Clone, Debug)]
        pub(super) struct Displayed(u64);

        impl Serialize for Displayed {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl fmt::Display for Displayed {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{}>", self.0)
            }
        }

        /// A `Serialize` that fails.
        #[derive(Clone, Debug)]
        pub(super) struct Fails;

        impl Serialize for Fails {
            fn serialize<S: Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(S::Error::custom("this value does not serialize"))
            }
        }

        #[derive(Clone, Debug, Serialize)]
        pub(super) enum Leaf {
            Bool(bool),
            I8(i8),
            I16(i16),
            I32(i32),
            I64(i64),
            I128(i128),
            U8(u8),
            U16(u16),
            U32(u32),
            U64(u64),
            U128(u128),
            F32(f32),
            F64(f64),
            Char(char),
            Str(String),
            Bytes(Bytes),
            Option(Option<u16>),
            Unit(()),
            UnitStruct(UnitStruct),
            Newtype(NewtypeStruct),
            TupleStruct(TupleStruct),
            Tuple((u8, i64)),
            Seq(Vec<u32>),
            Map(BTreeMap<u8, bool>),
            UnitVariant,
            TupleVariant(u8, i8),
            StructVariant { x: u32, y: i64 },
            UnknownLength(UnknownLength),
            Displayed(Displayed),
            Fails(Fails),
        }

        /// Any [`Leaf`]; the three the window leaves to postcard, rarely.
        pub(super) fn leaf() -> impl Strategy<Value = Leaf> {
            prop_oneof![
                4 => any::<bool>().prop_map(Leaf::Bool),
                4 => any::<i8>().prop_map(Leaf::I8),
                4 => any::<i16>().prop_map(Leaf::I16),
                4 => any::<i32>().prop_map(Leaf::I32),
                4 => any::<i64>().prop_map(Leaf::I64),
                4 => any::<i128>().prop_map(Leaf::I128),
                4 => any::<u8>().prop_map(Leaf::U8),
                4 => any::<u16>().prop_map(Leaf::U16),
                4 => any::<u32>().prop_map(Leaf::U32),
                4 => any::<u64>().prop_map(Leaf::U64),
                4 => any::<u128>().prop_map(Leaf::U128),
                4 => any::<f32>().prop_map(Leaf::F32),
                4 => any::<f64>().prop_map(Leaf::F64),
                4 => any::<char>().prop_map(Leaf::Char),
                4 => ".{0,12}".prop_map(Leaf::Str),
                4 => proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| Leaf::Bytes(Bytes(b))),
                4 => any::<Option<u16>>().prop_map(Leaf::Option),
                4 => Just(Leaf::Unit(())),
                4 => Just(Leaf::UnitStruct(UnitStruct)),
                4 => any::<i32>().prop_map(|n| Leaf::Newtype(NewtypeStruct(n))),
                4 => any::<(f32, i16)>().prop_map(|(a, b)| Leaf::TupleStruct(TupleStruct(a, b))),
                4 => any::<(u8, i64)>().prop_map(Leaf::Tuple),
                4 => proptest::collection::vec(any::<u32>(), 0..4).prop_map(Leaf::Seq),
                4 => proptest::collection::btree_map(any::<u8>(), any::<bool>(), 0..4).prop_map(Leaf::Map),
                4 => Just(Leaf::UnitVariant),
                4 => any::<(u8, i8)>().prop_map(|(a, b)| Leaf::TupleVariant(a, b)),
                4 => any::<(u32, i64)>().prop_map(|(x, y)| Leaf::StructVariant { x, y }),
                1 => any::<u8>().prop_map(|n| Leaf::UnknownLength(UnknownLength(n))),
                1 => any::<u64>().prop_map(|n| Leaf::Displayed(Displayed(n))),
                1 => Just(Leaf::Fails(Fails)),
            ]
        }
    }
}
