//! The one event loop each process thread runs: application messages, markers, ticks and
//! control requests, all served in turn on the process's own thread.
//!
//! Why a ready bitmap and not `crossbeam_channel::Select`: `Select` over the N-1 incoming
//! receivers of a complete graph scans all of them on every delivery, O(N), about 5 ns per
//! receiver (../shared/perf/README.md: one channel per edge with `Select` runs at 0.56 x a single
//! inbox at N = 64). With the doorbell (see `doorbell.rs`) the sender names the channel that has
//! work, so a delivery is O(1) and we keep one FIFO channel per directed edge, which is what
//! gives markers their place in each channel's order. The benchmarks compare the two.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::process::{Context, Process};
use crate::recorder::{Progress, Recorder};
use crate::runtime::doorbell::{pop_bit, set_bit};
use crate::runtime::outbox::{EdgeOutbox, Envelope};
use crate::runtime::Shared;
use crate::snapshot::SnapshotId;
use crate::topology::ProcessId;

/// Messages taken from one channel before the loop looks at the others: bounds how long one
/// busy channel can hold the rest (and the control channel) back.
const BATCH: usize = 32;

/// A closure to run on a process's thread.
pub(crate) type RunFn<P> =
    Box<dyn FnOnce(&mut P, &mut Context<'_, <P as Process>::Message>) + Send>;

/// Requests from the runtime's handle to one process.
pub(crate) enum Control<P: Process> {
    /// Start this snapshot with the process as initiator (already registered with the hub).
    StartSnapshot(SnapshotId),
    /// Run this closure as a callback.
    Run(RunFn<P>),
    /// A process has failed: every snapshot is given up; drop their state.
    DropSnapshots,
    /// Leave the loop.
    Stop,
}

/// What a process thread hands back when it ends.
pub(crate) struct ThreadExit<P: Process> {
    /// The process, unless it panicked.
    pub(crate) process: Option<P>,
    /// Its panic message, if it panicked.
    pub(crate) failure: Option<String>,
    /// Its incoming channels, to collect what was never delivered.
    pub(crate) inbound: Vec<Receiver<Envelope<P::Message>>>,
}

/// Everything one process thread owns.
pub(crate) struct Worker<P: Process> {
    pub(crate) me: ProcessId,
    pub(crate) app: P,
    pub(crate) recorder: Recorder<P::Message, P::State>,
    pub(crate) outbox: EdgeOutbox<P::Message>,
    /// By local incoming number.
    pub(crate) inbound: Vec<Receiver<Envelope<P::Message>>>,
    /// By local incoming number: the channel's source.
    pub(crate) sources: Vec<ProcessId>,
    pub(crate) control: Receiver<Control<P>>,
    pub(crate) shared: Arc<Shared<P>>,
    pub(crate) tick: Option<Duration>,
    /// Snapshots started by application code during the current callback.
    pub(crate) started: Vec<SnapshotId>,
    /// Bits taken from the doorbell, not yet served.
    pub(crate) ready: Vec<u64>,
    /// Channels whose batch ran out, served again next pass.
    pub(crate) again: Vec<u64>,
}

impl<P: Process> Worker<P> {
    /// The control channel's bit: after the incoming channels.
    fn control_bit(&self) -> usize {
        self.inbound.len()
    }

    /// Runs the process until it is told to stop.
    fn run(&mut self) {
        self.callback(|app, ctx| app.on_start(ctx));
        let mut next_tick = self.tick.map(|t| Instant::now() + t);
        let control_bit = self.control_bit();
        loop {
            for (r, a) in self.ready.iter_mut().zip(self.again.iter_mut()) {
                *r |= std::mem::take(a);
            }
            self.shared.bells[self.me].take(&mut self.ready);
            let mut worked = false;
            while let Some(bit) = pop_bit(&mut self.ready) {
                worked = true;
                if bit == control_bit {
                    if !self.serve_control() {
                        return;
                    }
                } else {
                    self.drain(bit);
                }
            }
            // The clock is read once per pass, and only when ticks are asked for.
            if let (Some(tick), Some(due)) = (self.tick, next_tick) {
                let now = Instant::now();
                if now >= due {
                    self.callback(|app, ctx| app.on_tick(ctx));
                    next_tick = Some(now + tick);
                    worked = true;
                }
            }
            if !worked && self.again.iter().all(|&a| a == 0) {
                self.shared.bells[self.me].wait(next_tick, self.shared.backoff);
            }
        }
    }

    /// Serves incoming channel `i`: up to `BATCH` messages and markers, in channel order.
    #[inline]
    fn drain(&mut self, i: usize) {
        for _ in 0..BATCH {
            match self.inbound[i].try_recv() {
                Ok(Envelope::Message { seq, message }) => self.deliver(i, seq, message),
                Ok(Envelope::Marker(id)) => self.marker(i, id),
                Err(TryRecvError::Empty) => return,
                // Its sender has stopped; what it sent before is drained.
                Err(TryRecvError::Disconnected) => return,
            }
        }
        set_bit(&mut self.again, i);
    }

    /// The per-message path: count (and record, if a snapshot records this channel), deliver.
    #[inline]
    fn deliver(&mut self, i: usize, seq: u64, message: P::Message) {
        debug_assert_eq!(
            seq,
            self.recorder.received(i) + 1,
            "process {}: FIFO broken on the channel from {}",
            self.me,
            self.sources[i]
        );
        self.recorder.on_message(i, seq, &message);
        let from = self.sources[i];
        self.callback(|app, ctx| app.on_message(from, message, ctx));
    }

    /// Runs application code, then starts the snapshots it asked for: their state is recorded
    /// when the callback has returned, after everything it sent.
    #[inline]
    fn callback(&mut self, f: impl FnOnce(&mut P, &mut Context<'_, P::Message>)) {
        let mut ctx = Context::new(self.me, &mut self.outbox, &mut self.started);
        f(&mut self.app, &mut ctx);
        if !self.started.is_empty() {
            self.start_requested();
        }
    }

    #[cold]
    fn start_requested(&mut self) {
        let mut ids = std::mem::take(&mut self.started);
        for id in ids.drain(..) {
            // Refused when the runtime is shutting down or a process has failed; the hub has
            // told subscribers.
            if self.shared.hub.begin(id, self.me, None).is_ok() {
                self.initiate(id);
            }
        }
        self.started = ids;
    }

    fn initiate(&mut self, id: SnapshotId) {
        if self.shared.degraded.load(Ordering::Acquire) {
            return;
        }
        let state = self.app.record();
        let progress = self
            .recorder
            .initiate(id, state, &self.outbox.sent)
            .unwrap_or_else(|e| panic!("{e}"));
        self.apply(id, progress);
    }

    #[cold]
    fn marker(&mut self, i: usize, id: SnapshotId) {
        log::trace!(
            "process {}: marker of snapshot {id} from process {}",
            self.me,
            self.sources[i]
        );
        // After a failure every snapshot has been given up: a marker of one would look like a
        // first marker and start it again here.
        if self.shared.degraded.load(Ordering::Acquire) {
            return;
        }
        let app = &self.app;
        let progress = self
            .recorder
            .on_marker(i, id, || app.record(), &self.outbox.sent)
            .unwrap_or_else(|e| panic!("{e}"));
        self.apply(id, progress);
    }

    /// Does what the marker rules asked for, in the same turn of the loop.
    fn apply(&mut self, id: SnapshotId, progress: Progress<P::Message, P::State>) {
        if progress.send_markers {
            self.outbox.broadcast_marker(id);
        }
        if let Some(part) = progress.completed {
            log::trace!("process {}: part of snapshot {id} complete", self.me);
            self.shared.hub.submit(part);
        }
        self.publish();
    }

    /// Makes the recorder's per-snapshot state visible to `Runtime::stats`.
    fn publish(&self) {
        let stats = &self.shared.stats[self.me];
        let (recording, logged) = (
            self.recorder.active_snapshots(),
            self.recorder.logged_messages(),
        );
        // Most markers change neither figure: skip the store, and the line stays shared.
        if stats.recording.load(Ordering::Relaxed) != recording {
            stats.recording.store(recording, Ordering::Relaxed);
        }
        if stats.logged.load(Ordering::Relaxed) != logged {
            stats.logged.store(logged, Ordering::Relaxed);
        }
    }

    /// Serves every queued control request; returns false on `Stop`.
    #[cold]
    fn serve_control(&mut self) -> bool {
        loop {
            match self.control.try_recv() {
                Ok(Control::StartSnapshot(id)) => self.initiate(id),
                Ok(Control::Run(f)) => self.callback(f),
                Ok(Control::DropSnapshots) => {
                    self.recorder.abort_all();
                    self.publish();
                }
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }
}

/// The body of a process thread: wait for the start signal, run the loop, report how it ended.
pub(crate) fn process_thread<P: Process>(
    mut worker: Worker<P>,
    start: Receiver<()>,
    exits: Sender<ProcessId>,
) -> ThreadExit<P> {
    let me = worker.me;
    let shared = worker.shared.clone();
    shared.bells[me].register_current_thread();
    super::guard::enter(shared.key, me);
    // The builder drops the start sender once every thread exists (or it gave up).
    let _ = start.recv();
    let failure = if shared.start_aborted.load(Ordering::Acquire) {
        None
    } else {
        panic::catch_unwind(AssertUnwindSafe(|| worker.run()))
            .err()
            .map(|payload| panic_message(&*payload))
    };
    // A process that stopped normally keeps taking messages until shutdown has joined every
    // thread (they are handed back as undelivered), so a graceful shutdown never makes a send
    // fail; one that panicked refuses them from now on.
    if let Some(message) = &failure {
        shared.process_failed(me, message.clone());
    }
    let Worker {
        app,
        outbox,
        inbound,
        ..
    } = worker;
    shared.stats[me].recording.store(0, Ordering::Relaxed);
    shared.stats[me].logged.store(0, Ordering::Relaxed);
    // Receivers learn that this process takes no further part.
    outbox.close();
    let _ = exits.send(me);
    ThreadExit {
        process: failure.is_none().then_some(app),
        failure,
        inbound,
    }
}

/// The text of a panic payload (`panic!` with a literal or a format string).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}
