//! Assembling local parts into global snapshots: pure bookkeeping, no threads or clocks (the
//! driver passes the times in). Also the one place that decides what a process failure means
//! for snapshots ([`Collector::fail`]), for both drivers.

use std::sync::Arc;
use std::time::Duration;

use crate::error::{CollectError, Error};
use crate::snapshot::{ChannelSnapshot, GlobalSnapshot, IdMap, LocalSnapshot, SnapshotId};
use crate::topology::{ProcessId, Wiring};

/// A snapshot some of whose parts are still to come.
#[derive(Debug)]
struct Assembly<M, S> {
    initiator: ProcessId,
    started_at: Duration,
    parts: Vec<Option<LocalSnapshot<M, S>>>,
    /// By process: when its state was recorded (as its driver says).
    recorded_at: Vec<Duration>,
    missing: usize,
}

/// Gathers the local parts of every running snapshot and assembles each global snapshot when
/// its last part arrives.
#[derive(Debug)]
pub struct Collector<M, S> {
    wiring: Arc<Wiring>,
    pending: IdMap<Assembly<M, S>>,
    /// By process: its panic message, once it has failed.
    failures: Vec<Option<String>>,
    /// The first failure, as the error that ends snapshots: kept rather than searched for,
    /// since every snapshot start asks.
    first_failure: Option<Error>,
}

impl<M, S> Collector<M, S> {
    /// A collector for snapshots of `wiring`.
    pub fn new(wiring: Arc<Wiring>) -> Self {
        Collector {
            failures: vec![None; wiring.processes()],
            first_failure: None,
            wiring,
            pending: IdMap::default(),
        }
    }

    /// Snapshot `id`, started by `initiator` at `started_at`, expects parts.
    pub fn begin(
        &mut self,
        id: SnapshotId,
        initiator: ProcessId,
        started_at: Duration,
    ) -> Result<(), CollectError> {
        if let Some(failure) = &self.first_failure {
            return Err(CollectError::Failed(failure.clone()));
        }
        if self.pending.contains_key(&id) {
            return Err(CollectError::DuplicateSnapshot(id));
        }
        let n = self.wiring.processes();
        self.pending.insert(
            id,
            Assembly {
                initiator,
                started_at,
                parts: (0..n).map(|_| None).collect(),
                recorded_at: vec![Duration::ZERO; n],
                missing: n,
            },
        );
        Ok(())
    }

    /// Adds one process's part, whose state was recorded at `recorded_at`; returns the global
    /// snapshot if it was the last one missing (and forgets the snapshot).
    pub fn add(
        &mut self,
        part: LocalSnapshot<M, S>,
        recorded_at: Duration,
        completed_at: Duration,
    ) -> Result<Option<GlobalSnapshot<M, S>>, CollectError> {
        let (id, process) = (part.id, part.process);
        let fits = process < self.wiring.processes()
            && part.sent.len() == self.wiring.outgoing(process).len()
            && part.received.len() == self.wiring.incoming(process).len()
            && part.recorded.len() == part.received.len();
        let assembly = self
            .pending
            .get_mut(&id)
            .ok_or(CollectError::UnknownSnapshot(id))?;
        if !fits {
            return Err(CollectError::MalformedPart {
                snapshot: id,
                process,
            });
        }
        let slot = &mut assembly.parts[process];
        if slot.is_some() {
            return Err(CollectError::DuplicatePart {
                snapshot: id,
                process,
            });
        }
        *slot = Some(part);
        assembly.recorded_at[process] = recorded_at;
        assembly.missing -= 1;
        if assembly.missing > 0 {
            return Ok(None);
        }
        let assembly = self.pending.remove(&id).expect("present");
        Ok(Some(self.assemble(id, assembly, completed_at)))
    }

    fn assemble(
        &self,
        id: SnapshotId,
        assembly: Assembly<M, S>,
        completed_at: Duration,
    ) -> GlobalSnapshot<M, S> {
        let wiring = &self.wiring;
        let mut channels: Vec<ChannelSnapshot<M>> = wiring
            .channels()
            .iter()
            .map(|&channel| ChannelSnapshot::empty(channel))
            .collect();
        let mut states = Vec::with_capacity(assembly.parts.len());
        for (process, part) in assembly.parts.into_iter().enumerate() {
            let part = part.expect("every part present");
            for (&c, sent) in wiring.outgoing(process).iter().zip(part.sent) {
                channels[c].sent = sent;
            }
            let incoming = wiring.incoming(process).iter();
            for ((&c, received), messages) in incoming.zip(part.received).zip(part.recorded) {
                channels[c].received = received;
                channels[c].messages = messages;
            }
            states.push(part.state);
        }
        GlobalSnapshot {
            id,
            initiator: assembly.initiator,
            started_at: assembly.started_at,
            completed_at,
            recorded_at: assembly.recorded_at,
            states,
            channels,
        }
    }

    /// Process `process` has failed (its application code panicked with `message`). What
    /// follows, the same in both drivers: every snapshot still being assembled fails (returned
    /// with its initiator, for the driver to report with [`Collector::failure`]'s error), since it
    /// needs a part the failed process will never send; and no snapshot starts any more
    /// ([`begin`](Collector::begin) refuses), since every snapshot needs every process. The
    /// driver then has every process drop its snapshot state and ignore markers
    /// (`Host::drop_snapshots`), and refuses messages to the failed process.
    ///
    /// Returns `None` if `process` had already failed (nothing more to do).
    pub fn fail(
        &mut self,
        process: ProcessId,
        message: String,
    ) -> Option<Vec<(SnapshotId, ProcessId)>> {
        let error = Error::ProcessFailed {
            process,
            message: message.clone(),
        };
        self.fail_with(process, message, error)
    }

    /// As [`fail`](Collector::fail), with `error` as what ends the snapshots if this is the
    /// first failure (a cluster node whose processes failed with it says so:
    /// [`Error::NodeFailed`]).
    pub fn fail_with(
        &mut self,
        process: ProcessId,
        message: String,
        error: Error,
    ) -> Option<Vec<(SnapshotId, ProcessId)>> {
        let slot = self.failures.get_mut(process)?;
        if slot.is_some() {
            return None;
        }
        if self.first_failure.is_none() {
            self.first_failure = Some(error);
        }
        *slot = Some(message);
        Some(self.abandon_all())
    }

    /// The error that ends snapshots once a process has failed (the first that failed), if one
    /// has.
    pub fn failure(&self) -> Option<&Error> {
        self.first_failure.as_ref()
    }

    /// Whether `process` has failed, and its panic message.
    pub fn failure_of(&self, process: ProcessId) -> Option<&str> {
        self.failures.get(process)?.as_deref()
    }

    /// Every failed process and its panic message, by process id.
    pub fn failures(&self) -> Vec<(ProcessId, String)> {
        self.failures
            .iter()
            .enumerate()
            .filter_map(|(p, f)| f.clone().map(|m| (p, m)))
            .collect()
    }

    /// Gives up snapshot `id`; returns its initiator if it was pending.
    pub fn abandon(&mut self, id: SnapshotId) -> Option<ProcessId> {
        self.pending.remove(&id).map(|a| a.initiator)
    }

    /// Gives up every pending snapshot; returns their ids and initiators.
    pub fn abandon_all(&mut self) -> Vec<(SnapshotId, ProcessId)> {
        self.pending
            .drain()
            .map(|(id, a)| (id, a.initiator))
            .collect()
    }

    /// The initiator of pending snapshot `id`.
    pub fn initiator(&self, id: SnapshotId) -> Option<ProcessId> {
        self.pending.get(&id).map(|a| a.initiator)
    }

    /// Whether snapshot `id` is still waiting for parts.
    pub fn is_pending(&self, id: SnapshotId) -> bool {
        self.pending.contains_key(&id)
    }

    /// How many snapshots are waiting for parts.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::RecordedMessage;
    use crate::topology::Topology;

    fn id(n: u128) -> SnapshotId {
        SnapshotId(uuid::Uuid::from_u128(n))
    }

    fn part(
        process: ProcessId,
        sent: Vec<u64>,
        received: Vec<u64>,
        recorded: Vec<Vec<u64>>,
    ) -> LocalSnapshot<u64, u64> {
        LocalSnapshot {
            id: id(1),
            process,
            initiated: process == 0,
            state: 100 + process as u64,
            sent,
            received,
            recorded: recorded
                .into_iter()
                .map(|seqs| {
                    seqs.into_iter()
                        .map(|seq| RecordedMessage {
                            seq,
                            message: Arc::new(seq * 10),
                        })
                        .collect()
                })
                .collect(),
        }
    }

    #[test]
    fn parts_are_placed_on_the_right_channels() {
        // channels: 0: 0->1, 1: 1->0
        let wiring = Arc::new(Topology::ring(2).validate().unwrap());
        let mut c = Collector::new(wiring);
        c.begin(id(1), 0, Duration::from_micros(5)).unwrap();
        assert!(c
            .add(
                part(1, vec![3], vec![4], vec![vec![]]),
                Duration::from_micros(7),
                Duration::from_micros(8)
            )
            .unwrap()
            .is_none());
        let g = c
            .add(
                part(0, vec![6], vec![1], vec![vec![2, 3]]),
                Duration::from_micros(5),
                Duration::from_micros(9),
            )
            .unwrap()
            .unwrap();
        assert_eq!(g.states, vec![100, 101]);
        assert_eq!(g.initiator, 0);
        assert_eq!(g.latency(), Duration::from_micros(4));
        assert_eq!(g.recorded_at, [5, 7].map(Duration::from_micros));
        let cost = g.cost();
        assert_eq!(cost.recorded_after, [0, 2].map(Duration::from_micros));
        assert_eq!((cost.markers, cost.messages), (2, 2));
        assert_eq!(cost.bytes, 2 * 8 + 2 * (8 + 8));
        let c01 = g.channel(0, 1).unwrap();
        assert_eq!((c01.sent, c01.received, c01.messages.len()), (6, 4, 0));
        let c10 = g.channel(1, 0).unwrap();
        assert_eq!((c10.sent, c10.received), (3, 1));
        assert_eq!(*c10.messages[1].message, 30);
        assert_eq!(c.pending(), 0);
    }

    #[test]
    fn bad_parts_are_refused() {
        let wiring = Arc::new(Topology::ring(2).validate().unwrap());
        let mut c: Collector<u64, u64> = Collector::new(wiring);
        assert_eq!(
            c.add(
                part(0, vec![0], vec![0], vec![vec![]]),
                Duration::ZERO,
                Duration::ZERO
            ),
            Err(CollectError::UnknownSnapshot(id(1)))
        );
        c.begin(id(1), 0, Duration::ZERO).unwrap();
        assert_eq!(
            c.begin(id(1), 1, Duration::ZERO),
            Err(CollectError::DuplicateSnapshot(id(1)))
        );
        assert_eq!(
            c.add(
                part(0, vec![0, 0], vec![0], vec![vec![]]),
                Duration::ZERO,
                Duration::ZERO
            ),
            Err(CollectError::MalformedPart {
                snapshot: id(1),
                process: 0
            })
        );
        c.add(
            part(0, vec![0], vec![0], vec![vec![]]),
            Duration::ZERO,
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(
            c.add(
                part(0, vec![0], vec![0], vec![vec![]]),
                Duration::ZERO,
                Duration::ZERO
            ),
            Err(CollectError::DuplicatePart {
                snapshot: id(1),
                process: 0
            })
        );
        assert_eq!(c.abandon_all(), vec![(id(1), 0)]);
        assert_eq!(c.pending(), 0);
    }
}
