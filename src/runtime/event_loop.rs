//! The one event loop each process thread runs: application messages, markers, ticks and
//! control requests, all served in turn on the process's own thread.
//!
//! Why a ready bitmap and not `crossbeam_channel::Select`: `Select` over the N-1 incoming
//! receivers of a complete graph scans all of them on every delivery, O(N). With the doorbell
//! (see `doorbell.rs`) the sender names the channel that has work, so a delivery is O(1) and we
//! keep one FIFO channel per directed edge, which is what gives markers their place in each
//! channel's order. `cargo bench --bench throughput` measures this loop, markers and all,
//! against the bare channel-per-edge program with `Select` (figures in BENCHMARKS.md).

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use crate::envelope::{Envelope, Refused};
use crate::host::{Driver, Host};
use crate::process::{Context, Process};
use crate::runtime::outbox::EdgeOutbox;
use crate::runtime::pace::Pace;
use crate::runtime::remote_inbox::{inbox_bit, RemoteInbox};
use crate::runtime::rotation::Rotation;
use crate::runtime::shared::Shared;
use crate::runtime::take::take;
use crate::runtime::tracer::Tracer;
use crate::snapshot::{IdMap, LocalSnapshot, SnapshotId};
use crate::topology::{Channel, ProcessId};
use crate::trace::{envelope_event, TraceKind};

/// With ticks asked for, channel visits between two looks at the clock while the process is
/// busy (unless a visit read it anyway); an idle process looks before it waits, to know how
/// long. Reading the clock on every round cost 5% of throughput at N = 16 on 2 cores (a vDSO
/// call per round, and rounds are short under load). A tick is then at most 16 visits late:
/// tens of microseconds under load.
const CLOCK_EVERY: usize = 16;

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
    /// Its inbox from other nodes, likewise.
    pub(crate) inbox: Option<RemoteInbox<P::Message>>,
    /// By local outgoing channel, messages sent; by local incoming channel, messages received
    /// (when it stopped or failed).
    pub(crate) counters: (Vec<u64>, Vec<u64>),
}

/// What the event loop needs of a host's driver besides [`Driver`]: the in-process [`Wire`]
/// itself, or a cluster node's driver, which wraps a `Wire` and also sends to other nodes. The
/// loop is generic over it, so the in-process runtime compiles exactly as with a `Wire`.
pub(crate) trait ThreadDriver<P: Process>: Driver<P> + Send + 'static {
    /// The in-process part: edge channels, the hub, the trace.
    fn wire(&self) -> &Wire<P>;
    /// The same, to change.
    fn wire_mut(&mut self) -> &mut Wire<P>;
    /// A batch of work (a control request, a callback) has ended: what it sent goes.
    fn end_batch(&mut self);
    /// A visit that took `taken` envelopes has ended; `timed`: it read the clock, so its
    /// callbacks may be slow. A driver may hold what the visit sent for another node until the
    /// round ends ([`end_round`](ThreadDriver::end_round)), or until a few visits' worth, to
    /// hand it over in one go; it must not hold it behind slow callbacks.
    #[inline(always)]
    fn end_visit(&mut self, taken: usize, timed: bool) {
        let _ = (taken, timed);
        self.end_batch();
    }
    /// A round of visits (one pass over the ready channels) has ended: nothing is held.
    #[inline(always)]
    fn end_round(&mut self) {}
    /// The process panicked in the middle of a batch, and `end_batch` will not run: whatever
    /// the driver still holds of sends that returned `Ok` must go now, before the failure is
    /// announced (a receiver sees the messages before the word of the failure, as in process,
    /// where a send is on its channel when it returns). The in-process `Wire` holds nothing.
    fn unwound(&mut self) {}
}

/// Everything one process thread owns.
pub(crate) struct Worker<P: Process, D = Wire<P>> {
    pub(crate) host: Host<P>,
    /// The host's driver. Kept for the thread's life, beside the host, so that serving a
    /// channel lends it as is rather than assembling a driver of borrowed parts each time.
    pub(crate) driver: D,
    /// By local incoming number. (A channel from another node has a receiver that never
    /// holds anything: its envelopes come through `inbox`.)
    pub(crate) inbound: Vec<Receiver<Envelope<P::Message>>>,
    /// On a cluster node, for a process with channels from other nodes: their envelopes, and
    /// those parked by channel (`remote_inbox.rs`).
    inbox: Option<RemoteInbox<P::Message>>,
    /// The inbox's doorbell bit (`usize::MAX` with no inbox).
    inbox_bit: usize,
    pub(crate) control: Receiver<Control<P>>,
    pub(crate) tick: Option<Duration>,
    /// The order of visits to ready channels (`rotation.rs`).
    rotation: Rotation,
    /// What `publish` last stored in this process's stats: compared here, on the thread's
    /// own line, rather than loaded from the shared one after every channel served.
    published: (usize, usize),
    /// Whether the callbacks have been slow lately, which decides when a visit reads the clock
    /// (`pace.rs`).
    pace: Pace,
}

/// The threaded runtime as a host's [`Driver`]: edge channels out, the hub for snapshots.
pub(crate) struct Wire<P: Process> {
    me: ProcessId,
    outbox: EdgeOutbox<P::Message>,
    pub(crate) shared: Arc<Shared<P>>,
    /// Whether `shared.tracer` is set, read here on every send rather than from `shared`.
    tracing: bool,
    /// When this process recorded its state for each snapshot whose part is not complete.
    recorded_at: IdMap<Duration>,
    /// Recorded since the last clock read: stamped together (see `Wire::stamp`).
    unstamped: Vec<SnapshotId>,
}

impl<P: Process> Wire<P> {
    /// Process `me`'s driver, sending through `outbox`.
    pub(crate) fn new(
        me: ProcessId,
        outbox: EdgeOutbox<P::Message>,
        shared: Arc<Shared<P>>,
    ) -> Self {
        Wire {
            me,
            outbox,
            tracing: shared.tracer.is_some(),
            shared,
            recorded_at: IdMap::default(),
            unstamped: Vec::new(),
        }
    }

    /// The process this drives.
    #[cfg(feature = "cluster")]
    pub(crate) fn me(&self) -> ProcessId {
        self.me
    }

    /// Forgets every snapshot's times (every snapshot has been given up).
    fn forget_snapshots(&mut self) {
        self.recorded_at.clear();
        self.unstamped.clear();
    }
}

impl<P: Process> ThreadDriver<P> for Wire<P> {
    #[inline(always)]
    fn wire(&self) -> &Wire<P> {
        self
    }

    #[inline(always)]
    fn wire_mut(&mut self) -> &mut Wire<P> {
        self
    }

    #[inline(always)]
    fn end_batch(&mut self) {
        self.stamp_batch();
    }
}

impl<P: Process, D: ThreadDriver<P>> Worker<P, D> {
    /// A process thread's state: `host` driven by `driver`, taking envelopes from `inbound`
    /// and, on a cluster node, from `inbox` (what comes from other nodes).
    pub(crate) fn new(
        host: Host<P>,
        driver: D,
        inbound: Vec<Receiver<Envelope<P::Message>>>,
        inbox: Option<RemoteInbox<P::Message>>,
        control: Receiver<Control<P>>,
        tick: Option<Duration>,
    ) -> Self {
        let words = driver.wire().shared.bells[host.me].words();
        let bits = inbound.len() + 1 + usize::from(inbox.is_some());
        Worker {
            driver,
            host,
            rotation: Rotation::new(bits, words),
            inbox_bit: if inbox.is_some() {
                inbox_bit(inbound.len())
            } else {
                usize::MAX
            },
            inbox,
            inbound,
            control,
            tick,
            published: (0, 0),
            pace: Pace::default(),
        }
    }
}

impl<P: Process> Driver<P> for Wire<P> {
    #[inline(always)]
    fn push(
        &mut self,
        slot: usize,
        envelope: Envelope<P::Message>,
    ) -> Result<(), Refused<P::Message>> {
        if self.tracing {
            self.push_traced(slot, envelope)
        } else {
            self.outbox.push(slot, envelope)
        }
        .map_err(Refused::Disconnected)
    }

    fn recorded(&mut self, id: SnapshotId) {
        match self.shared.tracer.as_ref() {
            // The trace needs this event's own time; it reads the clock per event anyway.
            Some(tracer) => {
                let at = Instant::now();
                self.recorded_at.insert(id, self.shared.hub.since_start(at));
                tracer.note(self.me, TraceKind::Record, None, None, Some(id), at);
            }
            None => self.unstamped.push(id),
        }
    }

    fn new_snapshot_id(&mut self) -> SnapshotId {
        SnapshotId::random()
    }

    fn begin(&mut self, id: SnapshotId, initiator: ProcessId) -> bool {
        // Refused when the runtime is shutting down or a process has failed; the hub has told
        // subscribers.
        self.shared.hub.begin(id, initiator, None).is_ok()
    }

    fn snapshots_live(&self) -> bool {
        !self.shared.degraded.load(Ordering::Acquire)
    }

    fn part_complete(&mut self, part: LocalSnapshot<P::Message, P::State>) {
        let id = part.id;
        self.stamp();
        let recorded_at = self.recorded_at.remove(&id).unwrap_or_default();
        let completed = self.shared.hub.submit(part, recorded_at);
        if let (true, Some(tracer)) = (completed, self.tracer()) {
            tracer.note(
                self.me,
                TraceKind::Complete,
                None,
                None,
                Some(id),
                Instant::now(),
            );
        }
    }
}

impl<P: Process> Wire<P> {
    /// The trace buffers, if the runtime keeps a trace.
    fn tracer(&self) -> Option<&Tracer> {
        self.shared.tracer.as_ref()
    }

    /// Ends a batch (a drain of up to 32 envelopes, a control request, a callback): whatever
    /// was recorded in it gets its time now (see `stamp`).
    #[inline(always)]
    fn stamp_batch(&mut self) {
        if !self.unstamped.is_empty() {
            self.stamp();
        }
    }

    /// Gives every snapshot recorded since the last call the time now. Reading the clock is
    /// not free (on the machine it was measured on, a read per record cost the bank with
    /// 64,000 snapshots at once about 10%), and such snapshots are recorded in batches: one read per batch of records (a drain of up to 32
    /// envelopes, a control request, a callback) instead of one per record made the bank with
    /// 64,000 snapshots at once about 6% faster (median 0.92 s to 0.86 s, BENCHMARKS.md). So a
    /// record time is at most one batch late.
    #[cold]
    fn stamp(&mut self) {
        if self.unstamped.is_empty() {
            return;
        }
        let at = self.shared.hub.now();
        for id in self.unstamped.drain(..) {
            self.recorded_at.insert(id, at);
        }
    }

    /// A send, traced. The time is taken before the push, so that its receipt (traced after
    /// the receiver took it) never comes earlier; the event is written after, as only a send
    /// that went is one.
    #[cold]
    fn push_traced(
        &mut self,
        slot: usize,
        envelope: Envelope<P::Message>,
    ) -> Result<(), Envelope<P::Message>> {
        let (kind, seq, snapshot) = envelope_event(&envelope, true);
        let channel = Channel::new(self.me, self.outbox.destination(slot));
        let at = Instant::now();
        self.outbox.push(slot, envelope)?;
        if let Some(tracer) = self.tracer() {
            tracer.note(self.me, kind, Some(channel), seq, snapshot, at);
        }
        Ok(())
    }
}

impl<P: Process, D: ThreadDriver<P>> Worker<P, D> {
    /// The control channel's bit: after the incoming channels.
    fn control_bit(&self) -> usize {
        self.inbound.len()
    }

    fn me(&self) -> ProcessId {
        self.host.me
    }

    /// Runs `f` with the host and its driver, as one batch.
    #[inline]
    fn with_host<R>(&mut self, f: impl FnOnce(&mut Host<P>, &mut D) -> R) -> R {
        let r = f(&mut self.host, &mut self.driver);
        self.driver.end_batch();
        r
    }

    fn shared(&self) -> &Shared<P> {
        &self.driver.wire().shared
    }

    /// Runs the process until it is told to stop.
    ///
    /// The loop works in rounds: take the doorbell's bits, then visit each ready channel once,
    /// in the order `rotation.rs` plans (channels that waited first; one whose visit left work
    /// goes behind them). A visit takes at most `BATCH` envelopes, in channel order, and ends
    /// early once its callbacks have spent `VISIT_BUDGET` (`pace.rs` says when the clock is
    /// read: never before the `UNTIMED`-th envelope while callbacks are fast). The control
    /// channel (snapshot starts, `with_process` closures) is visited like any other; a due tick
    /// runs at the end of a round. On a cluster node, a process's inbox from other nodes is
    /// visited like a channel too (`serve_inbox`), and what it parks for a channel is served by
    /// that channel's visits, so the bound below holds for the channels from other nodes.
    ///
    /// The bound this gives, with c the longest callback:
    /// - a visit lasts at most `UNTIMED * c + VISIT_BUDGET + c`: its first `UNTIMED`
    ///   callbacks, then the budget, then the callback that ran over it; 9 callbacks when each
    ///   takes longer than the budget;
    /// - once a visit has run over its budget, the process's next visits read the clock from
    ///   their start and last at most `VISIT_BUDGET + c`, one callback when each takes longer
    ///   than the budget, until 8 envelopes in a row take less than the budget together;
    /// - between a channel becoming ready and its visit, every other ready channel is visited
    ///   at most once, counting the visit under way (`rotation.rs`).
    ///
    /// So a marker waits for what is ahead of it on its own channel, plus at most one visit of
    /// each other channel of its process: with callbacks of 20 ms, a callback or two of each
    /// other busy channel, not the 64 callbacks (1.3 s) of serving the lowest channel first.
    fn run(&mut self) {
        self.with_host(|host, wire| host.callback(|app, ctx| app.on_start(ctx), wire));
        self.publish();
        let mut next_tick = self.tick.map(crate::deadline::deadline_after);
        let control_bit = self.control_bit();
        let me = self.me();
        let mut since_clock = 0;
        loop {
            self.driver.wire().shared.bells[me].take(self.rotation.fresh());
            let visits = self.rotation.plan();
            for k in 0..visits {
                let bit = self.rotation.visit(k);
                let more = if bit == control_bit {
                    match self.serve_control() {
                        Some(more) => more,
                        None => {
                            self.driver.end_round();
                            return;
                        }
                    }
                } else if bit == self.inbox_bit {
                    self.serve_inbox()
                } else {
                    since_clock += 1;
                    self.drain(bit)
                };
                if more {
                    self.rotation.again(bit);
                }
            }
            self.driver.end_round();
            // The latest clock read of a visit in this round, if one read it.
            let clock = self.pace.take_clock();
            let mut worked = visits > 0;
            // The clock is read only when ticks are asked for: before waiting, and every
            // `CLOCK_EVERY` channel visits while busy, unless a visit has just read it.
            if let (Some(tick), Some(due)) = (self.tick, next_tick) {
                if clock.is_some() || !worked || since_clock >= CLOCK_EVERY {
                    since_clock = 0;
                    let now = clock.unwrap_or_else(Instant::now);
                    if now >= due {
                        self.with_host(|host, wire| {
                            host.callback(|app, ctx| app.on_tick(ctx), wire)
                        });
                        next_tick = Some(crate::deadline::later(now, tick));
                        worked = true;
                    }
                }
            }
            if worked {
                self.publish();
            } else {
                let shared = self.shared();
                shared.bells[me].wait(next_tick, shared.backoff);
            }
        }
    }

    /// Visits incoming channel `i`: up to `BATCH` messages and markers, in channel order, and
    /// no more once the callbacks have spent the time budget (`pace.rs`). Returns whether the
    /// channel may hold more (its batch or its time ran out).
    ///
    /// One loop, with one call of the channel's read (`take.rs`) and of the host's delivery:
    /// with two call sites the compiler stops inlining them (perf put `Channel::read`,
    /// `start_recv`, `try_recv` and `Host::deliver` out of line in a two-loop version, 9% slower
    /// at N = 64). Per envelope the budget costs one compare with `Pace::limit`.
    #[inline]
    fn drain(&mut self, i: usize) -> bool {
        if self.inbox.as_ref().is_some_and(|inbox| inbox.has_parked(i)) {
            return self.drain_parked(i);
        }
        let rx = &self.inbound[i];
        // Until the channel is empty, or its sender has stopped and what it sent is drained.
        deliver_from(&mut self.host, &mut self.driver, &mut self.pace, || {
            take(rx).map(|envelope| (i, envelope))
        })
    }

    /// Visits the inbox from other nodes (`remote_inbox.rs`): while nothing is parked, delivers
    /// what it holds in arrival order, as `drain` delivers a channel's; once the visit is cut
    /// (its batch or its time ran out), or if something was parked already, sorts what the
    /// inbox holds into the channels' queues, whose visits then deliver it. Returns `false`:
    /// what is left is either parked (its channels are ready) or arrives with a ring, and an
    /// inbox held by a full queue is made ready again by the visit that makes room.
    #[inline(never)]
    fn serve_inbox(&mut self) -> bool {
        let Some(inbox) = self.inbox.as_mut() else {
            return false;
        };
        let (host, driver, pace) = (&mut self.host, &mut self.driver, &mut self.pace);
        if inbox.nothing_parked() {
            let cut = deliver_from(host, driver, pace, || {
                inbox
                    .next_direct()
                    .map(|a| (a.channel as usize, a.envelope))
            });
            if !cut {
                return false;
            }
        }
        let rotation = &mut self.rotation;
        inbox.sort(|i| rotation.arrived(i));
        false
    }

    /// Visits channel `i`'s envelopes parked from the inbox, as `drain` visits a channel's.
    #[inline(never)]
    fn drain_parked(&mut self, i: usize) -> bool {
        let Some(inbox) = self.inbox.as_mut() else {
            return false;
        };
        let (host, driver, pace) = (&mut self.host, &mut self.driver, &mut self.pace);
        let more = deliver_from(host, driver, pace, || inbox.take_parked(i).map(|e| (i, e)));
        if inbox.room_for_held(i) {
            self.rotation.arrived(self.inbox_bit);
        }
        more
    }

    /// Makes the recorder's per-snapshot state visible to `Runtime::stats`: once per pass of the
    /// loop that did work (at most 32 envelopes per channel), not per message or per channel.
    #[inline]
    fn publish(&mut self) {
        let recorder = &self.host.recorder;
        let now = (recorder.active_snapshots(), recorder.logged_messages());
        // Most visits change neither figure: then the shared line is not touched at all.
        if now != self.published {
            self.published = now;
            let stats = &self.driver.wire().shared.stats[self.host.me];
            stats.recording.store(now.0, Ordering::Relaxed);
            stats.logged.store(now.1, Ordering::Relaxed);
        }
    }

    /// Visits the control channel: serves queued requests as `drain` serves envelopes (at most
    /// `BATCH`, within the time budget). Returns whether more may be queued; `None` on `Stop`.
    #[cold]
    fn serve_control(&mut self) -> Option<bool> {
        self.pace.begin(Instant::now);
        let limit = self.pace.limit();
        let mut taken = 0;
        let mut full = false;
        loop {
            match self.control.try_recv() {
                Ok(Control::StartSnapshot(id)) => {
                    self.with_host(|host, wire| host.initiate(id, wire));
                }
                Ok(Control::Run(f)) => self.with_host(|host, wire| host.callback(f, wire)),
                Ok(Control::DropSnapshots) => {
                    self.host.drop_snapshots();
                    self.driver.wire_mut().forget_snapshots();
                }
                Ok(Control::Stop) | Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => break,
            }
            taken += 1;
            if taken >= limit && self.pace.must_end(taken, true, Instant::now) {
                full = true;
                break;
            }
        }
        let more = self.pace.end(taken) | full;
        self.publish();
        Some(more)
    }
}

/// One visit's deliveries, each envelope with its incoming channel, from `next`: a channel
/// (`Worker::drain`), or a process's inbox from other nodes (what comes straight, or one
/// channel's parked envelopes). At most a batch, within the time budget; returns whether the
/// visit was cut with work left. One loop for every source, so that the visits cannot drift
/// apart; inlined into each, so that each keeps one call site of its source's `next` and of the
/// host's delivery (with two, the compiler stopped inlining crossbeam's `try_recv` and
/// `Host::deliver`: `drain`'s documentation).
#[inline(always)]
fn deliver_from<P: Process, D: ThreadDriver<P>>(
    host: &mut Host<P>,
    driver: &mut D,
    pace: &mut Pace,
    mut next: impl FnMut() -> Option<(usize, Envelope<P::Message>)>,
) -> bool {
    pace.begin(Instant::now);
    let limit = pace.limit();
    let mut taken = 0;
    let mut full = false;
    while let Some((i, envelope)) = next() {
        if driver.wire().tracing {
            receipt(driver.wire(), host, i, &envelope);
        }
        let weighty = host.on_envelope(i, envelope, driver);
        taken += 1;
        if taken >= limit && pace.must_end(taken, weighty, Instant::now) {
            full = true;
            break;
        }
    }
    let timed = pace.timed();
    driver.end_visit(taken, timed);
    pace.end(taken) | full
}

/// Traces the receipt of `envelope` on `host`'s incoming channel `i`, before it is handled.
#[cold]
fn receipt<P: Process>(wire: &Wire<P>, host: &Host<P>, i: usize, envelope: &Envelope<P::Message>) {
    let Some(tracer) = wire.tracer() else {
        return;
    };
    let (kind, seq, snapshot) = envelope_event(envelope, false);
    let channel = Channel::new(host.sources.id(i), host.me);
    tracer.note(host.me, kind, Some(channel), seq, snapshot, Instant::now());
}

/// The body of a process thread: wait for the start signal, run the loop, report how it ended.
pub(crate) fn process_thread<P: Process, D: ThreadDriver<P>>(
    mut worker: Worker<P, D>,
    start: Receiver<()>,
    exits: Sender<ProcessId>,
) -> ThreadExit<P> {
    let me = worker.host.me;
    let shared = worker.driver.wire().shared.clone();
    shared.bells[me].register_current_thread();
    super::guard::enter(shared.key, me);
    // The builder drops the start sender once every thread exists (or it gave up).
    let _ = start.recv();
    let failure = if shared.start_aborted.load(Ordering::Acquire) {
        None
    } else {
        panic::catch_unwind(AssertUnwindSafe(|| worker.run()))
            .err()
            .map(|payload| crate::process::panic_message(&*payload))
    };
    // A process that stopped normally keeps taking messages until shutdown has joined every
    // thread (they are handed back as undelivered), so a graceful shutdown never makes a send
    // fail; one that panicked refuses them from now on, once what it sent is on its way.
    if let Some(message) = &failure {
        worker.driver.unwound();
        shared.process_failed(me, message.clone());
    }
    // Dropping the rest of the worker drops its senders: a receiver that drains one of its
    // channels then sees it disconnected and moves on.
    let Worker {
        host,
        inbound,
        inbox,
        ..
    } = worker;
    shared.stats[me].recording.store(0, Ordering::Relaxed);
    shared.stats[me].logged.store(0, Ordering::Relaxed);
    let counters = host.counters();
    let _ = exits.send(me);
    ThreadExit {
        process: failure.is_none().then_some(host.app),
        failure,
        inbound,
        inbox,
        counters,
    }
}
