//! The threaded driver: one OS thread per process, one crossbeam channel per directed edge, and
//! a [`Runtime`] handle to start snapshots, wait for them, run code on a process and shut down.
//!
//! Files:
//! 1. `doorbell.rs`: how a thread learns which channel has work (ready bitmap, park/unpark);
//! 2. `outbox.rs`: the sending side of a process (edge senders, sequence numbers);
//! 3. `event_loop.rs`: the loop every process thread runs, and the thread's start and end;
//! 4. `hub.rs`: where local parts are assembled and handed to waiters and subscribers;
//! 5. `guard.rs`: refusing blocking calls on the runtime's own threads;
//! 6. `stopped.rs`: what shutdown hands back.

mod doorbell;
mod event_loop;
mod guard;
mod hub;
mod outbox;
mod stopped;

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::envelope::Envelope;
use crate::error::{BuildError, Error};
use crate::host::Host;
use crate::process::{Context, Process};
use crate::restore::{self, ChannelStart};
use crate::snapshot::{GlobalSnapshot, SnapshotId, SnapshotOutcome};
use crate::topology::{Channel, ProcessId, Topology, Wiring};

use doorbell::{Backoff, Doorbell};
use event_loop::{process_thread, Control, ThreadExit, Worker};
pub(crate) use guard::ThreadGuard;
use hub::Hub;
pub use hub::{PendingSnapshot, SnapshotEvent};
use outbox::EdgeOutbox;
pub use stopped::{ProcessFailure, Stopped, Undelivered};

/// The global snapshot type of a process type.
pub type SnapshotOf<P> = GlobalSnapshot<<P as Process>::Message, <P as Process>::State>;

/// Per-process figures a thread publishes when its snapshot bookkeeping changes (never per
/// message), for [`Runtime::stats`]. One cache line each, so processes do not share lines.
#[derive(Default)]
#[repr(align(64))]
pub(crate) struct ProcessStats {
    pub(crate) recording: AtomicUsize,
    pub(crate) logged: AtomicUsize,
}

/// What the process threads and the handles share.
pub(crate) struct Shared<P: Process> {
    pub(crate) wiring: Arc<Wiring>,
    pub(crate) bells: Arc<[Doorbell]>,
    pub(crate) controls: Vec<Sender<Control<P>>>,
    pub(crate) hub: Hub<P::Message, P::State>,
    pub(crate) stats: Box<[ProcessStats]>,
    /// How an idle process waits for work.
    pub(crate) backoff: Backoff,
    /// Identifies this runtime's threads (see `guard.rs`).
    pub(crate) key: usize,
    /// Set when the builder gave up before every thread started.
    pub(crate) start_aborted: AtomicBool,
    /// Set when a process has failed: no snapshot can complete any more, and processes ignore
    /// markers.
    pub(crate) degraded: AtomicBool,
}

impl<P: Process> Shared<P> {
    /// Queues a control request for `process` and wakes it.
    fn control(&self, process: ProcessId, request: Control<P>) -> Result<(), Error> {
        self.controls[process]
            .send(request)
            .map_err(|_| self.gone(process))?;
        // The control channel's bit comes after the incoming channels'.
        self.bells[process].ring(self.wiring.incoming(process).len());
        Ok(())
    }

    /// Why `process` no longer serves requests.
    fn gone(&self, process: ProcessId) -> Error {
        match self.hub.failure(process) {
            Some(message) => Error::ProcessFailed { process, message },
            None => Error::Shutdown,
        }
    }

    /// `process` has panicked: record it (once) and refuse further messages to it.
    pub(crate) fn process_failed(&self, process: ProcessId, message: String) {
        self.bells[process].close();
        // First the flag, so no process builds new snapshot state, then the hub fails the
        // running snapshots, then every process drops what it holds.
        let first = !self.degraded.swap(true, Ordering::AcqRel);
        self.hub.fail_process(process, message);
        if first {
            for p in 0..self.controls.len() {
                let _ = self.control(p, Control::DropSnapshots);
            }
        }
    }

    /// Tells every thread to stop (they finish their current callback first).
    fn stop_all(&self) {
        self.hub.close();
        for p in 0..self.controls.len() {
            let _ = self.control(p, Control::Stop);
        }
    }
}

/// Snapshot bookkeeping held anywhere in the runtime: all zero once every snapshot has ended,
/// which is how tests prove nothing is left behind. Each process publishes its figures after
/// each batch of messages it handles, so they may trail a snapshot's completion by that much:
/// wait for zero rather than expect it the instant a snapshot completes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    /// Local snapshots recorded by some process and not yet complete there (summed over
    /// processes).
    pub recording: usize,
    /// Messages held in channel recordings (summed over processes).
    pub logged_messages: usize,
    /// Global snapshots still waiting for local parts.
    pub collecting: usize,
    /// Snapshots with someone waiting on them.
    pub watched: usize,
}

/// How many (snapshot, channel) pairs the default limit on snapshots in flight allows. A
/// snapshot in flight holds a marker and per-channel bookkeeping for every channel, so its
/// memory is about proportional to the channels; BENCHMARKS.md measures about 100 bytes per
/// channel per snapshot, so about 2 GB at the default limit.
const DEFAULT_IN_FLIGHT_BUDGET: usize = 1 << 24;
/// The default limit never goes below this, however many channels.
const DEFAULT_IN_FLIGHT_FLOOR: usize = 16;

/// The default of [`Builder::max_snapshots_in_flight`] for a topology with `channels` channels.
fn default_max_in_flight(channels: usize) -> usize {
    (DEFAULT_IN_FLIGHT_BUDGET / channels.max(1)).max(DEFAULT_IN_FLIGHT_FLOOR)
}

/// Configures and starts a [`Runtime`] of processes of type `P`.
pub struct Builder<P> {
    topology: Topology,
    max_in_flight: Option<usize>,
    tick: Option<Duration>,
    thread_name: String,
    stack_size: Option<usize>,
    processes: PhantomData<fn() -> P>,
}

impl<P: Process> Builder<P> {
    /// Calls [`Process::on_tick`] on every process about every `interval` (not at all by
    /// default). Ticks are served by the same loop as messages, between two callbacks.
    pub fn tick_interval(mut self, interval: Duration) -> Self {
        self.tick = Some(interval);
        self
    }

    /// At most `limit` snapshots in flight (started, from outside or by application code, and
    /// not yet complete or failed). While that many are running, [`Runtime::start_snapshot`]
    /// fails with [`Error::TooManySnapshots`] and a snapshot started by application code is
    /// reported to subscribers with that error; the running ones are not disturbed. This bounds
    /// the memory snapshots can take, which grows with the number in flight times the number of
    /// channels (each in-flight snapshot has one marker per channel queued or on its way, and
    /// counters per channel at every process).
    ///
    /// Default: 2^24 / channels, at least 16. That is 838,860 on `Topology::complete(5)` (20
    /// channels), 69,905 on `complete(16)` and 4,161 on `complete(64)`. Since a snapshot's
    /// memory grows with the channels, the default caps snapshots times channels, which keeps
    /// the memory at the limit about the same on every topology (BENCHMARKS.md, "Concurrent
    /// snapshots at scale", measures the bytes per channel per snapshot). A limit of 0 is taken
    /// as 1.
    pub fn max_snapshots_in_flight(mut self, limit: usize) -> Self {
        self.max_in_flight = Some(limit.max(1));
        self
    }

    /// Process threads are named `{prefix}-{id}` (default `process-{id}`).
    pub fn thread_name(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name = prefix.into();
        self
    }

    /// Stack size of each process thread (default: the standard library's).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Checks the topology and starts one thread per process; `processes` are given in id
    /// order, one per process of the topology.
    pub fn build(self, processes: impl IntoIterator<Item = P>) -> Result<Runtime<P>, BuildError> {
        let wiring = Arc::new(self.topology.validate()?);
        let apps = restore::fresh(&wiring, processes)?;
        self.start(wiring, apps, None)
    }

    /// Starts again from a completed global snapshot: each process is rebuilt from its recorded
    /// state by `rebuild(id, state)`, each channel starts holding its recorded in-flight
    /// messages (delivered before anything sent after the restart), and every channel's
    /// counters continue from the snapshot's, so later snapshots verify exactly.
    ///
    /// The snapshot must fit the topology (same processes and channels) and be a consistent
    /// cut; if not, nothing is rebuilt or started and the error says why. `on_start` runs on
    /// restored processes too: one that starts work there should know it was restored (the
    /// `rebuild` closure can tell it).
    pub fn restore(
        self,
        snapshot: &GlobalSnapshot<P::Message, P::State>,
        rebuild: impl FnMut(ProcessId, &P::State) -> P,
    ) -> Result<Runtime<P>, BuildError> {
        let wiring = Arc::new(self.topology.validate()?);
        let (apps, starts) = restore::rebuild(&wiring, snapshot, rebuild)?;
        self.start(wiring, apps, Some(starts))
    }

    fn start(
        self,
        wiring: Arc<Wiring>,
        apps: Vec<P>,
        mut starts: Option<Vec<ChannelStart<P::Message>>>,
    ) -> Result<Runtime<P>, BuildError> {
        let n = wiring.processes();
        let epoch = Instant::now();
        // One channel per directed edge, and one doorbell bit per incoming channel plus one for
        // control requests.
        let bells: Arc<[Doorbell]> = (0..n)
            .map(|p| Doorbell::new(wiring.incoming(p).len() + 1))
            .collect();
        let mut links: Vec<Vec<_>> = (0..n)
            .map(|p| Vec::with_capacity(wiring.outgoing(p).len()))
            .collect();
        type Inbound<M> = Vec<Option<Receiver<Envelope<M>>>>;
        let mut inbound: Vec<Inbound<P::Message>> = (0..n)
            .map(|p| (0..wiring.incoming(p).len()).map(|_| None).collect())
            .collect();
        let mut channel_order: Vec<usize> = (0..wiring.channels().len()).collect();
        channel_order.sort_by_key(|&c| (wiring.channels()[c].from, wiring.local_slots(c).0));
        for c in channel_order {
            let Channel { from, to } = wiring.channels()[c];
            let (tx, rx) = crossbeam_channel::unbounded();
            let (_, at_receiver) = wiring.local_slots(c);
            // A restored channel holds its in-flight messages before any thread runs.
            // (Taken out: the hosts need only the counters.)
            if let Some(start) = starts.as_mut().map(|s| &mut s[c]) {
                for (seq, message) in std::mem::take(&mut start.in_flight) {
                    let _ = tx.send(Envelope::Message { seq, message });
                    bells[to].ring(at_receiver);
                }
            }
            links[from].push((tx, to, at_receiver));
            inbound[to][at_receiver] = Some(rx);
        }
        let (controls, control_rx): (Vec<_>, Vec<_>) =
            (0..n).map(|_| crossbeam_channel::unbounded()).unzip();
        let shared = Arc::new(Shared {
            wiring: wiring.clone(),
            bells: bells.clone(),
            controls,
            hub: Hub::new(
                wiring.clone(),
                epoch,
                self.max_in_flight
                    .unwrap_or_else(|| default_max_in_flight(wiring.channels().len())),
            ),
            stats: (0..n).map(|_| ProcessStats::default()).collect(),
            backoff: Backoff::for_processes(n),
            key: guard::new_key(),
            start_aborted: AtomicBool::new(false),
            degraded: AtomicBool::new(false),
        });
        let (start_tx, start_rx) = crossbeam_channel::bounded::<()>(0);
        let (exit_tx, exit_rx) = crossbeam_channel::unbounded();
        let mut handles = Vec::with_capacity(n);
        let workers = apps.into_iter().zip(links).zip(inbound).zip(control_rx);
        for (me, (((app, links), inbound), control)) in workers.enumerate() {
            let inbound: Vec<_> = inbound.into_iter().map(|r| r.expect("wired")).collect();
            let words = bells[me].words();
            let worker = Worker {
                host: Host::start(me, app, &wiring, starts.as_deref()),
                outbox: EdgeOutbox::new(links, bells.clone()),
                inbound,
                control,
                shared: shared.clone(),
                tick: self.tick,
                ready: vec![0; words],
                again: vec![0; words],
            };
            let mut builder = thread::Builder::new().name(format!("{}-{me}", self.thread_name));
            if let Some(bytes) = self.stack_size {
                builder = builder.stack_size(bytes);
            }
            let (start, exits) = (start_rx.clone(), exit_tx.clone());
            match builder.spawn(move || process_thread(worker, start, exits)) {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    // Release the threads already started without running any process code.
                    shared.start_aborted.store(true, Ordering::Release);
                    drop(start_tx);
                    for handle in handles {
                        let _ = handle.join();
                    }
                    return Err(BuildError::Spawn {
                        process: me,
                        message: e.to_string(),
                    });
                }
            }
        }
        drop(start_tx);
        Ok(Runtime {
            owner: Arc::new(Owner {
                shared,
                threads: Mutex::new(Some(handles)),
                exits: exit_rx,
            }),
        })
    }
}

/// Owns the threads; the last [`Runtime`] clone to go drops it, which stops and joins them.
struct Owner<P: Process> {
    shared: Arc<Shared<P>>,
    threads: Mutex<Option<Vec<JoinHandle<ThreadExit<P>>>>>,
    /// Each thread sends its id here as it ends.
    exits: Receiver<ProcessId>,
}

impl<P: Process> Drop for Owner<P> {
    fn drop(&mut self) {
        let Some(handles) = self.threads.get_mut().take() else {
            return;
        };
        self.shared.stop_all();
        // If the last handle goes on a process thread, that thread cannot join itself: it is
        // left to finish its callback and stop on its own.
        let me = thread::current().id();
        for handle in handles {
            if handle.thread().id() != me {
                let _ = handle.join();
            }
        }
    }
}

/// A running set of processes.
///
/// Cheap to clone (an `Arc`); every clone controls the same processes. Dropping the last clone
/// stops and joins every thread, as [`shutdown`](Runtime::shutdown) does, after the callbacks
/// running at that moment return. Do not keep a clone inside a process: application code has
/// [`Context`] instead.
pub struct Runtime<P: Process> {
    owner: Arc<Owner<P>>,
}

impl<P> std::fmt::Debug for Builder<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("topology", &self.topology)
            .field("max_in_flight", &self.max_in_flight)
            .field("tick", &self.tick)
            .field("thread_name", &self.thread_name)
            .field("stack_size", &self.stack_size)
            .finish()
    }
}

impl<P: Process> Clone for Runtime<P> {
    fn clone(&self) -> Self {
        Runtime {
            owner: self.owner.clone(),
        }
    }
}

impl<P: Process> std::fmt::Debug for Runtime<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("processes", &self.processes())
            .field("channels", &self.shared().wiring.channels().len())
            .finish_non_exhaustive()
    }
}

impl<P: Process> Runtime<P> {
    /// A builder for a runtime over `topology`.
    pub fn builder(topology: Topology) -> Builder<P> {
        Builder {
            topology,
            max_in_flight: None,
            tick: None,
            thread_name: "process".to_string(),
            stack_size: None,
            processes: PhantomData,
        }
    }

    /// Starts `processes` (in id order) over `topology` with the default settings.
    pub fn new(
        topology: Topology,
        processes: impl IntoIterator<Item = P>,
    ) -> Result<Self, BuildError> {
        Self::builder(topology).build(processes)
    }

    fn shared(&self) -> &Shared<P> {
        &self.owner.shared
    }

    fn guard(&self) -> ThreadGuard {
        ThreadGuard {
            key: self.shared().key,
        }
    }

    fn check_process(&self, process: ProcessId) -> Result<(), Error> {
        let processes = self.processes();
        if process >= processes {
            return Err(Error::NoSuchProcess { process, processes });
        }
        Ok(())
    }

    /// How many processes.
    pub fn processes(&self) -> usize {
        self.shared().wiring.processes()
    }

    /// The validated topology.
    pub fn wiring(&self) -> &Wiring {
        &self.shared().wiring
    }

    /// The most snapshots this runtime holds in flight (see
    /// [`Builder::max_snapshots_in_flight`]).
    pub fn max_snapshots_in_flight(&self) -> usize {
        self.shared().hub.max_in_flight()
    }

    /// Starts a snapshot with `initiator` as initiator and returns a ticket to wait on.
    ///
    /// Any number may run at once, from any initiators, up to
    /// [`Builder::max_snapshots_in_flight`]. Fails if `initiator` does not exist, the runtime has
    /// shut down, a process has failed (a snapshot needs every process), or the limit of
    /// snapshots in flight is reached ([`Error::TooManySnapshots`]; nothing else changes).
    pub fn start_snapshot(
        &self,
        initiator: ProcessId,
    ) -> Result<PendingSnapshot<P::Message, P::State>, Error> {
        self.check_process(initiator)?;
        let id = SnapshotId::random();
        let shared = self.shared();
        let ticket = shared
            .hub
            .begin(id, initiator, Some(self.guard()))?
            .expect("a ticket was asked for");
        if let Err(e) = shared.control(initiator, Control::StartSnapshot(id)) {
            shared.hub.withdraw(id, e.clone());
            return Err(e);
        }
        Ok(ticket)
    }

    /// Takes a snapshot: starts it at `initiator` and waits until it completes.
    pub fn snapshot(&self, initiator: ProcessId) -> SnapshotOutcome<P::Message, P::State> {
        self.guard().check()?;
        self.start_snapshot(initiator)?.wait()
    }

    /// Like [`snapshot`](Runtime::snapshot), giving up with [`Error::Timeout`] after `timeout`.
    pub fn snapshot_timeout(
        &self,
        initiator: ProcessId,
        timeout: Duration,
    ) -> SnapshotOutcome<P::Message, P::State> {
        self.guard().check()?;
        self.start_snapshot(initiator)?.wait_timeout(timeout)
    }

    /// A ticket for a snapshot that is still running, whoever started it (for instance one
    /// started by application code with [`Context::start_snapshot`]). Fails with
    /// [`Error::UnknownSnapshot`] if no snapshot with this id is running: it may already have
    /// ended, so prefer [`subscribe`](Runtime::subscribe) to see every snapshot's end.
    pub fn watch_snapshot(
        &self,
        id: SnapshotId,
    ) -> Result<PendingSnapshot<P::Message, P::State>, Error> {
        self.shared().hub.watch(id, self.guard())
    }

    /// From now on, the end of every snapshot (completed or failed, whoever started it) is
    /// sent to the returned receiver. It disconnects when the runtime shuts down.
    pub fn subscribe(&self) -> Receiver<SnapshotEvent<P::Message, P::State>> {
        self.shared().hub.subscribe()
    }

    /// Runs `f` on `process`'s thread, as a callback between two others, and returns its
    /// result. `f` can send messages and start snapshots through the [`Context`].
    pub fn with_process<R: Send + 'static>(
        &self,
        process: ProcessId,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.run_on(process, None, f)
    }

    /// Like [`with_process`](Runtime::with_process), giving up with [`Error::Timeout`] after
    /// `timeout` (`f` may still run later; its result is then dropped).
    pub fn with_process_timeout<R: Send + 'static>(
        &self,
        process: ProcessId,
        timeout: Duration,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.run_on(process, Some(timeout), f)
    }

    fn run_on<R: Send + 'static>(
        &self,
        process: ProcessId,
        timeout: Option<Duration>,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        self.check_process(process)?;
        self.guard().check()?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        let shared = self.owner.shared.clone();
        let run = Box::new(move |app: &mut P, ctx: &mut Context<'_, P::Message>| {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(app, ctx))) {
                Ok(r) => {
                    let _ = tx.send(Ok(r));
                }
                Err(payload) => {
                    // Record the failure before the caller hears of it, so that what the caller
                    // does next (start a snapshot, read `failures`) already sees it.
                    let message = crate::process::panic_message(&*payload);
                    shared.process_failed(process, message.clone());
                    let _ = tx.send(Err(message));
                    std::panic::resume_unwind(payload);
                }
            }
        });
        let shared = self.shared();
        shared.control(process, Control::Run(run))?;
        let reply = match timeout {
            None => rx.recv().map_err(|_| shared.gone(process)),
            Some(t) => rx.recv_timeout(t).map_err(|e| match e {
                crossbeam_channel::RecvTimeoutError::Timeout => Error::Timeout,
                crossbeam_channel::RecvTimeoutError::Disconnected => shared.gone(process),
            }),
        }?;
        reply.map_err(|message| Error::ProcessFailed { process, message })
    }

    /// Every process that has panicked so far, with its panic message.
    pub fn failures(&self) -> Vec<ProcessFailure> {
        self.shared()
            .hub
            .failures()
            .into_iter()
            .map(|(process, message)| ProcessFailure { process, message })
            .collect()
    }

    /// Snapshot bookkeeping held in the runtime now (see [`RuntimeStats`]).
    pub fn stats(&self) -> RuntimeStats {
        let shared = self.shared();
        let (collecting, watched) = shared.hub.pending();
        RuntimeStats {
            recording: shared
                .stats
                .iter()
                .map(|s| s.recording.load(Ordering::Relaxed))
                .sum(),
            logged_messages: shared
                .stats
                .iter()
                .map(|s| s.logged.load(Ordering::Relaxed))
                .sum(),
            collecting,
            watched,
        }
    }

    /// Time since the runtime was built: the clock of every snapshot's `started_at` and
    /// `completed_at`.
    pub fn elapsed(&self) -> Duration {
        self.shared().hub.now()
    }

    /// Whether the runtime has been shut down.
    pub fn is_shut_down(&self) -> bool {
        self.shared().hub.is_closed()
    }

    /// Stops every process (after its current callback), joins every thread and hands back the
    /// processes, the failures and the messages still in flight. Snapshots still running end
    /// with [`Error::Shutdown`]. Other clones of this runtime see [`Error::Shutdown`] from then
    /// on.
    ///
    /// Blocks until every callback running now returns; see
    /// [`shutdown_timeout`](Runtime::shutdown_timeout) for a bound.
    pub fn shutdown(self) -> Result<Stopped<P>, Error> {
        self.stop(None)
    }

    /// Like [`shutdown`](Runtime::shutdown), giving up after `timeout` with
    /// [`Error::ShutdownTimeout`] naming the processes still running; their threads are detached
    /// and stop once their callback returns.
    pub fn shutdown_timeout(self, timeout: Duration) -> Result<Stopped<P>, Error> {
        self.stop(Some(Instant::now() + timeout))
    }

    fn stop(self, deadline: Option<Instant>) -> Result<Stopped<P>, Error> {
        self.guard().check()?;
        let owner = &self.owner;
        let handles = owner.threads.lock().take().ok_or(Error::Shutdown)?;
        owner.shared.stop_all();
        if let Some(deadline) = deadline {
            loop {
                let running: Vec<ProcessId> = handles
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| !h.is_finished())
                    .map(|(p, _)| p)
                    .collect();
                if running.is_empty() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(Error::ShutdownTimeout { running });
                }
                let _ = owner.exits.recv_deadline(deadline);
            }
        }
        let wiring = &owner.shared.wiring;
        let mut stopped = Stopped {
            processes: Vec::with_capacity(handles.len()),
            failures: Vec::new(),
            undelivered: Vec::new(),
        };
        // Join every thread before draining any channel: a thread still running may send.
        let exits: Vec<_> = handles.into_iter().map(JoinHandle::join).collect();
        let mut leftovers = vec![Vec::new(); wiring.channels().len()];
        for (process, exit) in exits.into_iter().enumerate() {
            match exit {
                Ok(exit) => {
                    if let Some(message) = exit.failure {
                        stopped.failures.push(ProcessFailure { process, message });
                    }
                    stopped.processes.push(exit.process);
                    for (&c, rx) in wiring.incoming(process).iter().zip(exit.inbound) {
                        leftovers[c] = rx
                            .try_iter()
                            .filter_map(|e| match e {
                                Envelope::Message { message, .. } => Some(message),
                                Envelope::Marker(_) => None,
                            })
                            .collect();
                    }
                }
                // Only reachable if dropping a failed process panicked again.
                Err(payload) => {
                    stopped.failures.push(ProcessFailure {
                        process,
                        message: crate::process::panic_message(&*payload),
                    });
                    stopped.processes.push(None);
                }
            }
        }
        stopped.undelivered = wiring
            .channels()
            .iter()
            .zip(leftovers)
            .filter(|(_, m)| !m.is_empty())
            .map(|(&channel, messages)| Undelivered { channel, messages })
            .collect();
        Ok(stopped)
    }
}

// Stable-property detection (`detect.rs`) over a running runtime: real time, real snapshots.
impl<P: Process> crate::detect::SnapshotSource for Runtime<P> {
    type Message = P::Message;
    type State = P::State;

    fn take_snapshot(
        &mut self,
        initiator: ProcessId,
        timeout: Duration,
    ) -> SnapshotOutcome<P::Message, P::State> {
        self.snapshot_timeout(initiator, timeout)
    }

    fn pause(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn clock(&self) -> Duration {
        self.elapsed()
    }
}
