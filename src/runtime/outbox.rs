//! The runtime's side of sending: one crossbeam sender per outgoing edge, and the receiver's
//! doorbell to ring. Numbering and counting messages is the host's (`outgoing.rs`); this only
//! moves envelopes.

use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::envelope::Envelope;
use crate::runtime::doorbell::{BitPlace, Doorbell};
use crate::topology::ProcessId;

/// One outgoing channel (32 bytes): all a send reads besides the receiver's doorbell.
struct Link<M> {
    tx: Sender<Envelope<M>>,
    to: u32,
    /// The channel's bit in the receiver's doorbell.
    place: BitPlace,
}

/// The process's outgoing edge channels, indexed by local outgoing number.
pub(crate) struct EdgeOutbox<M> {
    links: Vec<Link<M>>,
    bells: Arc<[Doorbell]>,
}

impl<M> EdgeOutbox<M> {
    /// `links`: (sender, destination, bit at the destination), in local outgoing order.
    pub(crate) fn new(
        links: Vec<(Sender<Envelope<M>>, ProcessId, usize)>,
        bells: Arc<[Doorbell]>,
    ) -> Self {
        EdgeOutbox {
            links: links
                .into_iter()
                .map(|(tx, to, bit)| Link {
                    tx,
                    to: u32::try_from(to).expect("process ids fit in 32 bits"),
                    place: BitPlace::of(bit),
                })
                .collect(),
            bells,
        }
    }

    /// The destination of local outgoing channel `slot`.
    pub(crate) fn destination(&self, slot: usize) -> ProcessId {
        self.links[slot].to as usize
    }

    /// Puts `envelope` on local outgoing channel `slot` and rings the receiver; hands it back
    /// if the receiver has failed (its doorbell is closed).
    #[inline(always)]
    pub(crate) fn push(&self, slot: usize, envelope: Envelope<M>) -> Result<(), Envelope<M>> {
        let link = &self.links[slot];
        let bell = &self.bells[link.to as usize];
        if bell.is_closed() {
            return Err(envelope);
        }
        // The receiver keeps its channels until shutdown (what is left is reported as
        // undelivered), so the send itself fails only if its thread is gone.
        link.tx.send(envelope).map_err(|e| e.into_inner())?;
        bell.ring_at(link.place);
        Ok(())
    }
}
