//! The marker rules of one process, for any number of concurrent snapshots: a pure state
//! machine with no threads, channels or clocks inside.
//!
//! The driver (the threaded runtime, or a simulator) tells the [`Recorder`] what happens at the
//! process, and the recorder says what the rules require in return:
//!
//! | input                                   | rule ([`algorithm`](crate::algorithm))   | output                       |
//! |-----------------------------------------|-------------------------------------------|------------------------------|
//! | [`initiate`](Recorder::initiate)        | initiator: record, send markers, record every incoming channel | `send_markers`, maybe `completed` |
//! | [`on_marker`](Recorder::on_marker), first for S | record state, channel empty, send markers, record the others | `send_markers`, maybe `completed` |
//! | [`on_marker`](Recorder::on_marker), later | stop recording that channel             | maybe `completed`            |
//! | [`on_message`](Recorder::on_message)    | append to every recording of that channel | nothing                      |
//!
//! The process's state and the sent counters are passed in by the driver at the moment the rules
//! record them; the recorder keeps the received counters itself, since every message passes
//! through [`on_message`](Recorder::on_message).
//!
//! Memory: each incoming channel has one log of the messages that arrived while at least one
//! snapshot records it. A message is appended once, however many snapshots record it, and the
//! log is trimmed to what the oldest open recording still needs. While no snapshot records a
//! channel, [`on_message`](Recorder::on_message) only bumps a counter: no allocation, no clone.
//!
//! Cost in k, the snapshots in flight here: every input is O(1) or O(log k) (a hash lookup by
//! id, and the oldest open recording of a channel kept at the front of an ordered record of
//! where each began, `open_starts.rs`), plus the work proportional to what it records or hands
//! over. Nothing scans the active snapshots, so k snapshots started at once cost k times one.

mod open_starts;

use std::collections::VecDeque;
use std::sync::Arc;

use crate::error::MarkerError;
use crate::own_lines::OwnLines;
use crate::snapshot::{IdMap, LocalSnapshot, RecordedMessage, SnapshotId};
use crate::topology::ProcessId;
use open_starts::OpenStarts;

/// What the rules require after an input.
#[must_use = "markers must be sent and completed parts handed on"]
#[derive(Debug)]
pub struct Progress<M, S> {
    /// Send a marker of this snapshot on every outgoing channel now, before any further
    /// application message.
    pub send_markers: bool,
    /// This process's part of the snapshot is complete: hand it to the collector.
    pub completed: Option<LocalSnapshot<M, S>>,
    /// A later marker closed its channel, which recorded this many messages (for the log of
    /// the rules that fire).
    pub closed: Option<usize>,
}

impl<M, S> Progress<M, S> {
    fn nothing() -> Self {
        Progress {
            send_markers: false,
            completed: None,
            closed: None,
        }
    }
}

/// One incoming channel's recording state that every snapshot touches: a first marker opens
/// a recording on every channel, and each later marker closes one. (Its received counter is in
/// `Recorder::received`, its log in `Recorder::logs`.) 32 bytes, two channels a cache line: a
/// first marker's walk over every channel reads and writes a process's few lines of these,
/// where with the log beside each (72 bytes a channel, and the starts' own deque on the heap)
/// it missed the cache about twice a channel, and each later marker about once (callgrind's
/// cache simulation, BENCHMARKS.md, twenty-second round).
#[derive(Debug, Default)]
struct Recording {
    /// Where each snapshot recording it now began (its `received` then), oldest first.
    open: OpenStarts,
    /// Arrival number of the message just before the log's first (arrival numbers count from
    /// 1).
    base: u64,
}

/// A snapshot this process has recorded its state for, not yet complete.
#[derive(Debug)]
struct Active<M, S> {
    initiated: bool,
    state: S,
    sent: Vec<u64>,
    received: Vec<u64>,
    /// By incoming channel: its state once its marker came (empty until then).
    recorded: Vec<Vec<RecordedMessage<M>>>,
    /// By incoming channel: whether its marker has come (its state is final).
    ///
    /// Apart from `recorded`, so that a marker that closes an empty channel, the most common,
    /// writes one byte: with an `Option` a channel, the new `Some(Vec::new())` was put together
    /// on the stack in two 8-byte stores and read back as one 16-byte load before its store,
    /// which the processor cannot forward (a fifth of the rules' time a marker, `perf
    /// annotate` of `cargo bench --bench recorder -- on_marker`).
    closed: Vec<bool>,
    /// Incoming channels still recording.
    open: usize,
}

/// The marker rules of one process (see the module documentation).
#[derive(Debug)]
pub struct Recorder<M, S> {
    process: ProcessId,
    /// By incoming channel: application messages received on it so far. Apart from the rest
    /// of each channel's state, and dense (8 bytes a channel), since it is all a message
    /// touches while no snapshot is active here: a process's counters fit in a few cache lines
    /// where the channels' recordings (32 bytes each) would spread over more. Written on every
    /// message, so on cache lines of its own (`own_lines.rs`).
    received: OwnLines<u64>,
    /// By incoming channel: its open recordings (dense: see [`Recording`]).
    recording: Vec<Recording>,
    /// By incoming channel: the messages that arrived while some snapshot recorded it, from
    /// the oldest one an open recording still needs (after its `Recording::base`). Touched only
    /// by a message on a channel being recorded, and by the marker that closes a recording
    /// that holds messages.
    logs: Vec<VecDeque<RecordedMessage<M>>>,
    active: IdMap<Active<M, S>>,
    /// Messages held in all logs together.
    logged: usize,
}

impl<M: Clone, S> Recorder<M, S> {
    /// The rules for `process`, which has `incoming` incoming channels (numbered
    /// `0..incoming`).
    pub fn new(process: ProcessId, incoming: usize) -> Self {
        Recorder {
            process,
            received: OwnLines::new(incoming, 0),
            recording: (0..incoming).map(|_| Recording::default()).collect(),
            logs: (0..incoming).map(|_| VecDeque::new()).collect(),
            active: IdMap::default(),
            logged: 0,
        }
    }

    /// The rules for `process` resuming from a snapshot: `received[k]` messages were already
    /// received on incoming channel `k`, so the next one there is number `received[k] + 1`.
    pub fn resume(process: ProcessId, received: &[u64]) -> Self {
        let mut recorder = Self::new(process, received.len());
        recorder.received.copy_from_slice(received);
        for (recording, &r) in recorder.recording.iter_mut().zip(received) {
            recording.base = r;
        }
        recorder
    }

    /// The process these rules belong to.
    pub fn process(&self) -> ProcessId {
        self.process
    }

    /// An application message with sequence number `seq` arrived on incoming `channel` and is
    /// about to be delivered: count it, and append it to the channel's recording if any snapshot
    /// records that channel.
    #[inline]
    pub fn on_message(&mut self, channel: usize, seq: u64, message: &M) {
        self.received[channel] += 1;
        // With no snapshot active here no channel records: the channel's record stays cold.
        if !self.active.is_empty() {
            self.log_message(channel, seq, message);
        }
    }

    /// `on_message`'s part while snapshots are active: appends the message to `channel`'s
    /// recording if a snapshot records it. Out of line, so that the count above, all that most
    /// deliveries do here, goes inline wherever the event loop delivers: with this part in, the
    /// compiler kept the whole a call in the visit of a cluster process's inbox from other
    /// nodes, for every message from another node (callgrind, 3 nodes x 16: that visit's
    /// instructions 428M with the call, 416M without).
    #[inline(never)]
    fn log_message(&mut self, channel: usize, seq: u64, message: &M) {
        if !self.recording[channel].open.is_empty() {
            self.logs[channel].push_back(RecordedMessage {
                seq,
                message: Arc::new(message.clone()),
            });
            self.logged += 1;
        }
    }

    /// Starts snapshot `id` here (initiator rules 1-3): `state` is the process's state now and
    /// `sent[k]` the messages sent so far on outgoing channel `k`.
    pub fn initiate(
        &mut self,
        id: SnapshotId,
        state: S,
        sent: &[u64],
    ) -> Result<Progress<M, S>, MarkerError> {
        if self.active.contains_key(&id) {
            return Err(MarkerError::DuplicateSnapshot {
                process: self.process,
                snapshot: id,
            });
        }
        Ok(self.record(id, true, state, sent, None))
    }

    /// A marker of snapshot `id` arrived on incoming `channel`.
    ///
    /// First marker of `id` here: record the state (`record()`; `sent` as in
    /// [`initiate`](Recorder::initiate)), the channel's state is empty, send markers, record
    /// every other incoming channel. Otherwise: stop recording `channel`; its state is what
    /// arrived on it since its recording began.
    pub fn on_marker(
        &mut self,
        channel: usize,
        id: SnapshotId,
        record: impl FnOnce() -> S,
        sent: &[u64],
    ) -> Result<Progress<M, S>, MarkerError> {
        let Some(snapshot) = self.active.get_mut(&id) else {
            return Ok(self.record(id, false, record(), sent, Some(channel)));
        };
        if snapshot.closed[channel] {
            return Err(MarkerError::DuplicateMarker {
                process: self.process,
                snapshot: id,
                channel,
            });
        }
        let recording = &mut self.recording[channel];
        let from = (snapshot.received[channel] - recording.base) as usize;
        let to = (self.received[channel] - recording.base) as usize;
        snapshot.closed[channel] = true;
        // Mostly nothing came on the channel while it was recorded: its state stays empty.
        if from != to {
            snapshot.recorded[channel] = self.logs[channel].range(from..to).cloned().collect();
        }
        snapshot.open -= 1;
        let ended = recording.open.end(snapshot.received[channel]);
        debug_assert!(ended, "an open recording has its start");
        let done = snapshot.open == 0;
        self.trim(channel);
        // Built where it is returned, field by field: see `Host::marker` on the cost of moving
        // a `Progress`.
        Ok(Progress {
            send_markers: false,
            completed: if done { Some(self.complete(id)) } else { None },
            closed: Some(to - from),
        })
    }

    /// Drops every active snapshot (the driver gave them up); returns how many there were.
    ///
    /// A marker of a dropped snapshot arriving later would look like a first marker, so the
    /// driver must stop feeding this recorder the markers of dropped snapshots.
    pub fn abort_all(&mut self) -> usize {
        let ids: Vec<SnapshotId> = self.active.keys().copied().collect();
        for id in &ids {
            self.abort(*id);
        }
        ids.len()
    }

    /// Drops snapshot `id` here, if it is active. Returns whether it was. (Same caveat as
    /// [`abort_all`](Recorder::abort_all).)
    pub fn abort(&mut self, id: SnapshotId) -> bool {
        let Some(snapshot) = self.active.remove(&id) else {
            return false;
        };
        for (channel, &closed) in snapshot.closed.iter().enumerate() {
            if !closed {
                let ended = self.recording[channel].open.end(snapshot.received[channel]);
                debug_assert!(ended, "an open recording has its start");
                self.trim(channel);
            }
        }
        true
    }

    /// Whether snapshot `id` has been recorded here and is not yet complete.
    pub fn is_active(&self, id: SnapshotId) -> bool {
        self.active.contains_key(&id)
    }

    /// Application messages received so far on incoming `channel`.
    pub fn received(&self, channel: usize) -> u64 {
        self.received[channel]
    }

    /// Whether some snapshot records incoming `channel` now.
    pub fn is_recording(&self, channel: usize) -> bool {
        !self.recording[channel].open.is_empty()
    }

    /// Snapshots recorded here and not yet complete.
    pub fn active_snapshots(&self) -> usize {
        self.active.len()
    }

    /// Messages held in the channel logs (each stored once, however many snapshots share it).
    pub fn logged_messages(&self) -> usize {
        self.logged
    }

    /// Records snapshot `id`'s local state and opens the recording of every incoming channel but
    /// `first` (the one the first marker came on, whose state is empty).
    fn record(
        &mut self,
        id: SnapshotId,
        initiated: bool,
        state: S,
        sent: &[u64],
        first: Option<usize>,
    ) -> Progress<M, S> {
        let mut closed = vec![false; self.recording.len()];
        let mut open = 0;
        let channels = self.recording.iter_mut().zip(self.received.iter());
        for (channel, (recording, &received)) in channels.enumerate() {
            if Some(channel) == first {
                closed[channel] = true;
                continue;
            }
            if recording.open.is_empty() {
                // Nobody needs the old log (trim emptied it): restart it at the current arrival.
                debug_assert!(self.logs[channel].is_empty());
                recording.base = received;
            }
            recording.open.begin(received);
            open += 1;
        }
        self.active.insert(
            id,
            Active {
                initiated,
                state,
                sent: sent.to_vec(),
                received: self.received.to_vec(),
                recorded: (0..closed.len()).map(|_| Vec::new()).collect(),
                closed,
                open,
            },
        );
        let mut progress = Progress::nothing();
        progress.send_markers = true;
        if open == 0 {
            progress.completed = Some(self.complete(id));
        }
        progress
    }

    /// Hands over a snapshot whose every incoming channel is closed, and forgets it.
    fn complete(&mut self, id: SnapshotId) -> LocalSnapshot<M, S> {
        let snapshot = self
            .active
            .remove(&id)
            .expect("completing an active snapshot");
        LocalSnapshot {
            id,
            process: self.process,
            initiated: snapshot.initiated,
            state: snapshot.state,
            sent: snapshot.sent,
            received: snapshot.received,
            recorded: snapshot.recorded,
        }
    }

    /// Drops the front of `channel`'s log that no open recording needs any more: O(what is
    /// dropped), the oldest open recording being the front of [`OpenStarts`].
    ///
    /// Inline, its drain out of line: it runs on every marker, and mostly finds nothing to
    /// drop (the recording that ended was not the oldest, or nothing came while it was open).
    /// (`#[inline]` alone left it a call.)
    #[inline(always)]
    fn trim(&mut self, channel: usize) {
        let recording = &self.recording[channel];
        let oldest = recording.open.oldest().unwrap_or(self.received[channel]);
        let drop = (oldest - recording.base) as usize;
        if drop > 0 {
            self.drop_logged(channel, drop, oldest);
        }
    }

    /// Drops the first `drop` messages of `channel`'s log, which now begins after arrival
    /// `oldest`.
    #[inline(never)]
    fn drop_logged(&mut self, channel: usize, drop: usize, oldest: u64) {
        self.logs[channel].drain(..drop);
        self.recording[channel].base = oldest;
        self.logged -= drop;
    }
}

#[cfg(test)]
mod tests;
