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
//! let snapshot = sim.snapshot(id).unwrap();
//! snapshot.verify()?;
//! assert_eq!(snapshot.total(|s| *s, |m| *m), 40);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod explore;
pub mod scenario;
mod trace;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::marker::PhantomData;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use crate::collector::Collector;
use crate::envelope::Envelope;
use crate::error::{BuildError, Error};
use crate::host::{Driver, Host};
use crate::ids::SplitMix64 as Rng;
use crate::process::{Context, Process};
use crate::restore::{self, ChannelStart};
use crate::snapshot::{GlobalSnapshot, IdMap, LocalSnapshot, SnapshotId, SnapshotOutcome};
use crate::topology::{Channel, ProcessId, Topology, Wiring};

pub use explore::{explore, ExploreFailure};
pub use trace::{TraceEvent, TraceKind};

/// Which deliveries the scheduler puts off, to push runs toward corner cases. FIFO per channel
/// always holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Schedule {
    /// Due messages are delivered in a seeded random order.
    #[default]
    Random,
    /// This channel is held back as long as possible: its messages take the longest delay, and
    /// in each step they go after every other channel's.
    HoldChannel(Channel),
    /// Markers are delivered as late as FIFO allows: they take the longest delay, and a channel
    /// whose next item is a marker goes after every channel whose next item is a message.
    LateMarkers,
}

/// Configures a [`Simulation`].
pub struct SimBuilder<P> {
    topology: Topology,
    seed: u64,
    delay: RangeInclusive<u64>,
    schedule: Schedule,
    tick_every: Option<u64>,
    trace: bool,
    causal: bool,
    processes: PhantomData<fn() -> P>,
}

impl<P: Process> SimBuilder<P> {
    /// The seed of every random choice (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Delivery delays, in steps (default `1..=5`). A delay of 0 delivers in the same step.
    pub fn delay(mut self, steps: RangeInclusive<u64>) -> Self {
        self.delay = steps;
        self
    }

    /// The schedule (default [`Schedule::Random`]).
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Calls [`Process::on_tick`] on every process every `steps` steps (not at all by default).
    pub fn tick_every(mut self, steps: u64) -> Self {
        self.tick_every = Some(steps.max(1));
        self
    }

    /// Delivers causally: a message is never delivered before another message to the same
    /// process that causally precedes it (was sent, or led to a send, before it), whatever the
    /// channels. Off by default: then only FIFO per channel holds, and a message can be overtaken
    /// by one that took a faster path, which is the race the snapshot algorithm must survive.
    /// With it on, a message sent before a snapshot starts at its sender always reaches its
    /// receiver before any marker of that snapshot does.
    pub fn causal(mut self, on: bool) -> Self {
        self.causal = on;
        self
    }

    /// Keeps the event trace (see [`Simulation::trace`]); off by default, as it costs a vector
    /// clock per message.
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Checks the topology and starts the processes (their `on_start` runs at step 0, in id
    /// order).
    pub fn build(
        self,
        processes: impl IntoIterator<Item = P>,
    ) -> Result<Simulation<P>, BuildError> {
        let wiring = Arc::new(self.topology.validate()?);
        let apps = restore::fresh(&wiring, processes)?;
        Ok(self.start(wiring, apps, None))
    }

    /// Starts again from a completed global snapshot, as
    /// [`Builder::restore`](crate::Builder::restore) does for the threaded runtime: the
    /// recorded in-flight messages are in their channels at step 0 (each with a fresh delay,
    /// in order), and every counter continues from the snapshot's.
    pub fn restore(
        self,
        snapshot: &GlobalSnapshot<P::Message, P::State>,
        rebuild: impl FnMut(ProcessId, &P::State) -> P,
    ) -> Result<Simulation<P>, BuildError> {
        let wiring = Arc::new(self.topology.validate()?);
        let (apps, starts) = restore::rebuild(&wiring, snapshot, rebuild)?;
        Ok(self.start(wiring, apps, Some(starts)))
    }

    fn start(
        self,
        wiring: Arc<Wiring>,
        apps: Vec<P>,
        starts: Option<Vec<ChannelStart<P::Message>>>,
    ) -> Simulation<P> {
        let n = wiring.processes();
        let (lo, hi) = (*self.delay.start(), *self.delay.end());
        let mut rng = Rng::new(self.seed);
        let phases = (0..n)
            .map(|_| self.tick_every.map_or(0, |k| rng.between(0, k - 1)))
            .collect();
        let outgoing = (0..n).map(|p| wiring.outgoing(p).to_vec()).collect();
        let hosts = apps
            .into_iter()
            .enumerate()
            .map(|(p, app)| Host::start(p, app, &wiring, starts.as_deref()))
            .collect();
        let mut sim = Simulation {
            hosts,
            net: Network {
                lanes: (0..wiring.channels().len())
                    .map(|_| Lane {
                        queue: VecDeque::new(),
                        last_at: 0,
                    })
                    .collect(),
                collector: Collector::new(wiring.clone()),
                clocks: self.trace.then(|| vec![vec![0; n]; n]),
                lamport: vec![0; n],
                known: self.causal.then(|| vec![vec![0; n]; n]),
                trace: Vec::new(),
                wiring,
                seed: self.seed,
                rng,
                now: 0,
                delay: (lo.min(hi), hi.max(lo)),
                schedule: self.schedule,
                tick_every: self.tick_every,
                phases,
                outgoing,
                waiting: BinaryHeap::new(),
                due: Vec::new(),
                order: 0,
                started: Vec::new(),
                completed: Vec::new(),
                completed_at: IdMap::default(),
                deliveries: 0,
            },
        };
        for (c, start) in starts.into_iter().flatten().enumerate() {
            let from = sim.net.wiring.channels()[c].from;
            for (seq, message) in start.in_flight {
                sim.net.push(from, c, Envelope::Message { seq, message });
            }
        }
        for p in 0..n {
            sim.with_host(p, |host, port| {
                host.callback(|app, ctx| app.on_start(ctx), port)
            });
        }
        sim
    }
}

/// Something sent and not yet delivered.
struct InFlight<M> {
    at: u64,
    envelope: Envelope<M>,
    /// The sender's Lamport clock at the send.
    lamport: u64,
    /// The sender's vector clock, when tracing.
    clock: Option<Vec<u64>>,
    /// The sender's delivery bounds, when delivering causally.
    known: Option<Vec<u64>>,
}

/// One channel: what is in flight on it, in FIFO order.
struct Lane<M> {
    queue: VecDeque<InFlight<M>>,
    /// Delivery time of the last message sent on it (a later one may not come earlier).
    last_at: u64,
}

/// Everything but the processes: channels, clock, scheduler, collector.
struct Network<P: Process> {
    wiring: Arc<Wiring>,
    seed: u64,
    rng: Rng,
    now: u64,
    delay: (u64, u64),
    schedule: Schedule,
    tick_every: Option<u64>,
    phases: Vec<u64>,
    /// By process, then local outgoing number: the channel's index.
    outgoing: Vec<Vec<usize>>,
    lanes: Vec<Lane<P::Message>>,
    /// Channels whose next item is due later: (due step, insertion order, channel).
    waiting: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Channels whose next item is due now.
    due: Vec<usize>,
    order: u64,
    collector: Collector<P::Message, P::State>,
    /// Snapshot ids in the order they started.
    started: Vec<SnapshotId>,
    /// Completed snapshots, in the order they completed.
    completed: Vec<Arc<GlobalSnapshot<P::Message, P::State>>>,
    /// By id: where a completed snapshot is in `completed` (a lookup must not scan them all).
    completed_at: IdMap<usize>,
    deliveries: u64,
    /// By process: its vector clock, when tracing.
    clocks: Option<Vec<Vec<u64>>>,
    trace: Vec<TraceEvent>,
    /// By process: its Lamport clock (sends are numbered by it; it orders same-step deliveries
    /// to one process when delivering causally).
    lamport: Vec<u64>,
    /// When delivering causally, by process and destination: the latest delivery step of any
    /// message to that destination in the process's causal past. A message may not be due
    /// before it.
    known: Option<Vec<Vec<u64>>>,
}

impl<P: Process> Network<P> {
    fn time(&self) -> Duration {
        Duration::from_millis(self.now)
    }

    /// Puts channel `c` in `due` or `waiting`, by when its next item is due.
    fn schedule_lane(&mut self, c: usize) {
        if let Some(head) = self.lanes[c].queue.front() {
            if head.at <= self.now {
                self.due.push(c);
            } else {
                self.order += 1;
                self.waiting.push(Reverse((head.at, self.order, c)));
            }
        }
    }

    /// Whether the scheduler puts channel `c`'s next item off (see [`Schedule`]).
    fn put_off(&self, c: usize) -> bool {
        match self.schedule {
            Schedule::Random => false,
            Schedule::HoldChannel(held) => self.wiring.channels()[c] == held,
            Schedule::LateMarkers => matches!(
                self.lanes[c].queue.front(),
                Some(InFlight {
                    envelope: Envelope::Marker(_),
                    ..
                })
            ),
        }
    }

    /// Takes the next due channel, as the schedule says.
    fn pick_due(&mut self) -> Option<usize> {
        if self.due.is_empty() {
            return None;
        }
        let k = if self.schedule == Schedule::Random {
            self.rng.below(self.due.len())
        } else {
            let eligible: Vec<usize> = (0..self.due.len())
                .filter(|&k| !self.put_off(self.due[k]))
                .collect();
            if eligible.is_empty() {
                self.rng.below(self.due.len())
            } else {
                eligible[self.rng.below(eligible.len())]
            }
        };
        let k = if self.known.is_some() {
            self.causally_first(k)
        } else {
            k
        };
        Some(self.due.swap_remove(k))
    }

    /// Among the due channels into the same process as `due[k]`, the one whose next item was
    /// sent first (lowest Lamport time): a causally earlier message comes first in its step.
    fn causally_first(&self, k: usize) -> usize {
        let channels = self.wiring.channels();
        let to = channels[self.due[k]].to;
        let lamport = |k: usize| self.lanes[self.due[k]].queue.front().map(|i| i.lamport);
        (0..self.due.len())
            .filter(|&j| channels[self.due[j]].to == to)
            .min_by_key(|&j| lamport(j))
            .unwrap_or(k)
    }

    /// The delay of an item sent now on channel `c`.
    fn delay_for(&mut self, c: usize, marker: bool) -> u64 {
        let longest = match self.schedule {
            Schedule::HoldChannel(held) => self.wiring.channels()[c] == held,
            Schedule::LateMarkers => marker,
            Schedule::Random => false,
        };
        if longest {
            self.delay.1
        } else {
            self.rng.between(self.delay.0, self.delay.1)
        }
    }

    /// Puts an envelope on channel `c` (sent by `from`).
    fn push(&mut self, from: ProcessId, c: usize, envelope: Envelope<P::Message>) {
        let marker = matches!(envelope, Envelope::Marker(_));
        let to = self.wiring.channels()[c].to;
        let mut at = (self.now + self.delay_for(c, marker)).max(self.lanes[c].last_at);
        let known = self.known.as_mut().map(|known| {
            let mine = &mut known[from];
            at = at.max(mine[to]);
            mine[to] = at;
            mine.clone()
        });
        self.lamport[from] += 1;
        let lamport = self.lamport[from];
        let clock = self.clocks.as_ref().map(|clocks| clocks[from].clone());
        let lane = &mut self.lanes[c];
        lane.last_at = at;
        let first = lane.queue.is_empty();
        lane.queue.push_back(InFlight {
            at,
            envelope,
            lamport,
            clock,
            known,
        });
        if first {
            self.schedule_lane(c);
        }
    }

    /// Records a trace event at `process`, ticking its vector clock (after merging `received`).
    fn note(
        &mut self,
        kind: TraceKind,
        process: ProcessId,
        channel: Option<Channel>,
        seq: Option<u64>,
        snapshot: Option<SnapshotId>,
        received: Option<&[u64]>,
    ) {
        let Some(clocks) = self.clocks.as_mut() else {
            return;
        };
        let clock = &mut clocks[process];
        if let Some(other) = received {
            for (mine, theirs) in clock.iter_mut().zip(other) {
                *mine = (*mine).max(*theirs);
            }
        }
        // A marker goes out in the same turn as its `record` and shares its clock, so that
        // the `record` events of a snapshot are its cut, exactly.
        if kind != TraceKind::MarkerSend {
            clock[process] += 1;
        }
        self.trace.push(TraceEvent {
            step: self.now,
            kind,
            process,
            channel,
            seq,
            snapshot,
            clock: clock.clone(),
        });
    }
}

/// The simulator as one host's [`Driver`].
struct Port<'a, P: Process> {
    net: &'a mut Network<P>,
    me: ProcessId,
}

impl<P: Process> Driver<P> for Port<'_, P> {
    fn push(
        &mut self,
        slot: usize,
        envelope: Envelope<P::Message>,
    ) -> Result<(), Envelope<P::Message>> {
        let c = self.net.outgoing[self.me][slot];
        let channel = self.net.wiring.channels()[c];
        let (kind, seq, snapshot) = match &envelope {
            Envelope::Message { seq, .. } => (TraceKind::Send, Some(*seq), None),
            Envelope::Marker(id) => (TraceKind::MarkerSend, None, Some(*id)),
        };
        self.net
            .note(kind, self.me, Some(channel), seq, snapshot, None);
        self.net.push(self.me, c, envelope);
        Ok(())
    }

    fn recorded(&mut self, id: SnapshotId) {
        // Markers go out in the turn the state is recorded: that is the `record` event.
        self.net
            .note(TraceKind::Record, self.me, None, None, Some(id), None);
    }

    fn new_snapshot_id(&mut self) -> SnapshotId {
        self.net.rng.snapshot_id()
    }

    fn begin(&mut self, id: SnapshotId, initiator: ProcessId) -> bool {
        let now = self.net.time();
        let begun = self.net.collector.begin(id, initiator, now).is_ok();
        if begun {
            self.net.started.push(id);
        }
        begun
    }

    fn snapshots_live(&self) -> bool {
        true
    }

    fn part_complete(&mut self, part: LocalSnapshot<P::Message, P::State>) {
        let now = self.net.time();
        let global = self
            .net
            .collector
            .add(part, now)
            .unwrap_or_else(|e| panic!("process {}: {e}", self.me));
        if let Some(global) = global {
            let id = global.id;
            self.net
                .note(TraceKind::Complete, self.me, None, None, Some(id), None);
            self.net.completed_at.insert(id, self.net.completed.len());
            self.net.completed.push(Arc::new(global));
        }
    }
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

    fn with_host<R>(
        &mut self,
        p: ProcessId,
        f: impl FnOnce(&mut Host<P>, &mut Port<'_, P>) -> R,
    ) -> R {
        let mut port = Port {
            net: &mut self.net,
            me: p,
        };
        f(&mut self.hosts[p], &mut port)
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
    pub fn in_flight(&self) -> usize {
        self.net.lanes.iter().map(|l| l.queue.len()).sum()
    }

    /// Starts a snapshot at `initiator` now: it records its state and sends its markers before
    /// this returns.
    pub fn start_snapshot(&mut self, initiator: ProcessId) -> Result<SnapshotId, Error> {
        self.check_process(initiator)?;
        let id = self.net.rng.snapshot_id();
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
        let mut result = None;
        self.with_host(process, |host, port| {
            host.callback(|app, ctx| result = Some(f(app, ctx)), port)
        });
        Ok(result.expect("the callback ran"))
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
            let item = self.net.lanes[c]
                .queue
                .pop_front()
                .expect("due lanes are not empty");
            self.net.schedule_lane(c);
            let channel = self.net.wiring.channels()[c];
            let (_, i) = self.net.wiring.local_slots(c);
            let to = channel.to;
            let (kind, seq, snapshot) = match &item.envelope {
                Envelope::Message { seq, .. } => (TraceKind::Receive, Some(*seq), None),
                Envelope::Marker(id) => (TraceKind::MarkerReceive, None, Some(*id)),
            };
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
    pub fn run_until_snapshots_complete(&mut self, max_steps: u64) -> Result<(), Error> {
        self.run_until(max_steps, |sim| sim.net.collector.pending() == 0)
    }

    /// Steps until every snapshot has completed and nothing is in flight.
    pub fn run_until_quiet(&mut self, max_steps: u64) -> Result<(), Error> {
        self.run_until(max_steps, |sim| {
            sim.net.collector.pending() == 0 && sim.in_flight() == 0
        })
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
    pub fn snapshot(&self, id: SnapshotId) -> Option<&Arc<GlobalSnapshot<P::Message, P::State>>> {
        self.net
            .completed_at
            .get(&id)
            .map(|&k| &self.net.completed[k])
    }

    /// Process `p` as it is now.
    pub fn process(&self, p: ProcessId) -> &P {
        &self.hosts[p].app
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

    /// Writes the trace as JSON Lines (see [`TraceEvent`]).
    pub fn write_trace(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for event in &self.net.trace {
            writeln!(out, "{event}")?;
        }
        Ok(())
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
            .field("in_flight", &self.in_flight())
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
        self.run_until(steps(timeout), |sim| sim.snapshot(id).is_some())?;
        Ok(self.snapshot(id).expect("completed").clone())
    }

    fn pause(&mut self, duration: Duration) {
        self.run_for(steps(duration));
    }

    fn clock(&self) -> Duration {
        Duration::from_millis(self.now())
    }
}
