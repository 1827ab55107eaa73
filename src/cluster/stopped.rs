//! What a node hands back when the cluster stops: its own processes (as a runtime's
//! [`Stopped`]), and the cluster's final state assembled from every node's report.

use std::sync::Arc;
use std::time::Duration;

use super::wire::Report;
use crate::process::{Process, ProcessFailure};
use crate::runtime::{Stopped, Undelivered};
use crate::snapshot::{ChannelSnapshot, GlobalSnapshot, RecordedMessage, SnapshotId};
use crate::topology::Wiring;

/// What a node hands back when the cluster has stopped.
pub struct ClusterStopped<P: Process> {
    /// This node's own processes, failures and undelivered messages, as a runtime's shutdown
    /// hands them back: `local.processes[p]` is `Some` for each process run here that did not
    /// fail, `None` for the others. `local.undelivered` has what was left on the channels into
    /// this node's processes, from this node or another (what other nodes sent is read to the
    /// end before it is collected).
    pub local: Stopped<P>,
    /// Every process that failed, on any node.
    pub failures: Vec<ProcessFailure>,
    /// The note given by whoever stopped the cluster (`Node::shutdown_with`), the same on
    /// every node; empty if none.
    pub note: Vec<u8>,
    /// The nodes this node decided had failed (a node's death, or a link that broke or went
    /// silent), increasing; and those whose link broke during the stop before they had said
    /// all they had to (they are also in [`missing_reports`](ClusterStopped::missing_reports)
    /// if their report never came; their processes are not counted in `failures`, as they may
    /// have stopped cleanly).
    pub failed_nodes: Vec<usize>,
    /// Messages this node's processes sent (`send` accepted them) to processes of a failed
    /// node, and that never left: still queued here when it failed, or cut off by its failure
    /// in the middle of a write (in an encrypted message the node cannot have opened). Those
    /// written to the network whole before the failure went with the node.
    pub lost: Vec<Undelivered<P::Message>>,
    final_state: Option<GlobalSnapshot<P::Message, P::State>>,
    missing: Vec<usize>,
    unconfirmed: Vec<usize>,
}

/// What a node knows of failures when it stops.
pub(crate) struct Failed<M> {
    /// The nodes decided failed.
    pub(crate) nodes: Vec<usize>,
    /// The processes known failed (its own and those other nodes reported, and those of
    /// failed nodes).
    pub(crate) known: Vec<ProcessFailure>,
    /// Messages queued for failed nodes (see `ClusterStopped::lost`).
    pub(crate) lost: Vec<Undelivered<M>>,
    /// See `ClusterStopped::unconfirmed`.
    pub(crate) unconfirmed: Vec<usize>,
}

impl<P: Process> ClusterStopped<P> {
    /// The cluster's final state: every process's state once all had stopped
    /// ([`Process::record`] of the stopped process), and every channel's undelivered messages
    /// with the sent and received counters, as a global snapshot (id nil, times zero). Every
    /// process had stopped and every connection was read to its end, so it is a consistent
    /// state, and [`verify`](GlobalSnapshot::verify) checks it exactly as any snapshot's: a
    /// message lost or doubled by the shutdown would fail it. `None` if a process failed or a
    /// node's report never came ([`missing_reports`](ClusterStopped::missing_reports)).
    pub fn final_state(&self) -> Option<&GlobalSnapshot<P::Message, P::State>> {
        self.final_state.as_ref()
    }

    /// The nodes whose final report never came (their link failed, or they stopped before
    /// sending it).
    pub fn missing_reports(&self) -> &[usize] {
        &self.missing
    }

    /// If this node has every node's final report: the nodes, not failed, that did not say they
    /// had every report too before this node stopped (each node says so to the others once it
    /// has them all, and waits to hear it from them within the stop timeout). Such a node may
    /// have stopped without some report: its own result then has no final state, whatever this
    /// one's says. Empty when every node's result is built from the same reports, and when this
    /// node's own result lacks a report (`missing_reports`). A node that stopped after its own
    /// report, giving up on another, is named here rather than in `failed_nodes`.
    pub fn unconfirmed(&self) -> &[usize] {
        &self.unconfirmed
    }

    /// Assembles the node's result from its own `local` stop and every node's report (this
    /// node's included), by node.
    pub(crate) fn assemble(
        local: Stopped<P>,
        wiring: &Wiring,
        reports: Vec<Option<Report<P::Message, P::State>>>,
        note: Vec<u8>,
        failed: Failed<P::Message>,
    ) -> Self {
        let missing: Vec<usize> = (0..reports.len())
            .filter(|&k| reports[k].is_none())
            .collect();
        let mut failures: Vec<ProcessFailure> = reports
            .iter()
            .flatten()
            .flat_map(|r| {
                r.processes.iter().filter_map(|(p, _, failure)| {
                    failure.as_ref().map(|message| ProcessFailure {
                        process: *p as usize,
                        message: message.clone(),
                    })
                })
            })
            .collect();
        for f in failed.known {
            if !failures.iter().any(|g| g.process == f.process) {
                failures.push(f);
            }
        }
        failures.sort_by_key(|f| f.process);
        let final_state = if missing.is_empty() && failures.is_empty() {
            final_state(wiring, reports)
        } else {
            None
        };
        ClusterStopped {
            local,
            failures,
            note,
            failed_nodes: failed.nodes,
            lost: failed.lost,
            final_state,
            missing,
            unconfirmed: failed.unconfirmed,
        }
    }
}

/// The global state the reports describe, if they describe every process and channel.
fn final_state<M, S>(
    wiring: &Wiring,
    reports: Vec<Option<Report<M, S>>>,
) -> Option<GlobalSnapshot<M, S>> {
    let n = wiring.processes();
    let mut states: Vec<Option<S>> = (0..n).map(|_| None).collect();
    let mut channels: Vec<ChannelSnapshot<M>> = wiring
        .channels()
        .iter()
        .map(|&channel| ChannelSnapshot::empty(channel))
        .collect();
    let mut seen_in = vec![false; channels.len()];
    let mut seen_out = vec![false; channels.len()];
    for report in reports.into_iter().flatten() {
        for (p, state, _) in report.processes {
            *states.get_mut(p as usize)? = state;
        }
        for (c, received, undelivered) in report.incoming {
            let channel = channels.get_mut(c as usize)?;
            // Checked when the report arrived; still no overflow, whatever a report says (the
            // range below numbers the messages left from `received + 1`, and steps past the last).
            received.checked_add(undelivered.len() as u64 + 1)?;
            channel.received = received;
            channel.messages = undelivered
                .into_iter()
                .zip(received + 1..)
                .map(|(message, seq)| RecordedMessage {
                    seq,
                    message: Arc::new(message),
                })
                .collect();
            seen_in[c as usize] = true;
        }
        for (c, sent) in report.outgoing {
            channels.get_mut(c as usize)?.sent = sent;
            seen_out[c as usize] = true;
        }
    }
    if !seen_in.iter().chain(&seen_out).all(|&s| s) {
        return None;
    }
    Some(GlobalSnapshot {
        id: SnapshotId(uuid::Uuid::nil()),
        initiator: 0,
        started_at: Duration::ZERO,
        completed_at: Duration::ZERO,
        recorded_at: Vec::new(),
        states: states.into_iter().collect::<Option<Vec<S>>>()?,
        channels,
    })
}

impl<P: Process> std::fmt::Debug for ClusterStopped<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStopped")
            .field("local", &self.local)
            .field("failures", &self.failures)
            .field("note", &self.note)
            .field("failed_nodes", &self.failed_nodes)
            .field("final_state", &self.final_state.is_some())
            .field("missing_reports", &self.missing)
            .field("unconfirmed", &self.unconfirmed)
            .finish()
    }
}
