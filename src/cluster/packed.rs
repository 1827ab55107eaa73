//! Snapshot parts and outcomes as they travel between nodes ([`Frame::Part`] and
//! [`Frame::Outcome`](super::wire::Frame::Outcome)): still serde through postcard, but in a
//! shape of their own rather than the public types' derived one.
//!
//! Why: a snapshot is mostly counts, and most channel states are empty. Derived, a part is one
//! postcard call per count and per channel state (a vector's length), out of line, on both
//! sides; and a global snapshot, which goes back to the node that asked for it, is five per
//! channel (`from`, `to`, `sent`, `received`, the length of its messages). At 3 nodes x 16
//! processes, encoding and decoding them was about 150M of the 470M instructions that 100
//! snapshots added to a run (callgrind: BENCHMARKS.md, eighteenth round). So here:
//! - counts travel as one byte string of postcard's varints ([`Counts`]), the bytes postcard
//!   writes for each number, written by [`push_varint`] and read by [`read_varints`], inline;
//! - channel states travel only when they hold a message, each with its channel's index
//!   ([`Sparse`]); the rest are empty by omission;
//! - a global snapshot's channels travel in the order of the cluster's channels, which every
//!   node has (the nodes check they run the same topology), so not their ends: each is two
//!   numbers, `sent` and how far `received` is from it ([`ChannelCounts`]).
//!
//! Decoding gives the raw fields ([`PartIn`], [`GlobalIn`]); [`PartIn::unpack`] and
//! [`GlobalIn::unpack`] check what the shape cannot say (indexes in order and in range, whole
//! channels) and build the public types, or say in words what a peer got wrong.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::wire::push_varint;
#[cfg(test)]
use super::wire::{take_varint, U64_VARINT};
use crate::ids::Channel;
use crate::snapshot::{
    ChannelSnapshot, GlobalSnapshot, LocalSnapshot, RecordedMessage, SnapshotId,
};

/// The channel states that hold messages, each with its channel's index, as [`Sparse`] writes
/// them.
type Held<M> = Vec<(usize, Vec<RecordedMessage<M>>)>;

/// A part to send: [`LocalSnapshot`]'s fields, its counts packed and its empty channel states
/// left out. [`PartIn`] reads it back.
#[derive(Debug, Serialize)]
pub(crate) struct PartOut<'a, M, S> {
    id: SnapshotId,
    process: usize,
    initiated: bool,
    state: &'a S,
    sent: Counts<'a>,
    received: Counts<'a>,
    /// By incoming channel as `received`: one channel state for each count there.
    recorded: Sparse<'a, Vec<RecordedMessage<M>>, M>,
}

impl<'a, M, S> PartOut<'a, M, S> {
    /// `part`, to encode. A part whose channel states are not one for each of its incoming
    /// channels (`received`) does not encode (the recorder never makes one).
    pub(crate) fn new(part: &'a LocalSnapshot<M, S>) -> Self {
        PartOut {
            id: part.id,
            process: part.process,
            initiated: part.initiated,
            state: &part.state,
            sent: Counts(&part.sent),
            received: Counts(&part.received),
            recorded: Sparse {
                items: &part.recorded,
                expected: part.received.len(),
                messages: |r| r,
            },
        }
    }
}

/// A part as decoded; [`unpack`](PartIn::unpack) makes it a [`LocalSnapshot`].
#[derive(Debug, Deserialize)]
pub(crate) struct PartIn<M, S> {
    id: SnapshotId,
    process: usize,
    initiated: bool,
    state: S,
    sent: CountsIn,
    received: CountsIn,
    recorded: Held<M>,
}

impl<M, S> PartIn<M, S> {
    /// The part, or what is wrong with its channel states.
    pub(crate) fn unpack(self) -> Result<LocalSnapshot<M, S>, String> {
        let recorded = spread(self.recorded, self.received.0.len())?;
        Ok(LocalSnapshot {
            id: self.id,
            process: self.process,
            initiated: self.initiated,
            state: self.state,
            sent: self.sent.0,
            received: self.received.0,
            recorded,
        })
    }

    /// The process whose part this is.
    pub(crate) fn process(&self) -> usize {
        self.process
    }
}

/// A global snapshot to send: [`GlobalSnapshot`]'s fields, its channels' counts packed
/// together (not their ends), its messages only where there are some. [`GlobalIn`] reads it
/// back.
#[derive(Debug, Serialize)]
pub(crate) struct GlobalOut<'a, M, S> {
    id: SnapshotId,
    initiator: usize,
    started_at: Duration,
    completed_at: Duration,
    recorded_at: &'a [Duration],
    states: &'a [S],
    /// `sent` of each channel and how far `received` is from it, in the cluster's order.
    channels: ChannelCounts<'a, M>,
    /// By channel, as `channels`.
    messages: Sparse<'a, ChannelSnapshot<M>, M>,
}

impl<'a, M, S> GlobalOut<'a, M, S> {
    /// `global`, to encode for a node of a cluster whose channels are `order`. A snapshot
    /// whose channels are not those, in that order, does not encode (the collector assembles
    /// every snapshot in that order).
    pub(crate) fn new(global: &'a GlobalSnapshot<M, S>, order: &'a [Channel]) -> Self {
        GlobalOut {
            id: global.id,
            initiator: global.initiator,
            started_at: global.started_at,
            completed_at: global.completed_at,
            recorded_at: &global.recorded_at,
            states: &global.states,
            channels: ChannelCounts {
                channels: &global.channels,
                order,
            },
            messages: Sparse {
                items: &global.channels,
                expected: global.channels.len(),
                messages: |c| &c.messages,
            },
        }
    }
}

/// A global snapshot as decoded; [`unpack`](GlobalIn::unpack) makes it a [`GlobalSnapshot`].
#[derive(Debug, Deserialize)]
pub(crate) struct GlobalIn<M, S> {
    id: SnapshotId,
    initiator: usize,
    started_at: Duration,
    completed_at: Duration,
    recorded_at: Vec<Duration>,
    states: Vec<S>,
    channels: CountsIn,
    messages: Held<M>,
}

impl<M, S> GlobalIn<M, S> {
    /// The global snapshot of a cluster whose channels are `order`, or what is wrong with its
    /// channels.
    pub(crate) fn unpack(self, order: &[Channel]) -> Result<GlobalSnapshot<M, S>, String> {
        let numbers = self.channels.0;
        if numbers.len() != 2 * order.len() {
            return Err(format!(
                "{} numbers for its channels, not two for each of the {} channels",
                numbers.len(),
                order.len()
            ));
        }
        let messages = spread(self.messages, order.len())?;
        // A loop: a `collect` here was a call per channel (callgrind).
        let mut channels = Vec::with_capacity(order.len());
        for ((n, messages), &channel) in numbers.chunks_exact(2).zip(messages).zip(order) {
            channels.push(ChannelSnapshot {
                channel,
                sent: n[0],
                received: n[0].wrapping_sub(unzigzag(n[1])),
                messages,
            });
        }
        Ok(GlobalSnapshot {
            id: self.id,
            initiator: self.initiator,
            started_at: self.started_at,
            completed_at: self.completed_at,
            recorded_at: self.recorded_at,
            states: self.states,
            channels,
        })
    }

    /// The outcome of snapshot `id` from another node, as [`unpack`](GlobalIn::unpack) makes
    /// it, if it fits a cluster of `processes` processes with channels `order`
    /// ([`outcome_fits`]); else what does not fit.
    pub(crate) fn unpack_outcome(
        self,
        id: SnapshotId,
        order: &[Channel],
        processes: usize,
    ) -> Result<GlobalSnapshot<M, S>, String> {
        let global = self.unpack(order)?;
        outcome_fits(&global, id, processes)?;
        Ok(global)
    }
}

/// Whether `global`, unpacked from the outcome of snapshot `id` another node sent, fits a
/// cluster of `processes` processes: its own id, an initiator among them, and a state and a
/// record time for each. (`unpack` checks its channels, which the encoding itself depends on;
/// these are checked apart from it, on the snapshot, so that the encoding's own tests may
/// carry any values here.) An outcome that does not fit is the sender's fault, as one with
/// other channels is; let through, it would reach the user as the snapshot asked for, with
/// states that do not match the processes.
fn outcome_fits<M, S>(
    global: &GlobalSnapshot<M, S>,
    id: SnapshotId,
    processes: usize,
) -> Result<(), String> {
    if global.id != id {
        return Err(format!("it is the outcome of snapshot {}", global.id));
    }
    if global.initiator >= processes {
        return Err(format!(
            "its initiator is process {}, not one of the {processes} processes",
            global.initiator
        ));
    }
    for (what, len) in [
        ("states", global.states.len()),
        ("record times", global.recorded_at.len()),
    ] {
        if len != processes {
            return Err(format!(
                "{len} {what}, not one for each of the {processes} processes"
            ));
        }
    }
    Ok(())
}

/// Numbers written as one byte string of postcard's varints.
#[derive(Debug)]
struct Counts<'a>(&'a [u64]);

impl Serialize for Counts<'_> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        // Three bytes a count is typical (up to two million); it grows if need be.
        varints(serializer, self.0.len() * 3, |bytes| {
            for &n in self.0 {
                push_varint(bytes, n);
            }
        })
    }
}

/// Each channel's `sent`, then how far its `received` is from it ([`zigzag`]: mostly a byte,
/// since they differ by the messages in flight), as [`Counts`] writes numbers. Its ends are
/// left out: the channels are `order`'s, in turn, which the reader has too.
///
/// Why: a global snapshot goes back to the node that asked for it whole, a channel at a time
/// (2,256 at 3 nodes x 16). With the ends and `received` in full, four numbers and about six
/// bytes a channel; now two numbers and about three bytes (callgrind: BENCHMARKS.md,
/// nineteenth round).
#[derive(Debug)]
struct ChannelCounts<'a, M> {
    channels: &'a [ChannelSnapshot<M>],
    order: &'a [Channel],
}

impl<M> Serialize for ChannelCounts<'_, M> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        let in_order = self.channels.len() == self.order.len()
            && self
                .channels
                .iter()
                .zip(self.order)
                .all(|(c, &channel)| c.channel == channel);
        if !in_order {
            return Err(serde::ser::Error::custom(
                "its channels are not the cluster's, in its order",
            ));
        }
        varints(serializer, self.channels.len() * 4, |bytes| {
            for c in self.channels {
                push_varint(bytes, c.sent);
                push_varint(bytes, zigzag(c.sent.wrapping_sub(c.received)));
            }
        })
    }
}

/// `d`, a difference of two counts taken modulo 2^64, as a number that is small when the
/// difference is small either way: 0, -1, 1, -2... become 0, 1, 2, 3... (so a varint of it is
/// a byte for differences up to 63 either way). [`unzigzag`] undoes it, for every `d`.
fn zigzag(d: u64) -> u64 {
    (d << 1) ^ ((d as i64) >> 63) as u64
}

/// What [`zigzag`] made `z` from.
fn unzigzag(z: u64) -> u64 {
    (z >> 1) ^ (z & 1).wrapping_neg()
}

/// Serializes as a byte string what `write` appends (about `capacity` bytes).
fn varints<Z: Serializer>(
    serializer: Z,
    capacity: usize,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<Z::Ok, Z::Error> {
    let mut bytes = Vec::with_capacity(capacity);
    write(&mut bytes);
    serializer.serialize_bytes(&bytes)
}

/// [`Counts`] read back: the numbers.
#[derive(Debug)]
struct CountsIn(Vec<u64>);

impl<'de> Deserialize<'de> for CountsIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(CountsVisitor)
    }
}

struct CountsVisitor;

impl Visitor<'_> for CountsVisitor {
    type Value = CountsIn;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string of varints")
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<CountsIn, E> {
        read_varints(bytes).map(CountsIn).map_err(E::custom)
    }
}

/// The numbers in `bytes`, postcard's varints one after another, with postcard's checks: as
/// [`take_varint`](super::wire::take_varint) in a loop would read them (tested), in one pass
/// over the bytes. Not that loop, which restarts its bounds and its slice for each number:
/// callgrind, 3 nodes x 16 with 100 snapshots, the decoding of parts' and outcomes' fields
/// (postcard's `next_element`, and this function where it stays out of line) took 51.0M
/// instructions with it and 44.5M with this.
fn read_varints(bytes: &[u8]) -> postcard::Result<Vec<u64>> {
    // Each number ends with the one byte of it whose high bit is clear: so many numbers,
    // allocated at once (a count the compiler makes wide, and bounded by what arrived).
    let ends = bytes.iter().filter(|&&b| b & 0x80 == 0).count();
    let mut numbers = Vec::with_capacity(ends);
    let (mut value, mut shift) = (0u64, 0u32);
    for &byte in bytes {
        // A u64's tenth byte has one bit to give, and ends it.
        if shift == 63 && byte > 0x01 {
            return Err(postcard::Error::DeserializeBadVarint);
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            numbers.push(value);
            (value, shift) = (0, 0);
        } else {
            shift += 7;
        }
    }
    if shift != 0 {
        return Err(postcard::Error::DeserializeUnexpectedEnd);
    }
    Ok(numbers)
}

/// The items of `items` whose messages are not empty, each as (its index, its messages): a
/// sequence postcard writes with its length first. `expected`: how many items the reader
/// takes there to be (it knows from elsewhere in the frame); a different number does not
/// encode, since the reader could not tell.
#[derive(Debug)]
struct Sparse<'a, T, M> {
    items: &'a [T],
    expected: usize,
    messages: fn(&T) -> &Vec<RecordedMessage<M>>,
}

impl<T, M: Serialize> Serialize for Sparse<'_, T, M> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        if self.items.len() != self.expected {
            return Err(serde::ser::Error::custom(format!(
                "{} channel states for {} channels",
                self.items.len(),
                self.expected
            )));
        }
        let held = |item: &&T| !(self.messages)(item).is_empty();
        let mut seq = serializer.serialize_seq(Some(self.items.iter().filter(held).count()))?;
        for (i, item) in self.items.iter().enumerate() {
            let messages = (self.messages)(item);
            if !messages.is_empty() {
                seq.serialize_element(&(i, messages))?;
            }
        }
        seq.end()
    }
}

/// [`Sparse`]'s pairs back into `len` channel states, the missing ones empty. Refused: an
/// index out of range or not above the one before, or an empty state (the sender leaves those
/// out), so that one snapshot has one encoding.
fn spread<M>(pairs: Held<M>, len: usize) -> Result<Vec<Vec<RecordedMessage<M>>>, String> {
    let mut states: Vec<Vec<RecordedMessage<M>>> = (0..len).map(|_| Vec::new()).collect();
    let mut next = 0;
    for (i, messages) in pairs {
        if i < next || i >= len {
            return Err(format!(
                "channel state {i} out of order or past the {len} channels"
            ));
        }
        if messages.is_empty() {
            return Err(format!("channel state {i} sent empty"));
        }
        states[i] = messages;
        next = i + 1;
    }
    Ok(states)
}

/// Bytes serialized as postcard's byte string, the way counts travel: for tests that write a
/// part's fields as a peer might.
#[cfg(test)]
pub(super) struct ByteString<'a>(pub(super) &'a [u8]);

#[cfg(test)]
impl Serialize for ByteString<'_> {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        serializer.serialize_bytes(self.0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;
    use crate::cluster::wire::{self, Frame, FrameIn, FrameOut};

    fn recorded(seqs: &[u64]) -> Vec<RecordedMessage<(u64, u32)>> {
        seqs.iter()
            .map(|&seq| RecordedMessage {
                seq,
                message: Arc::new((seq.wrapping_mul(3), seq as u32)),
            })
            .collect()
    }

    /// A part of `channels` incoming and outgoing channels, its numbers from `numbers`
    /// (cycled), a message recorded on each channel whose bit is set in `held`.
    fn part(channels: usize, numbers: &[u64], held: u64) -> LocalSnapshot<(u64, u32), u64> {
        let n = |i: usize| numbers.get(i % numbers.len().max(1)).copied().unwrap_or(0);
        LocalSnapshot {
            id: SnapshotId::random(),
            process: n(0) as usize,
            initiated: n(1) % 2 == 1,
            state: n(2),
            sent: (0..channels).map(|i| n(i + 3)).collect(),
            received: (0..channels).map(|i| n(i + 5)).collect(),
            recorded: (0..channels)
                .map(|i| match held >> (i % 64) & 1 {
                    1 => recorded(&[n(i), n(i + 1)][..1 + i % 2]),
                    _ => Vec::new(),
                })
                .collect(),
        }
    }

    /// `out` encoded as a node sends it, and decoded as a node reads it.
    fn through_the_wire(
        out: &FrameOut<'_, (u64, u32), u64>,
    ) -> Result<FrameIn<(u64, u32), u64>, String> {
        let mut buf = Vec::new();
        wire::encode(&mut buf, out)?;
        wire::decode(&buf[4..]).map_err(|e| e.to_string())
    }

    /// `part` through a frame, as nodes send it, and back.
    fn through_a_frame(
        part: &LocalSnapshot<(u64, u32), u64>,
    ) -> Result<LocalSnapshot<(u64, u32), u64>, String> {
        match through_the_wire(&Frame::Part {
            recorded_before: Duration::from_nanos(7),
            part: PartOut::new(part),
        })? {
            Frame::Part {
                recorded_before,
                part,
            } => {
                assert_eq!(recorded_before, Duration::from_nanos(7));
                part.unpack()
            }
            other => panic!("{other:?}"),
        }
    }

    /// A global snapshot of `processes` processes in a complete graph, numbers from `numbers`,
    /// a message recorded on each channel whose bit is set in `held`.
    fn global(processes: usize, numbers: &[u64], held: u64) -> GlobalSnapshot<(u64, u32), u64> {
        let n = |i: usize| numbers.get(i % numbers.len().max(1)).copied().unwrap_or(0);
        let pairs = (0..processes).flat_map(|from| (0..processes).map(move |to| (from, to)));
        GlobalSnapshot {
            id: SnapshotId::random(),
            initiator: n(0) as usize,
            started_at: Duration::from_nanos(n(1) >> 2),
            completed_at: Duration::from_nanos(n(2) >> 2),
            recorded_at: (0..processes)
                .map(|i| Duration::from_nanos(n(i) >> 2))
                .collect(),
            states: (0..processes).map(|i| n(i + 3)).collect(),
            channels: pairs
                .filter(|(from, to)| from != to)
                .enumerate()
                .map(|(i, (from, to))| ChannelSnapshot {
                    channel: Channel { from, to },
                    sent: n(i + 4),
                    received: n(i + 6),
                    messages: match held >> (i % 64) & 1 {
                        1 => recorded(&[n(i)]),
                        _ => Vec::new(),
                    },
                })
                .collect(),
        }
    }

    /// The channels of `global`, in its order: those of the cluster it came from.
    fn order<M, S>(global: &GlobalSnapshot<M, S>) -> Vec<Channel> {
        global.channels.iter().map(|c| c.channel).collect()
    }

    /// `global` through a frame, as nodes send it, and back.
    fn global_through_a_frame(
        global: &GlobalSnapshot<(u64, u32), u64>,
    ) -> Result<GlobalSnapshot<(u64, u32), u64>, String> {
        match through_the_wire(&Frame::Outcome {
            snapshot: global.id,
            outcome: Ok(GlobalOut::new(global, &order(global))),
        })? {
            Frame::Outcome {
                outcome: Ok(back), ..
            } => back.unpack(&order(global)),
            other => panic!("{other:?}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 4 } else { 256 }))]

        /// A part and a global snapshot come back as they went, whatever their numbers (every
        /// width of varint) and whichever of their channels recorded messages.
        #[test]
        fn parts_and_global_snapshots_come_back_as_they_went(
            channels in 0usize..70,
            numbers in vec(any::<u64>(), 1..12),
            held in any::<u64>(),
        ) {
            let part = part(channels, &numbers, held);
            prop_assert_eq!(through_a_frame(&part).unwrap(), part);
            // Up to 8 processes: 56 channels.
            let global = global(channels % 9, &numbers, held);
            prop_assert_eq!(global_through_a_frame(&global).unwrap(), global);
        }

        /// Whatever becomes of a part's or an outcome's bytes (changed, cut, extended), decoding
        /// and unpacking give a value or an error, never a panic.
        #[test]
        fn changed_parts_and_outcomes_are_values_or_errors(
            flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
            extra in vec(any::<u8>(), 0..4),
            outcome in any::<bool>(),
        ) {
            let mut buf = Vec::new();
            let (part, global) = (part(9, &[1, 300, 70_000], 0b1010_0110), global(4, &[5, 1 << 40], 0b101));
            let ends = order(&global);
            let out: FrameOut<'_, (u64, u32), u64> = match outcome {
                false => Frame::Part { recorded_before: Duration::ZERO, part: PartOut::new(&part) },
                true => Frame::Outcome { snapshot: global.id, outcome: Ok(GlobalOut::new(&global, &ends)) },
            };
            wire::encode(&mut buf, &out).unwrap();
            let mut body = buf.split_off(4);
            for (at, byte) in flips {
                let at = at.index(body.len());
                body[at] ^= byte;
            }
            body.truncate(cut.index(body.len() + 1));
            body.extend(extra);
            match wire::decode::<FrameIn<(u64, u32), u64>>(&body) {
                Ok(Frame::Part { part, .. }) => { let _ = part.unpack(); }
                Ok(Frame::Outcome { outcome: Ok(global), .. }) => { let _ = global.unpack(&ends); }
                _ => {}
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(if cfg!(miri) { 16 } else { 2048 }))]

        /// `read_varints` reads what `take_varint` (pinned to postcard by `wire.rs`' tests)
        /// reads in a loop, and refuses what it refuses, whatever the bytes: random, or
        /// random numbers written with a byte changed.
        #[test]
        fn counts_read_as_postcard_reads_them(
            noise in vec(any::<u8>(), 0..40),
            numbers in vec(any::<u64>(), 0..6),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut written = Vec::new();
            for &n in &numbers {
                crate::cluster::wire::push_varint(&mut written, n);
            }
            prop_assert_eq!(read_varints(&written).unwrap(), numbers);
            if !written.is_empty() {
                let at = flip.0.index(written.len());
                written[at] ^= flip.1;
            }
            for bytes in [&noise, &written] {
                let mut oracle = Vec::new();
                let mut rest = &bytes[..];
                let expected = loop {
                    if rest.is_empty() {
                        break Ok(oracle);
                    }
                    match take_varint(rest, U64_VARINT) {
                        Ok((n, after)) => {
                            oracle.push(n);
                            rest = after;
                        }
                        Err(e) => break Err(e),
                    }
                };
                prop_assert_eq!(read_varints(bytes), expected, "{:?}", bytes);
            }
        }
    }

    #[test]
    fn a_part_with_more_channel_states_than_channels_does_not_encode() {
        let mut part = part(3, &[1, 2, 3], 0b111);
        part.recorded.push(Vec::new());
        let err = through_a_frame(&part).unwrap_err();
        assert!(!err.is_empty());
        part.recorded.truncate(2);
        assert!(through_a_frame(&part).is_err());
    }

    /// `PartIn`'s fields, written as a peer might.
    #[derive(Serialize)]
    struct Forged<'a> {
        id: SnapshotId,
        process: usize,
        initiated: bool,
        state: u64,
        sent: ByteString<'a>,
        received: ByteString<'a>,
        recorded: Held<(u64, u32)>,
    }

    fn forged(
        received: &[u8],
        recorded: Held<(u64, u32)>,
    ) -> Result<LocalSnapshot<(u64, u32), u64>, String> {
        let bytes = postcard::to_allocvec(&Forged {
            id: SnapshotId::random(),
            process: 1,
            initiated: false,
            state: 0,
            sent: ByteString(&[1, 2]),
            received: ByteString(received),
            recorded,
        })
        .unwrap();
        postcard::from_bytes::<PartIn<(u64, u32), u64>>(&bytes)
            .map_err(|e| format!("postcard: {e}"))?
            .unpack()
    }

    #[test]
    fn channel_states_out_of_order_out_of_range_or_empty_are_refused() {
        // Three incoming channels (three counts of one byte each).
        let three = [7, 8, 9];
        let ok = forged(&three, vec![(0, recorded(&[1])), (2, recorded(&[2, 3]))]).unwrap();
        assert_eq!(ok.received, [7, 8, 9]);
        assert_eq!(ok.recorded, [recorded(&[1]), vec![], recorded(&[2, 3])]);
        for (bad, why) in [
            (
                vec![(2, recorded(&[1])), (0, recorded(&[2]))],
                "out of order",
            ),
            (
                vec![(1, recorded(&[1])), (1, recorded(&[2]))],
                "out of order",
            ),
            (vec![(3, recorded(&[1]))], "past the 3 channels"),
            (vec![(usize::MAX, recorded(&[1]))], "past the 3 channels"),
            (vec![(1, vec![])], "sent empty"),
        ] {
            let err = forged(&three, bad.clone()).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn counts_that_are_not_varints_are_refused() {
        // A last byte with its high bit set; eleven bytes for one number; a tenth byte with
        // bits a u64 lacks.
        for bad in [
            &[0x80][..],
            &[0xff; 11][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02][..],
        ] {
            let err = forged(bad, vec![]).unwrap_err();
            assert!(err.starts_with("postcard"), "{bad:?}: {err}");
        }
        // The largest u64 is ten bytes, and fine.
        let max = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        assert_eq!(forged(&max, vec![]).unwrap().received, [u64::MAX]);
    }

    #[test]
    fn channel_numbers_not_two_for_each_of_the_clusters_channels_are_refused() {
        let global = global(3, &[1, 2, 3], 0);
        let ends = order(&global);
        let mut bytes = postcard::to_allocvec(&GlobalOut::new(&global, &ends)).unwrap();
        let back = postcard::from_bytes::<GlobalIn<(u64, u32), u64>>(&bytes).unwrap();
        assert_eq!(back.unpack(&ends).unwrap(), global);
        // Read by a node of a cluster with a channel more.
        let back = postcard::from_bytes::<GlobalIn<(u64, u32), u64>>(&bytes).unwrap();
        let more = [&ends[..], &[Channel { from: 0, to: 0 }]].concat();
        let err = back.unpack(&more).unwrap_err();
        assert!(
            err.contains("12 numbers") && err.contains("7 channels"),
            "{err}"
        );
        // The channels' byte string is the last but one field, the messages (none: `0`) the
        // last: drop the string's last number (one byte) and shorten its length.
        assert_eq!(bytes.pop(), Some(0));
        let numbers = 6 * 2;
        let at = bytes.len() - numbers - 1;
        assert_eq!(bytes[at] as usize, numbers, "the string's length");
        bytes[at] -= 1;
        bytes.pop();
        bytes.push(0);
        let err = postcard::from_bytes::<GlobalIn<(u64, u32), u64>>(&bytes)
            .unwrap()
            .unpack(&ends)
            .unwrap_err();
        assert!(err.contains("11 numbers"), "{err}");
    }

    /// An outcome fits its cluster only with its own id, an initiator among the processes, and
    /// a state and a record time for each process; each way of not fitting says which.
    #[test]
    fn an_outcome_fits_only_with_its_id_initiator_states_and_record_times() {
        let honest = global(4, &[1, 2, 3], 0b11);
        assert_eq!(outcome_fits(&honest, honest.id, 4), Ok(()));
        let other = SnapshotId::random();
        let said = |changed: GlobalSnapshot<(u64, u32), u64>, id| {
            outcome_fits(&changed, id, 4).unwrap_err()
        };
        assert!(said(honest.clone(), other).contains("outcome of snapshot"));
        let mut wrong = honest.clone();
        wrong.initiator = 4;
        assert!(said(wrong, honest.id).contains("initiator is process 4"));
        let mut wrong = honest.clone();
        wrong.states.pop();
        assert!(said(wrong, honest.id).contains("3 states, not one for each of the 4"));
        let mut wrong = honest.clone();
        wrong.recorded_at.push(Duration::ZERO);
        assert!(said(wrong, honest.id).contains("5 record times"));
    }

    #[test]
    fn a_global_snapshot_whose_channels_are_not_the_clusters_does_not_encode() {
        let global = global(3, &[1, 2, 3], 0b11);
        let ends = order(&global);
        let mut swapped = ends.clone();
        swapped.swap(0, 1);
        let fewer = &ends[1..];
        for other in [&swapped[..], fewer, &[]] {
            let err = postcard::to_allocvec(&GlobalOut::new(&global, other)).unwrap_err();
            assert_eq!(err, postcard::Error::SerdeSerCustom);
        }
    }

    #[test]
    fn zigzag_makes_small_differences_small_and_undoes_every_one() {
        for (d, z) in [(0, 0), (u64::MAX, 1), (1, 2), (u64::MAX - 1, 3), (63, 126)] {
            assert_eq!(zigzag(d), z, "{d}");
        }
        for d in [
            0,
            1,
            2,
            1 << 62,
            u64::MAX / 2,
            u64::MAX / 2 + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            assert_eq!(unzigzag(zigzag(d)), d, "{d}");
        }
    }

    /// Each channel is three bytes here: `sent` (two) and a byte for `received`, where the ends
    /// and `received` in full took six. Each process adds five (its state and when it
    /// recorded), the rest about 30.
    #[test]
    fn a_global_snapshot_takes_about_three_bytes_a_channel() {
        let mut global = global(16, &[10_000], 0);
        for (i, c) in global.channels.iter_mut().enumerate() {
            c.received = c.sent - (i % 3) as u64;
        }
        let ends = order(&global);
        let bytes = postcard::to_allocvec(&GlobalOut::new(&global, &ends)).unwrap();
        let channels = global.channels.len();
        assert!(
            bytes.len() <= 3 * channels + 5 * 16 + 40,
            "{} bytes",
            bytes.len()
        );
        let back = postcard::from_bytes::<GlobalIn<(u64, u32), u64>>(&bytes).unwrap();
        assert_eq!(back.unpack(&ends).unwrap(), global);
    }

    /// The shape is for the CPU, and costs no bytes: the counts' bytes are postcard's own, with
    /// one string length for each vector instead of its element count, and the 47 empty channel
    /// states' lengths are gone.
    #[test]
    fn a_part_takes_fewer_bytes_than_the_derived_encoding() {
        let part = part(47, &[1 << 20, 300, 5], 0);
        let packed = postcard::to_allocvec(&PartOut::new(&part)).unwrap();
        let derived = postcard::to_allocvec(&part).unwrap();
        assert!(
            packed.len() + 45 <= derived.len(),
            "{} against {}",
            packed.len(),
            derived.len()
        );
    }
}
