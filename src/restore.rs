//! Starting again from a completed global snapshot (or afresh): what every process and channel
//! starts with. Pure: the drivers put the messages in their channels and set the counters.
//!
//! A restored system continues exactly where the snapshot's cut left it: each process starts
//! from its recorded state; each channel holds its recorded in-flight messages, in order, with
//! their sequence numbers, ahead of anything sent after the restart; and each channel's sent and
//! received counters continue from the cut's, so snapshots taken after a restore verify exactly
//! like any other.

use std::collections::HashMap;

use crate::error::{BuildError, RestoreError};
use crate::process::Process;
use crate::snapshot::GlobalSnapshot;
use crate::topology::{Channel, ProcessId, Wiring};

/// How one channel starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ChannelStart<M> {
    /// Messages its sender had sent at the cut.
    pub(crate) sent: u64,
    /// Messages its receiver had received at the cut.
    pub(crate) received: u64,
    /// What was in flight: (sequence number, message), oldest first.
    pub(crate) in_flight: Vec<(u64, M)>,
}

/// Checks that `snapshot` fits `wiring` (same processes, same channels, a consistent cut) and
/// says how each channel starts, by channel index of `wiring`. Checks everything before anything
/// is started, so a refused snapshot starts nothing.
pub(crate) fn plan<M: Clone, S>(
    wiring: &Wiring,
    snapshot: &GlobalSnapshot<M, S>,
) -> Result<Vec<ChannelStart<M>>, RestoreError> {
    if snapshot.states.len() != wiring.processes() {
        return Err(RestoreError::ProcessCount {
            snapshot: snapshot.states.len(),
            topology: wiring.processes(),
        });
    }
    let mut by_channel: HashMap<Channel, usize> = HashMap::with_capacity(snapshot.channels.len());
    for (k, c) in snapshot.channels.iter().enumerate() {
        if by_channel.insert(c.channel, k).is_some() {
            return Err(RestoreError::ExtraChannel(c.channel));
        }
    }
    let starts = wiring
        .channels()
        .iter()
        .map(|channel| {
            let k = by_channel
                .remove(channel)
                .ok_or(RestoreError::MissingChannel(*channel))?;
            let c = &snapshot.channels[k];
            // The next message on the channel is numbered `sent + 1`: a channel that has
            // numbered `u64::MAX` cannot go on (only a forged or corrupt checkpoint holds one).
            if c.sent == u64::MAX {
                return Err(RestoreError::CounterFull(*channel));
            }
            Ok(ChannelStart {
                sent: c.sent,
                received: c.received,
                in_flight: c
                    .messages
                    .iter()
                    .map(|m| (m.seq, (*m.message).clone()))
                    .collect(),
            })
        })
        .collect::<Result<Vec<_>, RestoreError>>()?;
    if let Some(extra) = by_channel.keys().min() {
        return Err(RestoreError::ExtraChannel(*extra));
    }
    snapshot.verify().map_err(RestoreError::Inconsistent)?;
    Ok(starts)
}

/// Checks that `processes` has one process per process of `wiring`: what both drivers' `build`
/// do before starting fresh.
pub(crate) fn fresh<P>(
    wiring: &Wiring,
    processes: impl IntoIterator<Item = P>,
) -> Result<Vec<P>, BuildError> {
    let apps: Vec<P> = processes.into_iter().collect();
    if apps.len() != wiring.processes() {
        return Err(BuildError::ProcessCount {
            topology: wiring.processes(),
            given: apps.len(),
        });
    }
    Ok(apps)
}

/// The processes rebuilt from a snapshot, and how each channel starts.
pub(crate) type Rebuilt<P> = (Vec<P>, Vec<ChannelStart<<P as Process>::Message>>);

/// Checks `snapshot` against `wiring` (see [`plan`]), then rebuilds every process from its
/// recorded state: what both drivers' `restore` do before starting.
pub(crate) fn rebuild<P: Process>(
    wiring: &Wiring,
    snapshot: &GlobalSnapshot<P::Message, P::State>,
    mut rebuild: impl FnMut(ProcessId, &P::State) -> P,
) -> Result<Rebuilt<P>, RestoreError> {
    let starts = plan(wiring, snapshot)?;
    let apps = snapshot
        .states
        .iter()
        .enumerate()
        .map(|(p, state)| rebuild(p, state))
        .collect();
    Ok((apps, starts))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::error::CutError;
    use crate::snapshot::{ChannelSnapshot, RecordedMessage, SnapshotId};
    use crate::topology::Topology;

    fn snapshot(channels: Vec<(usize, usize, u64, u64, Vec<u64>)>) -> GlobalSnapshot<u64, u64> {
        GlobalSnapshot {
            id: SnapshotId::random(),
            initiator: 0,
            started_at: Duration::ZERO,
            completed_at: Duration::ZERO,
            recorded_at: Vec::new(),
            states: vec![1, 2],
            channels: channels
                .into_iter()
                .map(|(from, to, sent, received, seqs)| ChannelSnapshot {
                    channel: Channel::new(from, to),
                    sent,
                    received,
                    messages: seqs
                        .into_iter()
                        .map(|seq| RecordedMessage {
                            seq,
                            message: Arc::new(seq * 100),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn channels_start_with_their_counters_and_in_flight_messages() {
        let wiring = Topology::ring(2).validate().unwrap();
        // Listed in the other order than the topology: matched by channel, not position.
        let s = snapshot(vec![(1, 0, 4, 4, vec![]), (0, 1, 7, 5, vec![6, 7])]);
        let starts = plan(&wiring, &s).unwrap();
        assert_eq!(
            starts[0],
            ChannelStart {
                sent: 7,
                received: 5,
                in_flight: vec![(6, 600), (7, 700)]
            }
        );
        assert_eq!(starts[1].in_flight, vec![]);
        assert_eq!((starts[1].sent, starts[1].received), (4, 4));
    }

    /// A channel whose counter is full cannot number the next message: refused, not restored
    /// into a channel whose next number overflows.
    #[test]
    fn a_channel_with_a_full_counter_is_refused() {
        let wiring = Topology::ring(2).validate().unwrap();
        let max = u64::MAX;
        let full = snapshot(vec![(0, 1, max, max, vec![]), (1, 0, 0, 0, vec![])]);
        assert_eq!(
            plan(&wiring, &full).unwrap_err(),
            RestoreError::CounterFull(Channel::new(0, 1))
        );
        let almost = snapshot(vec![(0, 1, max - 1, max - 1, vec![]), (1, 0, 0, 0, vec![])]);
        assert_eq!(plan(&wiring, &almost).unwrap()[0].sent, max - 1);
    }

    #[test]
    fn a_snapshot_that_does_not_fit_is_refused() {
        let wiring = Topology::ring(2).validate().unwrap();
        let good = vec![(0, 1, 1, 1, vec![]), (1, 0, 0, 0, vec![])];
        let mut three = snapshot(good.clone());
        three.states.push(3);
        assert_eq!(
            plan(&wiring, &three).unwrap_err(),
            RestoreError::ProcessCount {
                snapshot: 3,
                topology: 2
            }
        );
        assert_eq!(
            plan(&wiring, &snapshot(vec![(0, 1, 1, 1, vec![])])).unwrap_err(),
            RestoreError::MissingChannel(Channel::new(1, 0))
        );
        let mut extra = good.clone();
        extra.push((0, 1, 1, 1, vec![]));
        assert_eq!(
            plan(&wiring, &snapshot(extra)).unwrap_err(),
            RestoreError::ExtraChannel(Channel::new(0, 1))
        );
        let bad = snapshot(vec![(0, 1, 3, 1, vec![2]), (1, 0, 0, 0, vec![])]);
        assert!(matches!(
            plan(&wiring, &bad).unwrap_err(),
            RestoreError::Inconsistent(CutError::WrongRecording { .. })
        ));
    }
}
