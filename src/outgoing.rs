//! The sending side of one process, as every driver runs it: which neighbour is on which outgoing
//! channel, and how many application messages each channel has carried (the "sent" counters a
//! snapshot records, and the sequence number each message carries). The driver only moves the
//! numbered envelope; so what the simulator checks about sending is what the runtime does.

use std::num::NonZeroU64;

use crate::envelope::{Envelope, Refused};
use crate::error::SendError;
use crate::own_lines::OwnLines;
use crate::peers::Peers;
use crate::topology::{ProcessId, Wiring};

/// One process's outgoing channels, by local outgoing number.
#[derive(Debug)]
pub(crate) struct Outgoing {
    me: ProcessId,
    /// Destinations, by local outgoing number (increasing), and back.
    destinations: Peers,
    /// By local outgoing number: application messages sent so far. Written on every send, so
    /// on cache lines of its own (`own_lines.rs`).
    sent: OwnLines<u64>,
}

impl Outgoing {
    /// `me`'s outgoing channels in `wiring`, whose counters start at `sent` (by local outgoing
    /// number: all zero for a fresh start, the cut's for a restored one).
    pub(crate) fn new(me: ProcessId, wiring: &Wiring, sent: Vec<u64>) -> Self {
        let destinations = Peers::new(me, wiring.processes(), &wiring.destinations(me));
        debug_assert_eq!(destinations.len(), sent.len());
        Outgoing {
            me,
            destinations,
            sent: OwnLines::from_slice_with(&sent, 0),
        }
    }

    /// Destinations of the outgoing channels, in increasing order.
    #[cfg(test)]
    pub(crate) fn destinations(&self) -> &Peers {
        &self.destinations
    }

    /// By local outgoing number: application messages sent so far.
    pub(crate) fn sent(&self) -> &[u64] {
        &self.sent
    }

    /// Sends `message` to `to`: numbers it on its channel and hands it to `push` (which puts it
    /// on local outgoing channel `slot`, or hands it back if the receiver has failed). The
    /// counter moves only if the message went.
    #[inline(always)]
    pub(crate) fn send<M>(
        &mut self,
        to: ProcessId,
        message: M,
        push: impl FnOnce(usize, Envelope<M>) -> Result<(), Refused<M>>,
    ) -> Result<(), SendError<M>> {
        let Some(slot) = self.destinations.number(to) else {
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
            Err(Refused::Disconnected(Envelope::Message { message, .. })) => {
                Err(SendError::Disconnected {
                    from: self.me,
                    to,
                    message,
                })
            }
            Err(Refused::Unencodable(Envelope::Message { message, .. }, reason)) => {
                Err(SendError::Unencodable {
                    from: self.me,
                    to,
                    message,
                    reason,
                })
            }
            Err(Refused::Disconnected(Envelope::Marker(_)) | Refused::Unencodable(..)) => {
                unreachable!("push hands back what it was given")
            }
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
        assert_eq!(out.destinations().ids().collect::<Vec<_>>(), [0, 2]);
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
        let err = out
            .send(2, "x", |_, e| Err(Refused::Disconnected(e)))
            .unwrap_err();
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

    #[test]
    fn a_process_that_is_not_a_neighbour_is_refused_with_the_message() {
        // A leaf of a star talks only to the centre, 0.
        let wiring = Topology::star(4).validate().unwrap();
        let mut out = Outgoing::new(1, &wiring, vec![0]);
        assert_eq!(out.destinations().ids().collect::<Vec<_>>(), [0]);
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
