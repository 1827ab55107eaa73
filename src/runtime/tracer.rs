//! The runtime's trace, when asked for ([`RuntimeBuilder::trace`](crate::RuntimeBuilder::trace)):
//! each process thread appends its own events, in its own order, to its own buffer; the vector
//! clocks are computed when the trace is read (`trace::assemble`), so nothing travels with the
//! messages and the threads never wait for one another to trace.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use crate::snapshot::SnapshotId;
use crate::topology::{Channel, ProcessId, Wiring};
use crate::trace::{self, Trace, TraceEvent, TraceKind};

/// One process's buffer: its first `capacity` events, how many came after, and the snapshots
/// those were of (so that the trace can say which snapshots it holds only in part).
#[derive(Default)]
struct Log {
    events: Vec<TraceEvent>,
    dropped: u64,
    dropped_snapshots: BTreeSet<SnapshotId>,
}

/// Every process's trace buffer.
pub(crate) struct Tracer {
    epoch: Instant,
    capacity: usize,
    /// By process. A mutex each, taken only by its own thread except when the trace is read.
    logs: Box<[Mutex<Log>]>,
    wiring: Arc<Wiring>,
    /// By channel index: messages sent on it before the run (restored in flight), whose receipts
    /// have no send in the trace.
    sent_before: Vec<u64>,
}

impl Tracer {
    pub(crate) fn new(
        wiring: Arc<Wiring>,
        epoch: Instant,
        capacity: usize,
        sent_before: Vec<u64>,
    ) -> Self {
        Tracer {
            epoch,
            capacity,
            logs: (0..wiring.processes())
                .map(|_| Mutex::new(Log::default()))
                .collect(),
            wiring,
            sent_before,
        }
    }

    /// `process` did `kind` at `at`. Past the buffer's capacity the event is only counted:
    /// keeping each process's first events (not its last) is what lets the reader cut the
    /// trace to a consistent prefix.
    pub(crate) fn note(
        &self,
        process: ProcessId,
        kind: TraceKind,
        channel: Option<Channel>,
        seq: Option<u64>,
        snapshot: Option<SnapshotId>,
        at: Instant,
    ) {
        let mut log = self.logs[process].lock();
        if log.events.len() >= self.capacity {
            log.dropped += 1;
            if let Some(id) = snapshot {
                log.dropped_snapshots.insert(id);
            }
            return;
        }
        let step = at.saturating_duration_since(self.epoch).as_micros();
        log.events.push(TraceEvent {
            step: u64::try_from(step).unwrap_or(u64::MAX),
            kind,
            process,
            channel,
            seq,
            snapshot,
            clock: Vec::new(),
        });
    }

    /// The trace so far, with its clocks (see `trace::assemble`).
    pub(crate) fn read(&self) -> Trace {
        let mut dropped = 0;
        let mut dropped_snapshots = BTreeSet::new();
        let local = self
            .logs
            .iter()
            .map(|log| {
                let log = log.lock();
                dropped += log.dropped;
                dropped_snapshots.extend(log.dropped_snapshots.iter().copied());
                log.events.clone()
            })
            .collect();
        let channels = self.wiring.channels();
        trace::assemble(local, dropped, &dropped_snapshots, |channel, seq| {
            channels
                .iter()
                .position(|&c| c == channel)
                .is_some_and(|c| seq <= self.sent_before[c])
        })
    }
}
