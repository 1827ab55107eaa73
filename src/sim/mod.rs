//! A deterministic simulator: the same processes, the same marker rules and the same snapshot
//! assembly as the threaded [`Runtime`](crate::Runtime), driven on one thread by a seeded
//! scheduler, so that a run is a function of its seed and inputs and any failing interleaving
//! replays exactly.
//!
//! Time is discrete. Each message sent at step `t` is delivered at `t + d`, `d` drawn from the
//! delay range (default `1..=5`), but never before an earlier message on the same channel (FIFO
//! holds). At each step every message that is due is delivered, the channels in a seeded random
//! order ([`Schedule`] puts some off to reach corner cases; [`SimBuilder::causal`] adds causal
//! order to FIFO). Processes tick (their own work, [`Process::on_tick`]) every `tick_every` steps, each
//! with a seeded phase. Snapshot ids are v4 UUIDs drawn from the seeded generator; snapshot times
//! are steps, reported as one millisecond per step (`started_at`, `completed_at`).
//!
//! Every process runs the same per-process core as in the threaded runtime (`host.rs`: sending,
//! markers, recording); the simulator only decides when each envelope arrives.
//!
//! Files: `mod.rs`, the [`Simulation`] handle (run, step, start snapshots, look at the result);
//! `builder.rs`, [`SimBuilder`] and [`Schedule`]; `network.rs`, the channels, clock, scheduler,
//! collector and trace; `port.rs`, the simulator as a process's driver; `explore.rs`, many
//! seeds; [`exhaustive`], every order of events of a small system (`quiet.rs` keeps the panics it
//! reports off stderr); `scenario.rs`, scripted runs in a course's file format; `trace.rs`, the event trace.
//!
//! ```
//! use chandy_lamport::sim::Simulation;
//! use chandy_lamport::{Context, Process, ProcessId, Topology};
//!
//! struct Hot(u64);
//! impl Process for Hot {
//!     type Message = u64;
//!     type State = u64;
//!     fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
//!         let to = ctx.neighbours()[0];
//!         self.0 -= 1;
//!         ctx.send(to, 1).unwrap();
//!     }
//!     fn on_message(&mut self, _: ProcessId, m: u64, ctx: &mut Context<'_, u64>) {
//!         let to = ctx.neighbours()[0];
//!         ctx.send(to, m).unwrap();
//!     }
//!     fn record(&self) -> u64 { self.0 }
//! }
//!
//! let mut sim = Simulation::builder(Topology::ring(4))
//!     .seed(42)
//!     .build((0..4).map(|_| Hot(10)))?;
//! sim.run_for(20);
//! let id = sim.start_snapshot(2)?;
//! sim.run_until_snapshots_complete(1_000)?;
//! let snapshot = sim.completed_snapshot(id).unwrap();
//! snapshot.verify()?;
//! assert_eq!(snapshot.total(|s| *s, |m| *m), 40);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod builder;
pub mod exhaustive;
mod explore;
mod network;
mod port;
mod quiet;
pub mod scenario;

use std::cmp::Reverse;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use crate::envelope::Envelope;
use crate::error::{BuildError, Error};
use crate::host::{Driver, Host};
use crate::process::{panic_message, Context, Process, ProcessFailure};
use crate::snapshot::{GlobalSnapshot, SnapshotId, SnapshotOutcome};
use crate::topology::{Channel, ProcessId, Topology, Wiring};
use network::Network;
use port::Port;

use crate::trace::envelope_event;
pub use crate::trace::{TraceEvent, TraceKind};
pub use builder::{Schedule, SimBuilder};
pub use explore::{explore, ExploreFailure};

/// A snapshot that failed because a process panicked while it ran, or that application code
/// started after a process had panicked (refused: every snapshot needs every process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// The process that started it.
    pub initiator: ProcessId,
    /// Why it failed ([`Error::ProcessFailed`]).
    pub error: Error,
}

/// A simulated run (see the [module documentation](self)).
pub struct Simulation<P: Process> {
    hosts: Vec<Host<P>>,
    net: Network<P>,
}

impl<P: Process> Simulation<P> {
    /// A builder for a simulation of `topology`.
    pub fn builder(topology: Topology) -> SimBuilder<P> {
        SimBuilder {
            topology,
            seed: 0,
            delay: 1..=5,
            schedule: Schedule::Random,
            tick_every: None,
            trace: false,
            causal: false,
            processes: PhantomData,
        }
    }

    /// A simulation with the default settings and seed `seed`.
    pub fn new(
        topology: Topology,
        processes: impl IntoIterator<Item = P>,
        seed: u64,
    ) -> Result<Self, BuildError> {
        Self::builder(topology).seed(seed).build(processes)
    }

    /// Runs `f` on process `p`'s host, as the runtime's thread would: nothing if `p` has
    /// failed, and a panic in it is `p`'s failure (see [`fail`](Simulation::fail)), reported,
    /// not propagated. `None` if it did not run to the end.
    fn with_host<R>(
        &mut self,
        p: ProcessId,
        f: impl FnOnce(&mut Host<P>, &mut Port<'_, P>) -> R,
    ) -> Option<R> {
        if self.net.collector.failure_of(p).is_some() {
            return None;
        }
        let mut port = Port {
            net: &mut self.net,
            me: p,
        };
        let host = &mut self.hosts[p];
        match panic::catch_unwind(AssertUnwindSafe(|| f(host, &mut port))) {
            Ok(r) => Some(r),
            Err(payload) => {
                self.fail(p, panic_message(&*payload));
                None
            }
        }
    }

    /// Process `p` has panicked. What follows is decided by the same code as in the runtime:
    /// the collector fails every running snapshot and refuses new ones (`Collector::fail`), and
    /// every other process drops its snapshot state (`Host::drop_snapshots`). Here, in addition,
    /// `p` runs nothing more and what reaches it is dropped, as the runtime's thread for it ends;
    /// its own state is left as the panic left it (perhaps half-updated: not to be run again).
    fn fail(&mut self, p: ProcessId, message: String) {
        let Some(abandoned) = self.net.collector.fail(p, message) else {
            return;
        };
        let error = self.process_failure(p).expect("just recorded");
        for (id, initiator) in abandoned {
            self.net.failed_snapshots.push(FailedSnapshot {
                id,
                initiator,
                error: error.clone(),
            });
        }
        for host in self.hosts.iter_mut().filter(|h| h.me != p) {
            host.drop_snapshots();
        }
        for times in &mut self.net.recorded_at {
            times.clear();
        }
    }

    /// Makes process `p` fail now by a panic in its code: a callback that panics with `message`
    /// runs on it, so what follows is what follows any panic in application code: it runs
    /// nothing more, what reaches it is dropped, sends to it return
    /// [`SendError::Disconnected`](crate::SendError::Disconnected), every running snapshot
    /// fails with [`Error::ProcessFailed`] and later ones are refused, as in the threaded
    /// runtime. A way to put a fault at a chosen step ([`run_for`](Simulation::run_for) to it
    /// first) without a panicking `Process`. (The panic is raised with
    /// [`std::panic::resume_unwind`], which skips the panic hook: nothing is printed.) Nothing
    /// happens if `p` has already failed.
    pub fn fail_process(&mut self, p: ProcessId, message: impl Into<String>) -> Result<(), Error> {
        self.check_process(p)?;
        let message = message.into();
        self.with_host(p, move |_, _| panic::resume_unwind(Box::new(message)));
        Ok(())
    }

    /// Every process that has panicked so far, with its panic message.
    pub fn failures(&self) -> Vec<ProcessFailure> {
        self.net
            .collector
            .failures()
            .into_iter()
            .map(|(process, message)| ProcessFailure { process, message })
            .collect()
    }

    /// Snapshots that failed (a process panicked while they ran, or application code started
    /// them after that), in the order they failed.
    pub fn failed_snapshots(&self) -> &[FailedSnapshot] {
        &self.net.failed_snapshots
    }

    /// The error that ends runs and refuses snapshots once a process has failed.
    fn failure(&self) -> Result<(), Error> {
        match self.net.collector.failure() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// `p`'s own failure, if it has failed.
    fn process_failure(&self, p: ProcessId) -> Option<Error> {
        self.net
            .collector
            .failure_of(p)
            .map(|message| Error::ProcessFailed {
                process: p,
                message: message.to_string(),
            })
    }

    fn check_process(&self, process: ProcessId) -> Result<(), Error> {
        let processes = self.hosts.len();
        if process >= processes {
            return Err(Error::NoSuchProcess { process, processes });
        }
        Ok(())
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.net.seed
    }

    /// The current step.
    pub fn now(&self) -> u64 {
        self.net.now
    }

    /// The validated topology.
    pub fn wiring(&self) -> &Wiring {
        &self.net.wiring
    }

    /// Application messages delivered so far.
    pub fn deliveries(&self) -> u64 {
        self.net.deliveries
    }

    /// Messages and markers in flight.
    pub fn in_flight_count(&self) -> usize {
        self.net.lanes.iter().map(|l| l.queue.len()).sum()
    }

    /// Starts a snapshot at `initiator` now: it records its state and sends its markers before
    /// this returns.
    pub fn start_snapshot(&mut self, initiator: ProcessId) -> Result<SnapshotId, Error> {
        self.check_process(initiator)?;
        self.failure()?;
        let id = self.net.ids[initiator].snapshot_id();
        self.with_host(initiator, |host, port| {
            if port.begin(id, initiator) {
                host.initiate(id, port);
            }
        });
        Ok(id)
    }

    /// Runs `f` on `process` now, as a callback: it can send and start snapshots.
    pub fn with_process<R>(
        &mut self,
        process: ProcessId,
        f: impl FnOnce(&mut P, &mut Context<'_, P::Message>) -> R,
    ) -> Result<R, Error> {
        self.check_process(process)?;
        if let Some(failure) = self.process_failure(process) {
            return Err(failure);
        }
        let mut result = None;
        self.with_host(process, |host, port| {
            host.callback(|app, ctx| result = Some(f(app, ctx)), port)
        });
        result.ok_or_else(|| self.process_failure(process).expect("it panicked"))
    }

    /// One step: delivers every message due now (channels in the schedule's order), runs the
    /// ticks due now, then advances the clock.
    pub fn step(&mut self) {
        let net = &mut self.net;
        while let Some(&Reverse((at, _, c))) = net.waiting.peek() {
            if at > net.now {
                break;
            }
            net.waiting.pop();
            net.due.push(c);
        }
        while let Some(c) = self.net.pick_due() {
            self.deliver(c);
        }
        if let Some(every) = self.net.tick_every {
            for p in 0..self.hosts.len() {
                if (self.net.now + self.net.phases[p]).is_multiple_of(every) {
                    self.with_host(p, |host, port| {
                        host.callback(|app, ctx| app.on_tick(ctx), port)
                    });
                }
            }
        }
        self.net.now += 1;
    }

    /// Delivers the item at the head of channel `c` (which must have one) to its receiver: the
    /// one delivery path of the simulator, used by [`step`](Simulation::step) and by the
    /// exhaustive checker alike.
    pub(super) fn deliver(&mut self, c: usize) {
        let item = self.net.lanes[c]
            .queue
            .pop_front()
            .expect("a channel is delivered from only when it has something in flight");
        // Its next item, if any, is due in its own time (the checker does not read this).
        self.net.schedule_lane(c);
        let channel = self.net.wiring.channels()[c];
        let (_, i) = self.net.wiring.local_slots(c);
        let to = channel.to;
        if self.net.collector.failure_of(to).is_some() {
            // Dropped, as the runtime leaves it undelivered in the dead thread's channel.
            return;
        }
        let (kind, seq, snapshot) = envelope_event(&item.envelope, false);
        if kind == TraceKind::Receive {
            self.net.deliveries += 1;
        }
        self.net.lamport[to] = self.net.lamport[to].max(item.lamport) + 1;
        if let (Some(known), Some(theirs)) = (self.net.known.as_mut(), &item.known) {
            for (mine, theirs) in known[to].iter_mut().zip(theirs) {
                *mine = (*mine).max(*theirs);
            }
        }
        self.net.note(
            kind,
            to,
            Some(channel),
            seq,
            snapshot,
            item.clock.as_deref(),
        );
        self.with_host(to, |host, port| host.on_envelope(i, item.envelope, port));
    }

    /// Runs `steps` steps.
    pub fn run_for(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step();
        }
    }

    /// Steps until `done` holds; fails with [`Error::Timeout`] after `max_steps`.
    pub fn run_until(
        &mut self,
        max_steps: u64,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<(), Error> {
        for _ in 0..max_steps {
            if done(self) {
                return Ok(());
            }
            self.step();
        }
        if done(self) {
            Ok(())
        } else {
            Err(Error::Timeout)
        }
    }

    /// Steps until every snapshot started so far has completed.
    ///
    /// Fails with [`Error::ProcessFailed`] if a process has panicked (then every running
    /// snapshot has failed: see [`failed_snapshots`](Simulation::failed_snapshots)).
    pub fn run_until_snapshots_complete(&mut self, max_steps: u64) -> Result<(), Error> {
        self.run_until(max_steps, |sim| sim.net.collector.pending() == 0)?;
        self.failure()
    }

    /// Steps until every snapshot has completed and nothing is in flight. Fails like
    /// [`run_until_snapshots_complete`](Simulation::run_until_snapshots_complete) after a
    /// process has panicked.
    pub fn run_until_quiet(&mut self, max_steps: u64) -> Result<(), Error> {
        self.run_until(max_steps, |sim| {
            sim.net.collector.pending() == 0 && sim.in_flight_count() == 0
        })?;
        self.failure()
    }

    /// Snapshots started and not yet complete.
    pub fn running_snapshots(&self) -> usize {
        self.net.collector.pending()
    }

    /// Completed snapshots, in the order they completed.
    pub fn snapshots(&self) -> &[Arc<GlobalSnapshot<P::Message, P::State>>] {
        &self.net.completed
    }

    /// Ids of every snapshot started so far, in the order they started.
    pub fn started(&self) -> &[SnapshotId] {
        &self.net.started
    }

    /// The completed snapshot `id`.
    pub fn completed_snapshot(
        &self,
        id: SnapshotId,
    ) -> Option<&Arc<GlobalSnapshot<P::Message, P::State>>> {
        self.net
            .completed_at
            .get(&id)
            .map(|&k| &self.net.completed[k])
    }

    /// Process `p` as it is now; [`Error::NoSuchProcess`] if there is no process `p`.
    pub fn process(&self, p: ProcessId) -> Result<&P, Error> {
        self.check_process(p)?;
        Ok(&self.hosts[p].app)
    }

    /// Every process, in id order.
    pub fn processes(&self) -> impl Iterator<Item = &P> + '_ {
        self.hosts.iter().map(|h| &h.app)
    }

    /// Application messages in flight, with their channels, in channel order.
    pub fn in_flight_messages(&self) -> impl Iterator<Item = (Channel, &P::Message)> + '_ {
        self.net
            .lanes
            .iter()
            .enumerate()
            .flat_map(move |(c, lane)| {
                let channel = self.net.wiring.channels()[c];
                lane.queue
                    .iter()
                    .filter_map(move |item| match &item.envelope {
                        Envelope::Message { message, .. } => Some((channel, message)),
                        Envelope::Marker(_) => None,
                    })
            })
    }

    /// The event trace so far (empty unless built with [`SimBuilder::trace`]).
    pub fn trace(&self) -> &[TraceEvent] {
        &self.net.trace
    }

    /// Writes the trace as JSON Lines: a header (the simulator keeps every event), then the
    /// events (see [`crate::trace`]).
    pub fn write_trace(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let header =
            crate::trace::TraceHeader::whole(crate::trace::Driver::Simulator, self.trace());
        crate::trace::write_lines(&header, &self.net.trace, out)
    }

    /// The processes, ending the run.
    pub fn into_processes(self) -> Vec<P> {
        self.hosts.into_iter().map(|h| h.app).collect()
    }
}

impl<P: Process> std::fmt::Debug for Simulation<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("seed", &self.net.seed)
            .field("now", &self.net.now)
            .field("processes", &self.hosts.len())
            .field("in_flight", &self.in_flight_count())
            .field("completed", &self.net.completed.len())
            .finish_non_exhaustive()
    }
}

// Stable-property detection (`detect.rs`) over a simulation: steps as milliseconds.
/// One simulated step counts as one millisecond.
fn steps(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl<P: Process> crate::detect::SnapshotSource for Simulation<P> {
    type Message = P::Message;
    type State = P::State;

    fn take_snapshot(
        &mut self,
        initiator: ProcessId,
        timeout: Duration,
    ) -> SnapshotOutcome<P::Message, P::State> {
        let id = self.start_snapshot(initiator)?;
        // A process that fails ends the snapshot (it can no longer complete): stop there and
        // say so, as the runtime does, rather than step out the whole timeout.
        let ended = |sim: &Self| sim.completed_snapshot(id).is_some() || sim.failure().is_err();
        self.run_until(steps(timeout), ended)?;
        match self.completed_snapshot(id) {
            Some(snapshot) => Ok(snapshot.clone()),
            // The run ended early, so a process failed (`Timeout` only if that changes).
            None => Err(self.failure().err().unwrap_or(Error::Timeout)),
        }
    }

    fn pause(&mut self, duration: Duration) {
        self.run_for(steps(duration));
    }

    fn clock(&self) -> Duration {
        Duration::from_millis(self.now())
    }
}
