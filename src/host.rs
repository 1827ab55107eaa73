//! One process as every driver runs it: the application, its marker rules, and what happens
//! when an envelope reaches it. No threads, channels or clocks: the driver moves envelopes,
//! registers snapshots and collects parts through [`Driver`].
//!
//! Sharing this between the threaded runtime and the simulator means a bug (or a mutation) in
//! how a process treats a message or a marker shows up in both, and the simulator's exploration
//! finds it deterministically.

use crate::process::{Context, Outbox, Process};
use crate::recorder::{Progress, Recorder};
use crate::snapshot::{LocalSnapshot, SnapshotId};
use crate::topology::ProcessId;

/// What travels on a channel. Markers share the channel with application messages, so FIFO
/// order between them is the channel's own.
#[derive(Clone, Debug)]
pub(crate) enum Envelope<M> {
    /// An application message; `seq` is its number on this channel, from 1.
    Message { seq: u64, message: M },
    /// A marker of a snapshot.
    Marker(SnapshotId),
}

/// What a driver does for a host, beyond sending application messages.
pub(crate) trait Driver<P: Process>: Outbox<P::Message> {
    /// By local outgoing channel: application messages sent so far.
    fn sent(&self) -> &[u64];
    /// Sends a marker of `id` on every outgoing channel, now.
    fn broadcast_marker(&mut self, id: SnapshotId);
    /// Registers a snapshot started by application code at `initiator`, before its first marker
    /// exists. `false`: it may not start (the driver is shutting down, or a process failed).
    fn begin(&mut self, id: SnapshotId, initiator: ProcessId) -> bool;
    /// Whether markers and snapshot starts are still served (a driver gives up every snapshot
    /// after a failure; a marker of a given-up snapshot must not start it again).
    fn snapshots_live(&self) -> bool;
    /// This process's part of a snapshot is complete.
    fn part_complete(&mut self, part: LocalSnapshot<P::Message, P::State>);
}

/// One process: the application and its marker rules.
pub(crate) struct Host<P: Process> {
    pub(crate) me: ProcessId,
    pub(crate) app: P,
    pub(crate) recorder: Recorder<P::Message, P::State>,
    /// By local incoming channel: its source.
    pub(crate) sources: Vec<ProcessId>,
    /// Snapshots started by application code during the current callback.
    started: Vec<SnapshotId>,
}

impl<P: Process> Host<P> {
    /// A host whose incoming channels have already delivered `received[k]` messages (all zero
    /// for a fresh start; see [`Recorder::resume`] for a restored one).
    pub(crate) fn resume(me: ProcessId, app: P, sources: Vec<ProcessId>, received: &[u64]) -> Self {
        Host {
            me,
            app,
            recorder: Recorder::resume(me, received),
            sources,
            started: Vec::new(),
        }
    }

    /// An envelope arrived on incoming channel `i`.
    #[inline]
    pub(crate) fn on_envelope<D: Driver<P>>(
        &mut self,
        i: usize,
        envelope: Envelope<P::Message>,
        driver: &mut D,
    ) {
        match envelope {
            Envelope::Message { seq, message } => self.deliver(i, seq, message, driver),
            Envelope::Marker(id) => self.marker(i, id, driver),
        }
    }

    /// The per-message path: count (and record, if a snapshot records this channel), deliver.
    #[inline]
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
            self.sources[i]
        );
        self.recorder.on_message(i, seq, &message);
        let from = self.sources[i];
        self.callback(|app, ctx| app.on_message(from, message, ctx), driver);
    }

    /// Runs application code, then starts the snapshots it asked for: their state is recorded
    /// when the callback has returned, after everything it sent.
    #[inline]
    pub(crate) fn callback<D: Driver<P>>(
        &mut self,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message>),
        driver: &mut D,
    ) {
        let mut ctx = Context::new(self.me, driver, &mut self.started);
        f(&mut self.app, &mut ctx);
        if !self.started.is_empty() {
            self.start_requested(driver);
        }
    }

    #[cold]
    fn start_requested<D: Driver<P>>(&mut self, driver: &mut D) {
        let mut ids = std::mem::take(&mut self.started);
        for id in ids.drain(..) {
            if driver.begin(id, self.me) {
                self.initiate(id, driver);
            }
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
            .initiate(id, state, driver.sent())
            .unwrap_or_else(|e| panic!("{e}"));
        self.apply(id, progress, driver);
    }

    /// A marker of `id` arrived on incoming channel `i`.
    #[cold]
    pub(crate) fn marker<D: Driver<P>>(&mut self, i: usize, id: SnapshotId, driver: &mut D) {
        log::trace!(
            "process {}: marker of snapshot {id} from process {}",
            self.me,
            self.sources[i]
        );
        // After a failure every snapshot has been given up: a marker of one would look like a
        // first marker and start it again here.
        if !driver.snapshots_live() {
            return;
        }
        let app = &self.app;
        let progress = self
            .recorder
            .on_marker(i, id, || app.record(), driver.sent())
            .unwrap_or_else(|e| panic!("{e}"));
        self.apply(id, progress, driver);
    }

    /// Does what the marker rules asked for, in the same turn.
    fn apply<D: Driver<P>>(
        &mut self,
        id: SnapshotId,
        progress: Progress<P::Message, P::State>,
        driver: &mut D,
    ) {
        if progress.send_markers {
            driver.broadcast_marker(id);
        }
        if let Some(part) = progress.completed {
            log::trace!("process {}: part of snapshot {id} complete", self.me);
            driver.part_complete(part);
        }
    }
}
