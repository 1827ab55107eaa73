//! The simulator as one process's driver: envelopes onto the simulated channels (with their
//! trace events), snapshots into the collector.

use std::sync::Arc;

use super::network::Network;
use super::FailedSnapshot;
use crate::envelope::{Envelope, Refused};
use crate::error::CollectError;
use crate::host::Driver;
use crate::process::Process;
use crate::snapshot::{LocalSnapshot, SnapshotId};
use crate::topology::ProcessId;
use crate::trace::{envelope_event, TraceKind};

/// The simulator as one host's [`Driver`].
pub(super) struct Port<'a, P: Process> {
    pub(super) net: &'a mut Network<P>,
    pub(super) me: ProcessId,
}

impl<P: Process> Driver<P> for Port<'_, P> {
    fn push(
        &mut self,
        slot: usize,
        envelope: Envelope<P::Message>,
    ) -> Result<(), Refused<P::Message>> {
        let c = self.net.outgoing[self.me][slot];
        let channel = self.net.wiring.channels()[c];
        // As in the runtime: a process that has failed takes nothing more.
        if self.net.collector.failure_of(channel.to).is_some() {
            return Err(Refused::Disconnected(envelope));
        }
        let (kind, seq, snapshot) = envelope_event(&envelope, true);
        self.net
            .note(kind, self.me, Some(channel), seq, snapshot, None);
        self.net.push(self.me, c, envelope);
        Ok(())
    }

    fn recorded(&mut self, id: SnapshotId) {
        self.net.recorded_at[self.me].insert(id, self.net.now);
        // Markers go out in the turn the state is recorded: that is the `record` event.
        self.net
            .note(TraceKind::Record, self.me, None, None, Some(id), None);
    }

    fn new_snapshot_id(&mut self) -> SnapshotId {
        self.net.ids[self.me].snapshot_id()
    }

    fn begin(&mut self, id: SnapshotId, initiator: ProcessId) -> bool {
        let now = self.net.time();
        match self.net.collector.begin(id, initiator, now) {
            Ok(()) => {
                self.net.started.push(id);
                true
            }
            // Started by application code after a failure: reported, as the runtime reports it
            // to subscribers.
            Err(CollectError::Failed(error)) => {
                self.net.failed_snapshots.push(FailedSnapshot {
                    id,
                    initiator,
                    error,
                });
                false
            }
            Err(_) => false,
        }
    }

    fn snapshots_live(&self) -> bool {
        // After a failure every snapshot has been given up (`Collector::fail`).
        self.net.collector.failure().is_none()
    }

    fn part_complete(&mut self, part: LocalSnapshot<P::Message, P::State>) {
        let now = self.net.time();
        let step = self.net.recorded_at[self.me]
            .remove(&part.id)
            .unwrap_or_default();
        let recorded_at = std::time::Duration::from_millis(step);
        let global = self
            .net
            .collector
            .add(part, recorded_at, now)
            .unwrap_or_else(|e| panic!("process {}: {e}", self.me));
        if let Some(global) = global {
            let id = global.id;
            log::debug!(
                "process {}: snapshot {id} complete (initiator {}, step {})",
                self.me,
                global.initiator,
                self.net.now
            );
            self.net
                .note(TraceKind::Complete, self.me, None, None, Some(id), None);
            self.net.completed_at.insert(id, self.net.completed.len());
            self.net.completed.push(Arc::new(global));
        }
    }
}
