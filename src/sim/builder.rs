//! Configuring a simulation, and starting it: fresh, or restored from a snapshot.

use std::collections::{BinaryHeap, VecDeque};
use std::marker::PhantomData;
use std::ops::RangeInclusive;
use std::sync::Arc;

use super::network::{Lane, Network};
use super::Simulation;
use crate::collector::Collector;
use crate::envelope::Envelope;
use crate::error::BuildError;
use crate::host::Host;
use crate::ids::SplitMix64 as Rng;
use crate::process::Process;
use crate::restore::{self, ChannelStart};
use crate::snapshot::{GlobalSnapshot, IdMap};
use crate::topology::{Channel, ProcessId, Topology, Wiring};

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
    pub(super) topology: Topology,
    pub(super) seed: u64,
    pub(super) delay: RangeInclusive<u64>,
    pub(super) schedule: Schedule,
    pub(super) tick_every: Option<u64>,
    pub(super) trace: bool,
    pub(super) causal: bool,
    pub(super) processes: PhantomData<fn() -> P>,
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
    /// [`RuntimeBuilder::restore`](crate::RuntimeBuilder::restore) does for the threaded runtime:
    /// the recorded in-flight messages are in their channels at step 0 (each with a fresh delay,
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

    pub(super) fn start(
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
        let mut seeds = Rng::new(!self.seed);
        let ids = (0..n).map(|_| Rng::new(seeds.next_u64())).collect();
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
                ids,
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
                recorded_at: (0..n).map(|_| IdMap::default()).collect(),
                failed_snapshots: Vec::new(),
            },
        };
        for (c, start) in starts.into_iter().flatten().enumerate() {
            let from = sim.net.wiring.channels()[c].from;
            for (seq, message) in start.in_flight {
                sim.net.push(from, c, Envelope::restored(seq, message));
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
