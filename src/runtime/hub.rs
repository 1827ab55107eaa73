//! Where local parts meet: the [`Collector`] behind a lock, plus whoever waits for a snapshot
//! (tickets, subscribers). Touched once per snapshot per process, never per message.
//!
//! A `parking_lot::Mutex` is enough: the critical sections are short (insert a part, maybe
//! assemble) and contention is bounded by the number of processes finishing the same snapshot.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::collector::Collector;
use crate::error::{CollectError, Error};
use crate::snapshot::{IdMap, LocalSnapshot, SnapshotId, SnapshotOutcome};
use crate::topology::{ProcessId, Wiring};

/// A snapshot's end, as delivered to subscribers.
#[derive(Debug)]
pub struct SnapshotEvent<M, S> {
    /// The snapshot.
    pub id: SnapshotId,
    /// The process that started it.
    pub initiator: ProcessId,
    /// The global snapshot, or why it could not complete.
    pub outcome: SnapshotOutcome<M, S>,
}

// Manual impl: the snapshot is shared, so neither `M` nor `S` needs `Clone`.
impl<M, S> Clone for SnapshotEvent<M, S> {
    fn clone(&self) -> Self {
        SnapshotEvent {
            id: self.id,
            initiator: self.initiator,
            outcome: self.outcome.clone(),
        }
    }
}

/// Where one waiter's outcome lands.
struct Slot<M, S> {
    outcome: Mutex<Option<SnapshotOutcome<M, S>>>,
    filled: Condvar,
}

impl<M, S> Slot<M, S> {
    fn new() -> Arc<Self> {
        Arc::new(Slot {
            outcome: Mutex::new(None),
            filled: Condvar::new(),
        })
    }

    fn fill(&self, outcome: SnapshotOutcome<M, S>) {
        *self.outcome.lock() = Some(outcome);
        self.filled.notify_all();
    }

    fn wait(&self, deadline: Option<Instant>) -> SnapshotOutcome<M, S> {
        let mut outcome = self.outcome.lock();
        loop {
            if let Some(o) = outcome.as_ref() {
                return o.clone();
            }
            match deadline {
                None => self.filled.wait(&mut outcome),
                Some(d) => {
                    if self.filled.wait_until(&mut outcome, d).timed_out() && outcome.is_none() {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }
}

/// A snapshot that has been started: wait for it (with or without a timeout) or poll it.
///
/// Dropping the ticket does not cancel the snapshot; its outcome still reaches subscribers.
pub struct PendingSnapshot<M, S> {
    id: SnapshotId,
    initiator: ProcessId,
    slot: Arc<Slot<M, S>>,
    /// Refuses blocking waits on the runtime's own threads.
    guard: super::ThreadGuard,
}

impl<M, S> PendingSnapshot<M, S> {
    /// The snapshot's id.
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    /// The process that started it.
    pub fn initiator(&self) -> ProcessId {
        self.initiator
    }

    /// Blocks until the snapshot completes or fails.
    ///
    /// Fails with [`Error::WouldDeadlock`] on one of the runtime's own process threads, which
    /// must keep serving markers for the snapshot to complete.
    pub fn wait(&self) -> SnapshotOutcome<M, S> {
        self.guard.check()?;
        self.slot.wait(None)
    }

    /// Like [`wait`](PendingSnapshot::wait), giving up with [`Error::Timeout`] after `timeout`
    /// (the snapshot goes on; wait again to get it).
    pub fn wait_timeout(&self, timeout: Duration) -> SnapshotOutcome<M, S> {
        self.guard.check()?;
        self.slot.wait(Some(Instant::now() + timeout))
    }

    /// The outcome if the snapshot has ended, without blocking.
    pub fn try_get(&self) -> Option<SnapshotOutcome<M, S>> {
        self.slot.outcome.lock().clone()
    }
}

impl<M, S> std::fmt::Debug for PendingSnapshot<M, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSnapshot")
            .field("id", &self.id)
            .field("initiator", &self.initiator)
            .finish_non_exhaustive()
    }
}

struct HubState<M, S> {
    collector: Collector<M, S>,
    waiters: IdMap<Vec<Arc<Slot<M, S>>>>,
    subscribers: Vec<Sender<SnapshotEvent<M, S>>>,
    /// Shut down: no new snapshot; parts of abandoned ones are dropped.
    closed: bool,
}

impl<M, S> HubState<M, S> {
    /// Delivers the end of snapshot `id` to its waiters and every subscriber.
    fn finish(&mut self, id: SnapshotId, initiator: ProcessId, outcome: SnapshotOutcome<M, S>) {
        for slot in self.waiters.remove(&id).unwrap_or_default() {
            slot.fill(outcome.clone());
        }
        if !self.subscribers.is_empty() {
            let event = SnapshotEvent {
                id,
                initiator,
                outcome,
            };
            self.subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
    }
}

/// The collector and everyone waiting on it.
pub(crate) struct Hub<M, S> {
    state: Mutex<HubState<M, S>>,
    epoch: Instant,
    /// Snapshots in flight (begun, not yet ended) beyond which `begin` refuses.
    max_in_flight: usize,
}

impl<M, S> Hub<M, S> {
    pub(crate) fn new(wiring: Arc<Wiring>, epoch: Instant, max_in_flight: usize) -> Self {
        Hub {
            state: Mutex::new(HubState {
                collector: Collector::new(wiring),
                waiters: IdMap::default(),
                subscribers: Vec::new(),
                closed: false,
            }),
            epoch,
            max_in_flight,
        }
    }

    /// The most snapshots in flight `begin` accepts.
    pub(crate) fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Time since the runtime started.
    pub(crate) fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// `at`, as time since the runtime started.
    pub(crate) fn since_start(&self, at: std::time::Instant) -> Duration {
        at.saturating_duration_since(self.epoch)
    }

    /// Registers snapshot `id` started by `initiator`, before its first marker can exist.
    /// With `ticket`, also returns a ticket to wait on.
    ///
    /// Refused once the runtime is shut down or a process has failed (a snapshot needs every
    /// process), and while `max_in_flight` snapshots are in flight (the others are not
    /// disturbed). A refused snapshot started by application code is reported to subscribers.
    pub(crate) fn begin(
        &self,
        id: SnapshotId,
        initiator: ProcessId,
        guard: Option<super::ThreadGuard>,
    ) -> Result<Option<PendingSnapshot<M, S>>, Error> {
        let mut state = self.state.lock();
        // After a failure nothing is pending, so the limit cannot hide it; the collector says
        // whether a failure refuses the start.
        let refusal = if state.closed {
            Some(Error::Shutdown)
        } else if state.collector.pending() >= self.max_in_flight {
            Some(Error::TooManySnapshots {
                limit: self.max_in_flight,
            })
        } else {
            match state.collector.begin(id, initiator, self.now()) {
                Ok(()) => None,
                Err(CollectError::Failed(failure)) => Some(failure),
                Err(e) => panic!("process {initiator}: {e}"),
            }
        };
        if let Some(error) = refusal {
            if guard.is_none() {
                state.finish(id, initiator, Err(error.clone()));
            }
            return Err(error);
        }
        log::debug!("process {initiator}: snapshot {id} started");
        Ok(guard.map(|guard| {
            let slot = Slot::new();
            state.waiters.entry(id).or_default().push(slot.clone());
            PendingSnapshot {
                id,
                initiator,
                slot,
                guard,
            }
        }))
    }

    /// A ticket for snapshot `id`, if it is still running.
    pub(crate) fn watch(
        &self,
        id: SnapshotId,
        guard: super::ThreadGuard,
    ) -> Result<PendingSnapshot<M, S>, Error> {
        let mut state = self.state.lock();
        if !state.collector.is_pending(id) {
            return Err(Error::UnknownSnapshot(id));
        }
        let initiator = state.collector.initiator(id).expect("pending");
        let slot = Slot::new();
        state.waiters.entry(id).or_default().push(slot.clone());
        Ok(PendingSnapshot {
            id,
            initiator,
            slot,
            guard,
        })
    }

    /// Withdraws a snapshot that was begun but could not be started at its initiator.
    pub(crate) fn withdraw(&self, id: SnapshotId, error: Error) {
        let mut state = self.state.lock();
        if let Some(initiator) = state.collector.abandon(id) {
            state.finish(id, initiator, Err(error));
        }
    }

    /// A process hands in its part.
    /// Returns whether this part completed its snapshot.
    pub(crate) fn submit(&self, part: LocalSnapshot<M, S>, recorded_at: Duration) -> bool {
        let process = part.process;
        let mut state = self.state.lock();
        match state.collector.add(part, recorded_at, self.now()) {
            Ok(None) => false,
            Ok(Some(global)) => {
                let (id, initiator) = (global.id, global.initiator);
                log::debug!(
                    "process {process}: snapshot {id} complete (initiator {initiator}, {:?})",
                    global.latency()
                );
                state.finish(id, initiator, Ok(Arc::new(global)));
                true
            }
            // The snapshot was abandoned (shutdown, or a process failed) while this part was on
            // its way.
            Err(CollectError::UnknownSnapshot(_))
                if state.closed || state.collector.failure().is_some() =>
            {
                false
            }
            Err(e) => panic!("process {process}: {e}"),
        }
    }

    /// `process` has panicked: every running snapshot fails (a simple rule that never leaves
    /// a snapshot half-alive), and no new one starts.
    pub(crate) fn fail_process(&self, process: ProcessId, message: String) {
        let mut state = self.state.lock();
        let Some(abandoned) = state.collector.fail(process, message.clone()) else {
            return;
        };
        log::error!("process {process} panicked: {message}");
        let error = Error::ProcessFailed { process, message };
        for (id, initiator) in abandoned {
            log::debug!("process {process}: snapshot {id} failed: {error}");
            state.finish(id, initiator, Err(error.clone()));
        }
    }

    /// The failure of `process`, if it has failed.
    pub(crate) fn failure(&self, process: ProcessId) -> Option<String> {
        self.state
            .lock()
            .collector
            .failure_of(process)
            .map(str::to_string)
    }

    /// Every failed process and its panic message.
    pub(crate) fn failures(&self) -> Vec<(ProcessId, String)> {
        self.state.lock().collector.failures()
    }

    /// Shutdown: fails every running snapshot with [`Error::Shutdown`], refuses new ones, and
    /// disconnects subscribers.
    pub(crate) fn close(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        for (id, initiator) in state.collector.abandon_all() {
            state.finish(id, initiator, Err(Error::Shutdown));
        }
        state.subscribers.clear();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    pub(crate) fn subscribe(&self) -> Receiver<SnapshotEvent<M, S>> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut state = self.state.lock();
        if !state.closed {
            state.subscribers.push(tx);
        }
        rx
    }

    /// (snapshots waiting for parts, snapshots with waiters).
    pub(crate) fn pending(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.collector.pending(), state.waiters.len())
    }
}
