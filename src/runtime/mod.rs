//! The threaded driver: one OS thread per process, one crossbeam channel per directed edge, and
//! a [`Runtime`] handle to start snapshots, wait for them, run code on a process and shut down.
//!
//! The per-process work (sending, markers, recording) is the shared core's (`host.rs`); this
//! driver moves envelopes between threads and gathers the results.
//!
//! Files:
//! 1. `mod.rs`: the [`Runtime`] handle: start and watch snapshots, run code on a process, stats;
//! 2. `builder.rs`: configuring and starting: channels, doorbells, one thread per process;
//! 3. `shared.rs`: what the threads and the handles share, and what a failure sets off;
//! 4. `doorbell.rs`: how a thread learns which channel has work (ready bitmap, park/unpark);
//! 5. `outbox.rs`: the edge senders a process pushes its envelopes onto;
//! 6. `event_loop.rs`: the loop every process thread runs, and the thread's start and end;
//!    `rotation.rs`: the order in which it visits its ready channels; `pace.rs`: how long one
//!    visit may last; `remote_inbox.rs`: on a cluster node, what a process gets from the
//!    other nodes;
//! 7. `hub.rs`: where local parts are assembled and handed to waiters and subscribers;
//! 8. `guard.rs`: refusing blocking calls on the runtime's own threads;
//! 9. `shutdown.rs` and `stopped.rs`: stopping and joining, and what shutdown hands back.

mod builder;
mod doorbell;
mod event_loop;
mod guard;
mod hub;
mod outbox;
mod pace;
mod remote_inbox;
mod rotation;
mod shared;
mod shutdown;
mod stopped;
mod take;
mod tracer;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::error::{BuildError, Error};
use crate::process::{Context, Process};
use crate::snapshot::{GlobalSnapshot, SnapshotId, SnapshotOutcome};
use crate::topology::{ProcessId, Topology, Wiring};

pub use crate::process::ProcessFailure;
pub use builder::RuntimeBuilder;
use event_loop::Control;
pub(crate) use guard::ThreadGuard;
pub use hub::{PendingSnapshot, SnapshotEvent};
use shared::Shared;
use shutdown::Owner;
pub use stopped::{Stopped, Undelivered};

/// What a cluster node (`crate::cluster`) builds on: this driver's machinery, used as a layer.
/// A node is a runtime that runs some of the processes, plus links to the other nodes; these are
/// the pieces it reaches into. Nothing here knows of the cluster.
#[cfg(feature = "cluster")]
pub(crate) mod layer {
    pub(crate) use super::doorbell::{set_bit, set_bits, test_bit, Backoff, BitPlace, Doorbell};
    pub(crate) use super::event_loop::{Control, ThreadDriver, Wire};
    #[cfg(feature = "cluster")]
    pub(crate) use super::hub::MarkerRefused;
    pub(crate) use super::hub::Uplink;
    pub(crate) use super::pace::UNTIMED;
    pub(crate) use super::remote_inbox::{inbox_bit, Arrival};
    pub(crate) use super::shared::Shared;
    pub(crate) use super::shutdown::FinalCounters;
}

/// The global snapshot type of a process type.
pub type SnapshotOf<P> = GlobalSnapshot<<P as Process>::Message, <P as Process>::State>;

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

/// A running set of processes.
///
/// Cheap to clone (an `Arc`); every clone controls the same processes. Dropping the last clone
/// stops and joins every thread, as [`shutdown`](Runtime::shutdown) does, after the callbacks
/// running at that moment return. Do not keep a clone inside a process: application code has
/// [`Context`] instead.
pub struct Runtime<P: Process> {
    owner: Arc<Owner<P>>,
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
    pub fn builder(topology: Topology) -> RuntimeBuilder<P> {
        RuntimeBuilder::new(topology)
    }

    /// Starts `processes` (in id order) over `topology` with the default settings.
    pub fn new(
        topology: Topology,
        processes: impl IntoIterator<Item = P>,
    ) -> Result<Self, BuildError> {
        Self::builder(topology).build(processes)
    }

    pub(crate) fn shared(&self) -> &Shared<P> {
        &self.owner.shared
    }

    pub(crate) fn guard(&self) -> ThreadGuard {
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
    /// [`RuntimeBuilder::max_snapshots_in_flight`]).
    pub fn max_snapshots_in_flight(&self) -> usize {
        self.shared().hub.max_in_flight()
    }

    /// The trace of the run so far, if the runtime was built with
    /// [`RuntimeBuilder::trace`]: a consistent prefix of what every process has done (see
    /// [`crate::trace`]). After a shutdown, [`Stopped::trace`] has all of it.
    pub fn trace(&self) -> Option<crate::trace::Trace> {
        self.shared().tracer.as_ref().map(|t| t.read())
    }

    /// Starts a snapshot with `initiator` as initiator and returns a ticket to wait on.
    ///
    /// Any number may run at once, from any initiators, up to
    /// [`RuntimeBuilder::max_snapshots_in_flight`]. Fails if `initiator` does not exist, the
    /// runtime has shut down, a process has failed (a snapshot needs every process), or the
    /// limit of snapshots in flight is reached ([`Error::TooManySnapshots`]; nothing else
    /// changes).
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
    ///
    /// The receiver is a [`crossbeam_channel::Receiver`] (re-exported as
    /// [`chandy_lamport::crossbeam_channel`](crate::crossbeam_channel), so its version always
    /// matches): `recv`, `recv_timeout`, `try_iter`, and it can sit in a `select!` beside your
    /// own channels. It is unbounded, so a subscriber that stops reading holds every later event;
    /// drop it when done.
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
