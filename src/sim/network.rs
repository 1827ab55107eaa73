//! Everything of a simulation but the processes: the channels and what is in flight on them,
//! the clock and the seeded scheduler that picks which due delivery happens next, the collector,
//! and the trace.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::builder::Schedule;
use super::FailedSnapshot;
use crate::collector::Collector;
use crate::envelope::Envelope;
use crate::ids::SplitMix64 as Rng;
use crate::process::Process;
use crate::snapshot::{GlobalSnapshot, IdMap, SnapshotId};
use crate::topology::{Channel, ProcessId, Wiring};
use crate::trace::{TraceEvent, TraceKind};

/// Something sent and not yet delivered.
pub(super) struct InFlight<M> {
    pub(super) at: u64,
    pub(super) envelope: Envelope<M>,
    /// The sender's Lamport clock at the send.
    pub(super) lamport: u64,
    /// The sender's vector clock, when tracing.
    pub(super) clock: Option<Vec<u64>>,
    /// The sender's delivery bounds, when delivering causally.
    pub(super) known: Option<Vec<u64>>,
}

/// One channel: what is in flight on it, in FIFO order.
pub(super) struct Lane<M> {
    pub(super) queue: VecDeque<InFlight<M>>,
    /// Delivery time of the last message sent on it (a later one may not come earlier).
    pub(super) last_at: u64,
}

/// Everything but the processes: channels, clock, scheduler, collector.
pub(super) struct Network<P: Process> {
    pub(super) wiring: Arc<Wiring>,
    pub(super) seed: u64,
    /// The scheduler's generator: delays, and the order of deliveries due in the same step.
    pub(super) rng: Rng,
    /// By process: the generator of the ids of the snapshots it starts. One per process, so that
    /// an id depends on the seed and on how many snapshots that process started before, never on
    /// how the processes' events interleave (the exhaustive checker, `exhaustive.rs`, relies on
    /// it: it reorders events of different processes and expects the same ids).
    pub(super) ids: Vec<Rng>,
    pub(super) now: u64,
    pub(super) delay: (u64, u64),
    pub(super) schedule: Schedule,
    pub(super) tick_every: Option<u64>,
    pub(super) phases: Vec<u64>,
    /// By process, then local outgoing number: the channel's index.
    pub(super) outgoing: Vec<Vec<usize>>,
    pub(super) lanes: Vec<Lane<P::Message>>,
    /// Channels whose next item is due later: (due step, insertion order, channel).
    pub(super) waiting: BinaryHeap<Reverse<(u64, u64, usize)>>,
    /// Channels whose next item is due now.
    pub(super) due: Vec<usize>,
    pub(super) order: u64,
    pub(super) collector: Collector<P::Message, P::State>,
    /// Snapshot ids in the order they started.
    pub(super) started: Vec<SnapshotId>,
    /// Completed snapshots, in the order they completed.
    pub(super) completed: Vec<Arc<GlobalSnapshot<P::Message, P::State>>>,
    /// By id: where a completed snapshot is in `completed` (a lookup must not scan them all).
    pub(super) completed_at: IdMap<usize>,
    pub(super) deliveries: u64,
    /// By process: the step at which it recorded its state, for each snapshot whose part there
    /// is not complete.
    pub(super) recorded_at: Vec<IdMap<u64>>,
    /// Snapshots that failed, in the order they failed.
    pub(super) failed_snapshots: Vec<FailedSnapshot>,
    /// By process: its vector clock, when tracing.
    pub(super) clocks: Option<Vec<Vec<u64>>>,
    pub(super) trace: Vec<TraceEvent>,
    /// By process: its Lamport clock (sends are numbered by it; it orders same-step deliveries
    /// to one process when delivering causally).
    pub(super) lamport: Vec<u64>,
    /// When delivering causally, by process and destination: the latest delivery step of any
    /// message to that destination in the process's causal past. A message may not be due
    /// before it.
    pub(super) known: Option<Vec<Vec<u64>>>,
}

impl<P: Process> Network<P> {
    pub(super) fn time(&self) -> Duration {
        Duration::from_millis(self.now)
    }

    /// Puts channel `c` in `due` or `waiting`, by when its next item is due.
    pub(super) fn schedule_lane(&mut self, c: usize) {
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
    pub(super) fn put_off(&self, c: usize) -> bool {
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
    pub(super) fn pick_due(&mut self) -> Option<usize> {
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
    pub(super) fn causally_first(&self, k: usize) -> usize {
        let channels = self.wiring.channels();
        let to = channels[self.due[k]].to;
        let lamport = |k: usize| self.lanes[self.due[k]].queue.front().map(|i| i.lamport);
        (0..self.due.len())
            .filter(|&j| channels[self.due[j]].to == to)
            .min_by_key(|&j| lamport(j))
            .unwrap_or(k)
    }

    /// The delay of an item sent now on channel `c`.
    pub(super) fn delay_for(&mut self, c: usize, marker: bool) -> u64 {
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
    pub(super) fn push(&mut self, from: ProcessId, c: usize, envelope: Envelope<P::Message>) {
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
    pub(super) fn note(
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
