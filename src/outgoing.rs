//! The sending side of one process, as every driver runs it: which neighbour is on which outgoing
//! channel, and how many application messages each channel has carried (the "sent" counters a
//! snapshot records, and the sequence number each message carries). The driver only moves the
//! numbered envelope; so what the simulator checks about sending is what the runtime does.

use std::num::NonZeroU64;

use crate::envelope::Envelope;
use crate::error::SendError;
use crate::own_lines::OwnLines;
use crate::topology::{ProcessId, Wiring};

/// Marks a process with no channel to it in a [`Slots::Table`].
const NONE: u32 = u32::MAX;

/// Which local outgoing number leads to which destination.
#[derive(Debug)]
enum Slots {
    /// A channel to every other process (as in a complete graph): the destinations are
    /// `0..processes` without `me`, in order, so the number is arithmetic. This saves the
    /// table's load on every send and the table's memory; A/B at N = 64 on 2 cores, 0.99 and
    /// 1.03 (BENCHMARKS.md): small, within the noise.
    AllOthers { processes: usize },
    /// By destination process: local outgoing number, or `NONE`. Dense, so a send is one
    /// lookup.
    Table(Box<[u32]>),
}

/// One process's outgoing channels, by local outgoing number.
#[derive(Debug)]
pub(crate) struct Outgoing {
    me: ProcessId,
    /// Destinations, by local outgoing number (increasing).
    neighbours: Vec<ProcessId>,
    slots: Slots,
    /// By local outgoing number: application messages sent so far. Written on every send, so
    /// on cache lines of its own (`own_lines.rs`).
    sent: OwnLines<u64>,
}

impl Outgoing {
    /// `me`'s outgoing channels in `wiring`, whose counters start at `sent` (by local outgoing
    /// number: all zero for a fresh start, the cut's for a restored one).
    pub(crate) fn new(me: ProcessId, wiring: &Wiring, sent: Vec<u64>) -> Self {
        let neighbours = wiring.destinations(me);
        debug_assert_eq!(neighbours.len(), sent.len());
        let processes = wiring.processes();
        let all_others = neighbours.len() + 1 == processes
            && neighbours
                .iter()
                .enumerate()
                .all(|(k, &to)| to == k + usize::from(k >= me));
        let slots = if all_others {
            Slots::AllOthers { processes }
        } else {
            let mut table = vec![NONE; processes].into_boxed_slice();
            for (k, &to) in neighbours.iter().enumerate() {
                table[to] = k as u32;
            }
            Slots::Table(table)
        };
        Outgoing {
            me,
            neighbours,
            slots,
            sent: OwnLines::from_slice_with(&sent, 0),
        }
    }

    /// Destinations of the outgoing channels, in increasing order.
    pub(crate) fn neighbours(&self) -> &[ProcessId] {
        &self.neighbours
    }

    /// By local outgoing number: application messages sent so far.
    pub(crate) fn sent(&self) -> &[u64] {
        &self.sent
    }

    /// The local outgoing number of the channel to `to`, if there is one.
    #[inline(always)]
    fn slot(&self, to: ProcessId) -> Option<usize> {
        match &self.slots {
            Slots::AllOthers { processes } => {
                (to < *processes && to != self.me).then(|| to - usize::from(to > self.me))
            }
            Slots::Table(table) => match table.get(to) {
                Some(&slot) if slot != NONE => Some(slot as usize),
                _ => None,
            },
        }
    }

    /// Sends `message` to `to`: numbers it on its channel and hands it to `push` (which puts it
    /// on local outgoing channel `slot`, or hands it back if the receiver has failed). The
    /// counter moves only if the message went.
    #[inline(always)]
    pub(crate) fn send<M>(
        &mut self,
        to: ProcessId,
        message: M,
        push: impl FnOnce(usize, Envelope<M>) -> Result<(), Envelope<M>>,
    ) -> Result<(), SendError<M>> {
        let Some(slot) = self.slot(to) else {
            return Err(SendError::NotNeighbour {
                from: self.me,
                to,
                message,
            });
        };
        let seq = NonZeroU64::MIN.saturating_add(self.sent[slot]);
        match push(slot, Envelope::Message { seq, message }) {
            Ok(()) => {
                self.sent[slot] = seq.get();
                Ok(())
            }
            Err(Envelope::Message { message, .. }) => Err(SendError::Disconnected {
                from: self.me,
                to,
                message,
            }),
            Err(Envelope::Marker(_)) => unreachable!("push hands back what it was given"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    #[test]
    fn numbers_each_channel_from_its_own_counter_and_counts_only_what_went() {
        // Process 1 of the complete graph on 3: channels to 0 and to 2.
        let wiring = Topology::complete(3).validate().unwrap();
        let mut out = Outgoing::new(1, &wiring, vec![5, 0]);
        assert_eq!(out.neighbours(), [0, 2]);
        let mut pushed = Vec::new();
        for to in [0, 2, 0] {
            out.send(to, "m", |slot, e| {
                pushed.push((slot, e));
                Ok(())
            })
            .unwrap();
        }
        let seqs: Vec<(usize, u64)> = pushed
            .iter()
            .map(|(slot, e)| match e {
                Envelope::Message { seq, .. } => (*slot, seq.get()),
                Envelope::Marker(_) => panic!("a marker"),
            })
            .collect();
        assert_eq!(seqs, [(0, 6), (1, 1), (0, 7)], "restored counters continue");
        assert_eq!(out.sent(), [7, 1]);
        // Handed back: the error carries the message and the counter stays.
        let err = out.send(2, "x", |_, e| Err(e)).unwrap_err();
        assert_eq!(
            err,
            SendError::Disconnected {
                from: 1,
                to: 2,
                message: "x"
            }
        );
        assert_eq!(out.sent(), [7, 1]);
    }

    /// Both ways of finding a channel (arithmetic when a process has a channel to every other,
    /// a table otherwise) agree with the wiring, and refuse the same destinations.
    #[test]
    fn every_destination_maps_to_its_own_channel() {
        let topologies = [
            Topology::complete(5),
            Topology::ring(5),
            Topology::star(5),
            Topology::complete(1),
        ];
        for topology in topologies {
            let wiring = topology.validate().unwrap();
            for me in 0..wiring.processes() {
                let n = wiring.destinations(me).len();
                let out = Outgoing::new(me, &wiring, vec![0; n]);
                let complete = n + 1 == wiring.processes();
                assert_eq!(matches!(out.slots, Slots::AllOthers { .. }), complete);
                for to in 0..wiring.processes() + 2 {
                    let want = wiring.destinations(me).iter().position(|&d| d == to);
                    assert_eq!(out.slot(to), want, "process {me} to {to}");
                }
            }
        }
    }

    #[test]
    fn a_process_that_is_not_a_neighbour_is_refused_with_the_message() {
        // A leaf of a star talks only to the centre, 0.
        let wiring = Topology::star(4).validate().unwrap();
        let mut out = Outgoing::new(1, &wiring, vec![0]);
        assert_eq!(out.neighbours(), [0]);
        for to in [1, 2, 99] {
            let err = out
                .send(to, 7u8, |_, _| panic!("nothing may be pushed"))
                .unwrap_err();
            assert_eq!(
                err,
                SendError::NotNeighbour {
                    from: 1,
                    to,
                    message: 7
                }
            );
        }
        assert_eq!(out.sent(), [0]);
    }
}
