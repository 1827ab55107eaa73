//! One process as every driver runs it: the application, its marker rules, its sending side
//! (neighbours, sequence numbers, sent counters), and what happens when an envelope reaches it.
//! No threads, channels or clocks: the driver moves numbered envelopes, registers snapshots and
//! collects parts through [`Driver`].
//!
//! Sharing this between the threaded runtime and the simulator means a bug (or a mutation) in
//! how a process sends, or treats a message or a marker, shows up in both, and the simulator's
//! exploration finds it deterministically.

use std::marker::PhantomData;

use crate::envelope::{Envelope, Refused};
use crate::error::{plural, MarkerError, SendError};
use crate::outgoing::Outgoing;
use crate::peers::Peers;
use crate::process::{Context, Outbox, Process};
use crate::recorder::{Progress, Recorder};
use crate::restore::ChannelStart;
use crate::snapshot::{LocalSnapshot, SnapshotId};
use crate::topology::{ProcessId, Wiring};

/// What a driver does for a host: move envelopes, and the snapshot bookkeeping outside one
/// process.
pub(crate) trait Driver<P: Process> {
    /// Puts `envelope` at the back of local outgoing channel `slot`. Hands it back if the
    /// receiving process has failed and takes nothing more (or, for another node, if it cannot
    /// be encoded).
    fn push(
        &mut self,
        slot: usize,
        envelope: Envelope<P::Message>,
    ) -> Result<(), Refused<P::Message>>;
    /// The process has just recorded its state for `id`; its markers follow at once. (For the
    /// driver's clock, which says when each process recorded, and its trace.)
    fn recorded(&mut self, id: SnapshotId);
    /// A fresh id for a snapshot started by application code.
    fn new_snapshot_id(&mut self) -> SnapshotId;
    /// Registers a snapshot started by application code at `initiator` as soon as the code asks
    /// for it (its id may leave the callback at once), so before its first marker exists.
    /// `false`: it may not start (the driver is shutting down, or a process failed).
    fn begin(&mut self, id: SnapshotId, initiator: ProcessId) -> bool;
    /// Whether markers and snapshot starts are still served (a driver gives up every snapshot
    /// after a failure; a marker of a given-up snapshot must not start it again).
    fn snapshots_live(&self) -> bool;
    /// This process's part of a snapshot is complete.
    fn part_complete(&mut self, part: LocalSnapshot<P::Message, P::State>);
    /// A marker from process `from` broke the rules (`error`: a second marker of one snapshot
    /// on one channel) and was dropped. The runtime and the simulator carry only markers their
    /// own processes sent, so for them it is a bug in this crate: the process fails, reporting
    /// it. A cluster node's driver blames the node the marker came from instead: bytes from
    /// another node must never bring down a process here.
    fn refused_marker(&mut self, from: ProcessId, error: MarkerError) {
        let _ = from;
        panic!("{error}")
    }
}

/// One process: the application, its marker rules and its sending side.
pub(crate) struct Host<P: Process> {
    pub(crate) me: ProcessId,
    pub(crate) app: P,
    pub(crate) recorder: Recorder<P::Message, P::State>,
    out: Outgoing,
    /// The destinations of the outgoing channels (as in `out`), lent to each callback's
    /// `Context` while `out` is lent mutably to its sending side.
    neighbours: Box<[ProcessId]>,
    /// By local incoming channel: its source (arithmetic in a complete graph, so a message
    /// does not read a table to name its sender).
    pub(crate) sources: Peers,
    /// Snapshots started by application code during the current callback.
    started: Vec<SnapshotId>,
}

/// What application code sends through: the host's sending side, over the driver's channels.
struct Port<'a, P, D> {
    out: &'a mut Outgoing,
    driver: &'a mut D,
    process: PhantomData<fn(P)>,
}

impl<P: Process, D: Driver<P>> Outbox<P::Message> for Port<'_, P, D> {
    #[inline(always)]
    fn send(&mut self, to: ProcessId, message: P::Message) -> Result<(), SendError<P::Message>> {
        let driver = &mut *self.driver;
        self.out
            .send(to, message, |slot, envelope| driver.push(slot, envelope))
    }

    fn begin_snapshot(&mut self, initiator: ProcessId) -> (SnapshotId, bool) {
        let id = self.driver.new_snapshot_id();
        (id, self.driver.begin(id, initiator))
    }
}

impl<P: Process> Host<P> {
    /// Process `me` of `wiring`, running `app`: fresh (`starts` is `None`), or restored, its
    /// channels' counters continuing from where each channel starts (`starts`, by channel index
    /// of `wiring`; see `restore.rs`).
    pub(crate) fn start(
        me: ProcessId,
        app: P,
        wiring: &Wiring,
        starts: Option<&[ChannelStart<P::Message>]>,
    ) -> Self {
        let received: Vec<u64> = wiring
            .incoming(me)
            .iter()
            .map(|&c| starts.map_or(0, |s| s[c].received))
            .collect();
        let sent = wiring
            .outgoing(me)
            .iter()
            .map(|&c| starts.map_or(0, |s| s[c].sent))
            .collect();
        Host {
            me,
            app,
            recorder: Recorder::resume(me, &received),
            out: Outgoing::new(me, wiring, sent),
            neighbours: wiring.destinations(me).into(),
            sources: Peers::new(me, wiring.processes(), &wiring.sources(me)),
            started: Vec::new(),
        }
    }

    /// By local outgoing channel, messages sent; by local incoming channel, messages received
    /// (a cluster node reports them when the cluster stops).
    pub(crate) fn counters(&self) -> (Vec<u64>, Vec<u64>) {
        let received = (0..self.sources.len())
            .map(|i| self.recorder.received(i))
            .collect();
        (self.out.sent().to_vec(), received)
    }

    /// An envelope arrived on incoming channel `i`. Returns whether it may have taken long: a
    /// message (its callback), or a marker that did more than close a channel
    /// ([`marker`](Host::marker)). The event loop's time budget for a visit counts these
    /// (`pace.rs`).
    #[inline]
    pub(crate) fn on_envelope<D: Driver<P>>(
        &mut self,
        i: usize,
        envelope: Envelope<P::Message>,
        driver: &mut D,
    ) -> bool {
        match envelope {
            Envelope::Message { seq, message } => {
                self.deliver(i, seq.get(), message, driver);
                true
            }
            Envelope::Marker(id) => self.marker(i, id, driver),
        }
    }

    /// The per-message path: count (and record, if a snapshot records this channel), deliver.
    /// Always inlined: with three callers in the event loop (a channel's visit, and on a
    /// cluster node the inbox's direct and parked deliveries) the compiler kept one copy out
    /// of line and called it per envelope from the inbox's two.
    #[inline(always)]
    pub(crate) fn deliver<D: Driver<P>>(
        &mut self,
        i: usize,
        seq: u64,
        message: P::Message,
        driver: &mut D,
    ) {
        debug_assert_eq!(
            seq,
            self.recorder.received(i) + 1,
            "process {}: FIFO broken on the channel from {}",
            self.me,
            self.sources.id(i)
        );
        self.recorder.on_message(i, seq, &message);
        let from = self.sources.id(i);
        self.callback(|app, ctx| app.on_message(from, message, ctx), driver);
    }

    /// Runs application code, then starts the snapshots it asked for: registered with the
    /// driver when asked for (so their ids are known at once), their state is recorded when the
    /// callback has returned, after everything it sent.
    #[inline]
    pub(crate) fn callback<D: Driver<P>>(
        &mut self,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message>),
        driver: &mut D,
    ) {
        let mut port = Port {
            out: &mut self.out,
            driver: &mut *driver,
            process: PhantomData,
        };
        let mut ctx = Context::new(self.me, &self.neighbours, &mut port, &mut self.started);
        f(&mut self.app, &mut ctx);
        if !self.started.is_empty() {
            self.start_requested(driver);
        }
    }

    #[cold]
    fn start_requested<D: Driver<P>>(&mut self, driver: &mut D) {
        let mut ids = std::mem::take(&mut self.started);
        for id in ids.drain(..) {
            self.initiate(id, driver);
        }
        self.started = ids;
    }

    /// Starts snapshot `id` here, already registered with the driver.
    pub(crate) fn initiate<D: Driver<P>>(&mut self, id: SnapshotId, driver: &mut D) {
        if !driver.snapshots_live() {
            return;
        }
        let state = self.app.record();
        let progress = self
            .recorder
            .initiate(id, state, self.out.sent())
            .unwrap_or_else(|e| panic!("{e}"));
        if log::log_enabled!(log::Level::Debug) {
            self.log_recorded(id, "starts it:", None);
        }
        self.apply(id, progress, driver);
    }

    /// A process has failed somewhere, so every snapshot has been given up
    /// (`Collector::fail`): forget them all here. From then on the driver reports snapshots as
    /// not live, and [`marker`](Host::marker) ignores markers. Returns how many were dropped.
    pub(crate) fn drop_snapshots(&mut self) -> usize {
        self.recorder.abort_all()
    }

    /// A marker of `id` arrived on incoming channel `i`. Returns whether it did more than close
    /// a channel: recorded the process's state (the first marker of `id` here, which runs
    /// application code, `Process::record`), or handed in the process's part (which may
    /// assemble a whole global snapshot here).
    #[cold]
    pub(crate) fn marker<D: Driver<P>>(
        &mut self,
        i: usize,
        id: SnapshotId,
        driver: &mut D,
    ) -> bool {
        log::trace!(
            "process {}: marker of snapshot {id} from process {}",
            self.me,
            self.sources.id(i)
        );
        // After a failure every snapshot has been given up: a marker of one would look like a
        // first marker and start it again here.
        if !driver.snapshots_live() {
            return false;
        }
        let logging = log::log_enabled!(log::Level::Debug);
        let first = logging && !self.recorder.is_active(id);
        let app = &self.app;
        // Read where it lies, and moved only to `apply`: a `Progress` is some 140 bytes, put
        // together with narrow stores, and moving it (a call of `memcpy`, wide loads of what
        // was just stored narrow, which the processor cannot forward) was half the rules' own
        // time a marker (`perf` of `cargo bench --bench recorder -- on_marker`).
        let result = self
            .recorder
            .on_marker(i, id, || app.record(), self.out.sent());
        let progress = match result {
            Ok(ref progress) => progress,
            Err(e) => {
                driver.refused_marker(self.sources.id(i), e);
                return false;
            }
        };
        if logging {
            let channel = format!("{}->{}", self.sources.id(i), self.me);
            match progress.closed {
                _ if first => self.log_recorded(id, "first marker", Some(i)),
                Some(n) => log::debug!(
                    "process {}, snapshot {}: marker on channel {channel}: closes channel \
                     {channel} with {n} message{}",
                    self.me,
                    id.short(),
                    if n == 1 { "" } else { "s" }
                ),
                None => {}
            }
        }
        // Most markers only close a channel: for them, no call of `apply`.
        let more = progress.send_markers || progress.completed.is_some();
        // Not `if let (true, Ok(progress)) = (more, result)`: that builds the tuple, a move.
        if more {
            if let Ok(progress) = result {
                self.apply(id, progress, driver);
            }
        }
        more
    }

    /// Logs, in the words of the rules, that this process has just recorded its state for `id`:
    /// as initiator (`first` is `None`) or on the first marker, which came on incoming channel
    /// `first` (that channel's state is empty). Only called when debug logging is on.
    #[cold]
    fn log_recorded(&self, id: SnapshotId, why: &str, first: Option<usize>) {
        let me = self.me;
        let channel = |i: usize| format!("{}->{me}", self.sources.id(i));
        let recording: Vec<String> = (0..self.sources.len())
            .filter(|&i| Some(i) != first)
            .map(channel)
            .collect();
        let empty = first.map_or(String::new(), |i| {
            format!(
                " on channel {}: channel {} is empty;",
                channel(i),
                channel(i)
            )
        });
        log::debug!(
            "process {me}, snapshot {}: {why}{empty} records its state, sends {} (one on each \
             outgoing channel), starts recording {}",
            id.short(),
            plural(self.neighbours.len(), "marker"),
            if recording.is_empty() {
                "no channel".to_string()
            } else {
                format!("channels {}", recording.join(", "))
            }
        );
    }

    /// Does what the marker rules asked for, in the same turn.
    fn apply<D: Driver<P>>(
        &mut self,
        id: SnapshotId,
        progress: Progress<P::Message, P::State>,
        driver: &mut D,
    ) {
        if progress.send_markers {
            // A channel whose receiver has failed is skipped: that process takes no further
            // part in any snapshot.
            driver.recorded(id);
            for slot in 0..self.neighbours.len() {
                let _ = driver.push(slot, Envelope::Marker(id));
            }
        }
        if let Some(part) = progress.completed {
            log::debug!(
                "process {}, snapshot {}: every incoming channel closed: its part is complete",
                self.me,
                id.short()
            );
            driver.part_complete(part);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use super::*;
    use crate::topology::Topology;

    /// Counts its messages; its state is the count.
    struct Counter(u64);

    impl Process for Counter {
        type Message = u64;
        type State = u64;
        fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {
            self.0 += 1;
        }
        fn record(&self) -> u64 {
            self.0
        }
    }

    /// A driver that keeps what it is given.
    #[derive(Default)]
    struct Kept {
        pushed: Vec<(usize, Envelope<u64>)>,
        parts: Vec<LocalSnapshot<u64, u64>>,
    }

    impl Driver<Counter> for Kept {
        fn push(&mut self, slot: usize, envelope: Envelope<u64>) -> Result<(), Refused<u64>> {
            self.pushed.push((slot, envelope));
            Ok(())
        }
        fn recorded(&mut self, _: SnapshotId) {}
        fn new_snapshot_id(&mut self) -> SnapshotId {
            SnapshotId::random()
        }
        fn begin(&mut self, _: SnapshotId, _: ProcessId) -> bool {
            true
        }
        fn snapshots_live(&self) -> bool {
            true
        }
        fn part_complete(&mut self, part: LocalSnapshot<u64, u64>) {
            self.parts.push(part);
        }
    }

    /// What the event loop's time budget counts (`pace.rs`): a message, a first marker (which
    /// records the state) and the last (which hands in the part) may take long; a marker that
    /// only closes a channel does not.
    #[test]
    fn an_envelope_says_whether_it_did_more_than_close_a_channel() {
        let wiring = Topology::complete(4).validate().unwrap();
        let mut host = Host::start(0, Counter(0), &wiring, None);
        let mut driver = Kept::default();
        let message = Envelope::Message {
            seq: NonZeroU64::MIN,
            message: 7,
        };
        assert!(host.on_envelope(0, message, &mut driver));
        let id = SnapshotId::random();
        assert!(
            host.on_envelope(0, Envelope::Marker(id), &mut driver),
            "first"
        );
        assert_eq!(driver.pushed.len(), 3, "a marker on each outgoing channel");
        assert!(
            !host.on_envelope(1, Envelope::Marker(id), &mut driver),
            "closes"
        );
        assert!(driver.parts.is_empty());
        assert!(
            host.on_envelope(2, Envelope::Marker(id), &mut driver),
            "last"
        );
        assert_eq!(driver.parts.len(), 1, "the part handed in");
        assert_eq!(driver.parts[0].state, 1);
    }
}
