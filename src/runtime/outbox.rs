//! The sending side of one process: its outgoing edge channels, the per-channel sequence
//! numbers (the "sent" counters of ALGORITHM.md) and the receivers' doorbells.

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::error::SendError;
use crate::host::Envelope;
use crate::runtime::doorbell::Doorbell;
use crate::snapshot::SnapshotId;
use crate::topology::ProcessId;

/// One outgoing channel.
struct Link<M> {
    tx: Sender<Envelope<M>>,
    to: ProcessId,
    /// The channel's bit in the receiver's doorbell.
    bit: usize,
}

/// The process's outgoing channels, indexed by local outgoing number.
pub(crate) struct EdgeOutbox<M> {
    me: ProcessId,
    links: Vec<Link<M>>,
    /// Destinations, by local outgoing number (increasing).
    neighbours: Vec<ProcessId>,
    /// By destination: local outgoing number, or `NONE`. Dense, so a send is one lookup.
    slot_of: Box<[u32]>,
    /// By local outgoing number: application messages sent so far.
    pub(crate) sent: Vec<u64>,
    bells: Arc<[Doorbell]>,
}

const NONE: u32 = u32::MAX;

impl<M> EdgeOutbox<M> {
    /// `links`: (sender, destination, bit at the destination), in local outgoing order.
    pub(crate) fn new(
        me: ProcessId,
        processes: usize,
        links: Vec<(Sender<Envelope<M>>, ProcessId, usize)>,
        bells: Arc<[Doorbell]>,
    ) -> Self {
        let mut slot_of = vec![NONE; processes].into_boxed_slice();
        for (k, (_, to, _)) in links.iter().enumerate() {
            slot_of[*to] = k as u32;
        }
        EdgeOutbox {
            me,
            neighbours: links.iter().map(|(_, to, _)| *to).collect(),
            sent: vec![0; links.len()],
            links: links
                .into_iter()
                .map(|(tx, to, bit)| Link { tx, to, bit })
                .collect(),
            slot_of,
            bells,
        }
    }

    /// Sends a marker of `id` on every outgoing channel. A channel whose receiver has stopped
    /// is skipped: that process takes no further part in any snapshot.
    pub(crate) fn broadcast_marker(&self, id: SnapshotId) {
        for link in &self.links {
            if link.tx.send(Envelope::Marker(id)).is_ok() {
                self.bells[link.to].ring(link.bit);
            }
        }
    }
}

impl<M> EdgeOutbox<M> {
    /// Destinations of the outgoing channels, in increasing order.
    pub(crate) fn neighbours(&self) -> &[ProcessId] {
        &self.neighbours
    }

    /// Sends an application message on the channel to `to`.
    #[inline]
    pub(crate) fn send(&mut self, to: ProcessId, message: M) -> Result<(), SendError<M>> {
        let slot = match self.slot_of.get(to) {
            Some(&slot) if slot != NONE => slot as usize,
            _ => {
                return Err(SendError::NotNeighbour {
                    from: self.me,
                    to,
                    message,
                })
            }
        };
        let link = &self.links[slot];
        let bell = &self.bells[link.to];
        if bell.is_closed() {
            return Err(SendError::Disconnected {
                from: self.me,
                to,
                message,
            });
        }
        let seq = self.sent[slot] + 1;
        // The receiver keeps its channels until shutdown (what is left is reported as
        // undelivered), so this send cannot fail.
        if link.tx.send(Envelope::Message { seq, message }).is_ok() {
            self.sent[slot] = seq;
            bell.ring(link.bit);
        }
        Ok(())
    }
}
