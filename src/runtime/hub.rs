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
        self.slot
            .wait(Some(crate::deadline::deadline_after(timeout)))
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

/// What a cluster node's hub does for snapshots that cross nodes (`cluster/`); a runtime in one
/// process has none. Called with the hub's lock held, so it only queues work for the links.
pub(crate) trait Uplink<M, S>: Send + Sync {
    /// A part of a snapshot whose initiator runs on another node: send it there, with how long
    /// before now its process recorded its state (`recorded_before`: a difference of two times
    /// on this node's clock, which the receiver puts on its own, `Hub::submit_remote`).
    fn part(&self, initiator: ProcessId, part: LocalSnapshot<M, S>, recorded_before: Duration);
    /// A snapshot another node asked for has ended here: tell that node.
    fn outcome(&self, node: usize, event: &SnapshotEvent<M, S>);
    /// A process run here has failed: tell the other nodes.
    fn failed(&self, process: ProcessId, message: &str);
}

/// A snapshot started on another node that this node's processes take part in: where their
/// parts go.
struct Route {
    initiator: ProcessId,
    /// This node's processes that have still to hand in their part.
    parts_left: usize,
    /// The channels from other nodes that have brought this snapshot's marker here.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    marked: Marked,
}

/// Which channels from other nodes have brought a snapshot's marker to this node, by the
/// channel's number among those into this node (`Hub::learn_route`): an honest node sends one
/// marker of a snapshot on a channel, so a second is a replay. Kept while the snapshot is open
/// here (routed, or assembled here), since a process whose part is done forgets the snapshot
/// and would take a replayed marker for a first one (recording again, marking again, handing
/// in a second part: the honest processes and nodes would be blamed for it). One bit a
/// channel, grown as markers come.
#[derive(Default)]
#[cfg_attr(not(feature = "cluster"), allow(dead_code))]
struct Marked(Vec<u64>);

#[cfg(feature = "cluster")]
impl Marked {
    /// Notes a marker on each of `channels`, in order; refused at the first that brought one
    /// before, naming its place in `channels` (those noted until then stay noted: the link
    /// that brought them fails).
    fn note_all(&mut self, channels: &[usize]) -> Result<(), MarkerRefused> {
        for (at, &k) in channels.iter().enumerate() {
            let (word, bit) = (k / 64, 1u64 << (k % 64));
            if self.0.len() <= word {
                self.0.resize(word + 1, 0);
            }
            if self.0[word] & bit != 0 {
                return Err(MarkerRefused::Again(at));
            }
            self.0[word] |= bit;
        }
        Ok(())
    }
}

/// Why a marker from another node is refused (`Hub::learn_route`).
#[cfg(feature = "cluster")]
#[derive(Debug)]
pub(crate) enum MarkerRefused {
    /// What the collector or the windows of ended snapshots say of it.
    Snapshot(CollectError),
    /// The channel at this place among those given brought this snapshot's marker before.
    Again(usize),
}

struct HubState<M, S> {
    collector: Collector<M, S>,
    waiters: IdMap<Vec<Arc<Slot<M, S>>>>,
    subscribers: Vec<Sender<SnapshotEvent<M, S>>>,
    /// Shut down: no new snapshot; parts of abandoned ones are dropped.
    closed: bool,
    /// A cluster node's links; `None` in process, and then the three maps below stay empty.
    uplink: Option<Arc<dyn Uplink<M, S>>>,
    /// Snapshots started elsewhere whose parts this node's processes send to their initiator.
    routes: IdMap<Route>,
    /// Snapshots assembled here (pending in the collector) whose markers came from other
    /// nodes: on which channels (`Marked`); dropped when the snapshot ends.
    marked_here: IdMap<Marked>,
    /// The last of those whose every part here is done: no honest marker of one can still
    /// come (each process here had every marker before its part was done), so one that does is
    /// another node replaying it (`learn_route`).
    finished_routes: Recent<()>,
    /// Snapshots asked for here whose initiator runs on another node: the initiator, and when
    /// they were asked for (a snapshot's times on the node that asked are its own clock's).
    asked_here: IdMap<(ProcessId, Duration)>,
    /// Snapshots assembled on another node that this node's handle only watches (it did not
    /// start them, so they do not count against its limit): as `asked_here`.
    watching: IdMap<(ProcessId, Duration)>,
    /// Snapshots assembled here that other nodes asked for or watch: the nodes to send the
    /// outcome to, each once.
    askers: IdMap<Vec<usize>>,
    /// Those of them started for another node's handle (`begin_for`): not started here.
    begun_for: IdMap<()>,
    /// The last snapshots assembled here that failed while their markers and parts may still
    /// be on their way (a node could not send a part: `withdraw`), with their initiator: what
    /// still comes of them is dropped, not taken for a peer's error, and this node's markers of
    /// them still carry the initiator (the other nodes finish their parts and forget them).
    withdrawn: Recent<ProcessId>,
    /// The last snapshots that ended on this node (a cluster node's), with their initiator: a
    /// `Start` from another node that names one of them is a replay (an honest node picks a
    /// fresh random id), and a late outcome of one must still come from its initiator's node.
    ended: Recent<ProcessId>,
}

/// How many ids a cluster node remembers in each of `HubState`'s windows of ended snapshots
/// (`Recent`): a frame about an older one is not told apart. (In process there are none.)
const FINISHED_KEPT: usize = 4096;

/// The last `FINISHED_KEPT` snapshot ids remembered, each with a value; the oldest is forgotten
/// first.
struct Recent<V> {
    order: std::collections::VecDeque<SnapshotId>,
    values: IdMap<V>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Recent {
            order: Default::default(),
            values: IdMap::default(),
        }
    }
}

impl<V> Recent<V> {
    /// Remembers `id` with `value` (a second time: the new value, its place kept).
    fn remember(&mut self, id: SnapshotId, value: V) {
        if let Some(old) = self.values.get_mut(&id) {
            *old = value;
            return;
        }
        if self.order.len() == FINISHED_KEPT {
            if let Some(oldest) = self.order.pop_front() {
                self.values.remove(&oldest);
            }
        }
        self.order.push_back(id);
        self.values.insert(id, value);
    }

    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    fn get(&self, id: &SnapshotId) -> Option<&V> {
        self.values.get(id)
    }

    fn contains(&self, id: &SnapshotId) -> bool {
        self.values.contains_key(id)
    }
}

impl<M, S> HubState<M, S> {
    /// Every part of routed snapshot `id` is done here.
    fn route_finished(&mut self, id: SnapshotId) {
        self.finished_routes.remember(id, ());
    }

    /// Delivers the end of snapshot `id` to its waiters, every subscriber, and the nodes that
    /// asked for it.
    fn finish(&mut self, id: SnapshotId, initiator: ProcessId, outcome: SnapshotOutcome<M, S>) {
        if self.uplink.is_some() {
            self.ended.remember(id, initiator);
            self.marked_here.remove(&id);
        }
        for slot in self.waiters.remove(&id).unwrap_or_default() {
            slot.fill(outcome.clone());
        }
        let askers = match self.askers.is_empty() {
            true => None,
            false => {
                self.begun_for.remove(&id);
                self.askers.remove(&id)
            }
        };
        if !self.subscribers.is_empty() || askers.is_some() {
            let event = SnapshotEvent {
                id,
                initiator,
                outcome,
            };
            if let (Some(nodes), Some(uplink)) = (askers, &self.uplink) {
                for node in nodes {
                    uplink.outcome(node, &event);
                }
            }
            self.subscribers.retain(|s| s.send(event.clone()).is_ok());
        }
    }

    /// After a failure: the snapshots asked for here and assembled elsewhere fail with
    /// `error` too, and no part is relayed any more.
    fn fail_asked(&mut self, error: &Error) {
        self.routes.clear();
        self.end_waits_elsewhere(error);
    }

    /// Every snapshot this node waits for from another node ends with `error`.
    fn end_waits_elsewhere(&mut self, error: &Error) {
        let asked: Vec<_> = self
            .asked_here
            .drain()
            .chain(self.watching.drain())
            .collect();
        for (id, (initiator, _)) in asked {
            self.finish(id, initiator, Err(error.clone()));
        }
    }

    /// A ticket for snapshot `id`: its outcome will be delivered to it by `finish`.
    fn ticket(
        &mut self,
        id: SnapshotId,
        initiator: ProcessId,
        guard: super::ThreadGuard,
    ) -> PendingSnapshot<M, S> {
        let slot = Slot::new();
        self.waiters.entry(id).or_default().push(slot.clone());
        PendingSnapshot {
            id,
            initiator,
            slot,
            guard,
        }
    }

    /// Snapshots in flight that were started from this node: by its handle (whichever the
    /// initiator) or by its processes; not those it assembles for another node's handle, nor
    /// those it only watches.
    fn started_here(&self) -> usize {
        self.collector
            .pending()
            .saturating_sub(self.begun_for.len())
            + self.asked_here.len()
    }
}

/// The collector and everyone waiting on it.
pub(crate) struct Hub<M, S> {
    state: Mutex<HubState<M, S>>,
    epoch: Instant,
    /// Snapshots in flight (begun, not yet ended) beyond which `begin` refuses.
    max_in_flight: usize,
    /// How many processes run on this node (all of them, in process).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    run_here: usize,
}

impl<M, S> Hub<M, S> {
    /// A hub for snapshots of `wiring`, `run_here` of whose processes run here (all of them,
    /// in process; a cluster node's own).
    pub(crate) fn new(
        wiring: Arc<Wiring>,
        epoch: Instant,
        max_in_flight: usize,
        run_here: usize,
    ) -> Self {
        Hub {
            state: Mutex::new(HubState {
                collector: Collector::new(wiring.clone()),
                waiters: IdMap::default(),
                subscribers: Vec::new(),
                closed: false,
                uplink: None,
                routes: IdMap::default(),
                marked_here: IdMap::default(),
                finished_routes: Default::default(),
                asked_here: IdMap::default(),
                watching: IdMap::default(),
                askers: IdMap::default(),
                begun_for: IdMap::default(),
                withdrawn: Default::default(),
                ended: Default::default(),
            }),
            epoch,
            max_in_flight,
            run_here,
        }
    }

    /// Makes this a cluster node's hub: `uplink` sends to the other nodes.
    #[cfg(feature = "cluster")]
    pub(crate) fn connect(&self, uplink: Arc<dyn Uplink<M, S>>) {
        self.state.lock().uplink = Some(uplink);
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
        } else if state.started_here() >= self.max_in_flight {
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
        Ok(guard.map(|guard| state.ticket(id, initiator, guard)))
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
        Ok(state.ticket(id, initiator, guard))
    }

    /// Withdraws a snapshot that was begun but could not be started at its initiator, or (on a
    /// cluster node) one of whose parts could not be sent here: it fails with `error` now, and
    /// what still comes of it is dropped (`HubState::withdrawn`).
    pub(crate) fn withdraw(&self, id: SnapshotId, error: Error) {
        let mut state = self.state.lock();
        if let Some(initiator) = state.collector.abandon(id) {
            if state.uplink.is_some() {
                state.withdrawn.remember(id, initiator);
            }
            state.finish(id, initiator, Err(error));
        }
    }

    /// A process hands in its part.
    /// Returns whether this part completed its snapshot.
    pub(crate) fn submit(&self, part: LocalSnapshot<M, S>, recorded_at: Duration) -> bool {
        let process = part.process;
        let mut state = self.state.lock();
        if !state.routes.is_empty() {
            if let Some(route) = state.routes.get_mut(&part.id) {
                // Started on another node: the part goes to its initiator's.
                let (id, initiator) = (part.id, route.initiator);
                route.parts_left -= 1;
                if route.parts_left == 0 {
                    state.routes.remove(&id);
                    state.route_finished(id);
                }
                if let Some(uplink) = &state.uplink {
                    uplink.part(initiator, part, self.now().saturating_sub(recorded_at));
                }
                return false;
            }
        }
        self.add(&mut state, part, recorded_at, process)
            .unwrap_or_else(|e| panic!("process {process}: {e}"))
    }

    /// A part sent by another node, of a snapshot assembled here, whose process recorded its
    /// state `recorded_before` before the part was sent. An error is the other node's: a part
    /// of a snapshot this node never started, or one that does not fit.
    ///
    /// Its record time is put on this node's clock: now, less `recorded_before`. Each node
    /// counts its times from its own start, so a time sent as it was (as this once was) was off
    /// by as much as the two nodes' starts were apart, before the snapshot began or after it
    /// ended (the bank printed states recorded 1 ms after a snapshot of 0.85 ms had completed).
    /// This way it is late by the part's time on its way, at most, and lies between the
    /// snapshot's start and its end.
    #[cfg(feature = "cluster")]
    pub(crate) fn submit_remote(
        &self,
        part: LocalSnapshot<M, S>,
        recorded_before: Duration,
    ) -> Result<bool, CollectError> {
        let process = part.process;
        let mut state = self.state.lock();
        let recorded_at = self.now().saturating_sub(recorded_before);
        self.add(&mut state, part, recorded_at, process)
    }

    /// Adds a part to the collector, delivering the snapshot if it was the last.
    fn add(
        &self,
        state: &mut HubState<M, S>,
        part: LocalSnapshot<M, S>,
        recorded_at: Duration,
        process: ProcessId,
    ) -> Result<bool, CollectError> {
        match state.collector.add(part, recorded_at, self.now()) {
            Ok(Some(global)) => {
                let (id, initiator) = (global.id, global.initiator);
                log::debug!(
                    "process {process}: snapshot {id} complete (initiator {initiator}, {:?})",
                    global.latency()
                );
                state.finish(id, initiator, Ok(Arc::new(global)));
                Ok(true)
            }
            Ok(None) => Ok(false),
            // The snapshot was abandoned (shutdown, or a process failed) while this part was on
            // its way.
            Err(CollectError::UnknownSnapshot(id))
                if state.closed
                    || state.collector.failure().is_some()
                    || state.withdrawn.contains(&id) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// The initiator of snapshot `id`, if this node knows the snapshot: assembled here, or
    /// started elsewhere with a part still to come from here. (A cluster node's driver puts it
    /// in each marker it sends to another node.)
    #[cfg(feature = "cluster")]
    pub(crate) fn initiator(&self, id: SnapshotId) -> Option<ProcessId> {
        let state = self.state.lock();
        state
            .collector
            .initiator(id)
            .or_else(|| state.routes.get(&id).map(|r| r.initiator))
            .or_else(|| state.withdrawn.get(&id).copied())
    }

    /// Markers of snapshot `id`, started by `initiator`, have come from another node on
    /// `channels` (their numbers among the channels into this node from others; a run of
    /// markers in one frame, noted under one lock): from now on this node's parts of it go to
    /// the initiator's node. Refused (the other node's error) if `initiator` runs here but the
    /// snapshot is not being assembled here, or if one of `channels` brought a marker of it
    /// before (`Marked`).
    #[cfg(feature = "cluster")]
    pub(crate) fn learn_route(
        &self,
        id: SnapshotId,
        initiator: ProcessId,
        initiator_here: bool,
        channels: &[usize],
    ) -> Result<(), MarkerRefused> {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        if let Some(route) = state.routes.get_mut(&id) {
            return route.marked.note_all(channels);
        }
        if state.collector.is_pending(id) {
            return state.marked_here.entry(id).or_default().note_all(channels);
        }
        if state.finished_routes.contains(&id) {
            // Would start it again here, and send its initiator's node parts it refuses,
            // blaming this node for another's replay.
            return Err(MarkerRefused::Snapshot(CollectError::DuplicateSnapshot(id)));
        }
        if initiator_here {
            // Started here, but over (or given up): a marker of it cannot still be on its way,
            // unless snapshots were all abandoned (a failure, a shutdown).
            if state.closed || state.collector.failure().is_some() || state.withdrawn.contains(&id)
            {
                return Ok(());
            }
            return Err(MarkerRefused::Snapshot(CollectError::UnknownSnapshot(id)));
        }
        if state.closed || state.collector.failure().is_some() {
            return Ok(());
        }
        let mut marked = Marked::default();
        marked.note_all(channels)?;
        state.routes.insert(
            id,
            Route {
                initiator,
                parts_left: self.run_here,
                marked,
            },
        );
        Ok(())
    }

    /// Registers snapshot `id` asked for here with `initiator` on another node, and returns a
    /// ticket for its outcome (which that node sends back). Refused as [`begin`](Hub::begin)
    /// refuses.
    #[cfg(feature = "cluster")]
    pub(crate) fn begin_elsewhere(
        &self,
        id: SnapshotId,
        initiator: ProcessId,
        guard: super::ThreadGuard,
    ) -> Result<PendingSnapshot<M, S>, Error> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(Error::Shutdown);
        }
        if state.started_here() >= self.max_in_flight {
            return Err(Error::TooManySnapshots {
                limit: self.max_in_flight,
            });
        }
        if let Some(failure) = state.collector.failure() {
            return Err(failure.clone());
        }
        Ok(self.wait_elsewhere(&mut state, id, initiator, guard, true))
    }

    /// A ticket here for snapshot `id`, whose outcome another node will send; `started`: this
    /// node asked for it (it counts against the limit), rather than only watching it.
    #[cfg(feature = "cluster")]
    fn wait_elsewhere(
        &self,
        state: &mut HubState<M, S>,
        id: SnapshotId,
        initiator: ProcessId,
        guard: super::ThreadGuard,
        started: bool,
    ) -> PendingSnapshot<M, S> {
        let now = self.now();
        if !state.asked_here.contains_key(&id) {
            let waits = match started {
                true => &mut state.asked_here,
                false => &mut state.watching,
            };
            waits.entry(id).or_insert((initiator, now));
        }
        state.ticket(id, initiator, guard)
    }

    /// Node `asker` waits for snapshot `id`, assembled here: its outcome goes there too.
    /// Refused if no such snapshot is being assembled.
    #[cfg(feature = "cluster")]
    pub(crate) fn watch_for(&self, id: SnapshotId, asker: usize) -> Result<(), Error> {
        let mut state = self.state.lock();
        if !state.collector.is_pending(id) {
            return Err(Error::UnknownSnapshot(id));
        }
        let nodes = state.askers.entry(id).or_default();
        if !nodes.contains(&asker) {
            nodes.push(asker);
        }
        Ok(())
    }

    /// Registers a wait here for snapshot `id`, assembled on another node (whose `initiator`
    /// started it), as [`begin_elsewhere`](Hub::begin_elsewhere) does for one asked for here.
    #[cfg(feature = "cluster")]
    pub(crate) fn watch_elsewhere(
        &self,
        id: SnapshotId,
        initiator: ProcessId,
        guard: super::ThreadGuard,
    ) -> Result<PendingSnapshot<M, S>, Error> {
        let mut state = self.state.lock();
        if state.closed {
            return Err(Error::Shutdown);
        }
        Ok(self.wait_elsewhere(&mut state, id, initiator, guard, false))
    }

    /// Node `asker` asked for snapshot `id` with `initiator`, run here: register it (its
    /// outcome goes back to `asker`). The outer error is the asker's: an id this node already
    /// knows (running, relayed, or among the last ended here), which only a replay can name.
    /// The inner one says why no snapshot may start now (shut down, a process failed).
    #[cfg(feature = "cluster")]
    pub(crate) fn begin_for(
        &self,
        id: SnapshotId,
        initiator: ProcessId,
        asker: usize,
    ) -> Result<Result<(), Error>, CollectError> {
        let mut state = self.state.lock();
        let known = state.collector.is_pending(id)
            || state.routes.contains_key(&id)
            || state.finished_routes.contains(&id)
            || state.withdrawn.contains(&id)
            || state.ended.contains(&id)
            || state.asked_here.contains_key(&id)
            || state.watching.contains_key(&id);
        if known {
            return Err(CollectError::DuplicateSnapshot(id));
        }
        if state.closed {
            return Ok(Err(Error::Shutdown));
        }
        match state.collector.begin(id, initiator, self.now()) {
            Ok(()) => {
                state.askers.entry(id).or_default().push(asker);
                state.begun_for.insert(id, ());
                Ok(Ok(()))
            }
            Err(CollectError::Failed(failure)) => Ok(Err(failure)),
            Err(e) => Ok(Err(Error::Cluster(e.to_string()))),
        }
    }

    /// The initiator of snapshot `id`, if this node knows it: it waits for its outcome from
    /// another node (asked for here, or watched), or the snapshot ended here lately (its outcome
    /// may still come, after a failure or the stop ended it here first). Only the initiator's
    /// node may send that outcome.
    #[cfg(feature = "cluster")]
    pub(crate) fn awaited_from(&self, id: SnapshotId) -> Option<ProcessId> {
        let state = self.state.lock();
        let waited = state
            .asked_here
            .get(&id)
            .or_else(|| state.watching.get(&id));
        waited
            .map(|&(initiator, _)| initiator)
            .or_else(|| state.ended.get(&id).copied())
    }

    /// The outcome of a snapshot asked for here, from the node that assembled it. Its start
    /// and end become this node's: when it was asked for and now; and its record times with
    /// them, each as long after the start as the assembling node saw it (so each lies between
    /// the start and the end here too). Returns false if no such snapshot was waiting (it had
    /// already ended here: a shutdown, a failure).
    #[cfg(feature = "cluster")]
    pub(crate) fn finish_elsewhere(
        &self,
        id: SnapshotId,
        outcome: Result<crate::snapshot::GlobalSnapshot<M, S>, Error>,
    ) -> bool {
        let mut state = self.state.lock();
        let waited = state.asked_here.remove(&id);
        let Some((initiator, asked_at)) = waited.or_else(|| state.watching.remove(&id)) else {
            return false;
        };
        let now = self.now();
        let outcome = outcome.map(|mut snapshot| {
            // Bounded by the time since the asking, too: a time that comes from another node
            // is only as good as that node, and must neither overflow nor lie past the end.
            let since_asked = now.saturating_sub(asked_at);
            for at in &mut snapshot.recorded_at {
                *at = asked_at + at.saturating_sub(snapshot.started_at).min(since_asked);
            }
            snapshot.started_at = asked_at;
            snapshot.completed_at = now;
            Arc::new(snapshot)
        });
        state.finish(id, initiator, outcome);
        true
    }

    /// Snapshot bookkeeping only a cluster node holds: (snapshots whose parts this node still
    /// sends elsewhere, snapshots asked for here and assembled elsewhere, snapshots assembled
    /// here for other nodes).
    #[cfg(feature = "cluster")]
    pub(crate) fn crossing(&self) -> (usize, usize, usize) {
        let state = self.state.lock();
        (
            state.routes.len(),
            state.asked_here.len() + state.watching.len(),
            state.askers.len(),
        )
    }

    /// `process` has panicked: every running snapshot fails (a simple rule that never leaves
    /// a snapshot half-alive), and no new one starts. `here`: it ran on this node (a cluster
    /// node then tells the others), rather than one reported by another node.
    pub(crate) fn fail_process(&self, process: ProcessId, message: String, here: bool) {
        let mut state = self.state.lock();
        let Some(abandoned) = state.collector.fail(process, message.clone()) else {
            return;
        };
        log::error!("process {process} panicked: {message}");
        if here {
            if let Some(uplink) = &state.uplink {
                uplink.failed(process, &message);
            }
        }
        let error = Error::ProcessFailed { process, message };
        for (id, initiator) in abandoned {
            log::debug!("process {process}: snapshot {id} failed: {error}");
            state.finish(id, initiator, Err(error.clone()));
        }
        state.fail_asked(&error);
    }

    /// A node has failed: every process of it counts as failed, and every running snapshot
    /// fails with `error` (an [`Error::NodeFailed`]), as [`fail_process`](Hub::fail_process)
    /// does for one process.
    #[cfg(feature = "cluster")]
    pub(crate) fn fail_node(&self, processes: &[ProcessId], reason: &str, error: Error) {
        // The node that decided it has said so in its log, with the reason.
        let mut state = self.state.lock();
        for &process in processes {
            let Some(abandoned) =
                state
                    .collector
                    .fail_with(process, reason.to_string(), error.clone())
            else {
                continue;
            };
            for (id, initiator) in abandoned {
                state.finish(id, initiator, Err(error.clone()));
            }
        }
        state.fail_asked(&error);
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
        state.routes.clear();
        state.end_waits_elsewhere(&Error::Shutdown);
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
