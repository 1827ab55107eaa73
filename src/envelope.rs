//! What travels on a channel: an application message with its number on the channel, or a
//! marker. Both drivers carry exactly this, so markers and messages share each channel's FIFO
//! order.

use std::num::NonZeroU64;

use crate::ids::SnapshotId;

/// What travels on a channel. Markers share the channel with application messages, so FIFO
/// order between them is the channel's own.
///
/// `seq` is never 0, and saying so (`NonZeroU64`) lets the compiler keep the variant in `seq`'s
/// unused value: an envelope of a 16-byte message is 24 bytes instead of 32, so each channel
/// slot, and each message's share of the cache lines a send and a receipt touch, is smaller.
#[derive(Clone, Debug)]
pub(crate) enum Envelope<M> {
    /// An application message; `seq` is its number on this channel, from 1.
    Message { seq: NonZeroU64, message: M },
    /// A marker of a snapshot.
    Marker(SnapshotId),
}

impl<M> Envelope<M> {
    /// A message restored into its channel from a snapshot, with its number there. The number
    /// is at least 1: restoring checks the snapshot first (`restore::rebuild`), and its exact cut
    /// check allows only `received + 1 ..= sent`.
    pub(crate) fn restored(seq: u64, message: M) -> Self {
        Envelope::Message {
            seq: NonZeroU64::new(seq).expect("a verified snapshot numbers messages from 1"),
            message,
        }
    }
}

/// Why a driver did not take an envelope; it comes back with the reason.
pub(crate) enum Refused<M> {
    /// The receiver has failed and takes nothing more.
    Disconnected(Envelope<M>),
    /// It was for another node of a cluster and could not be encoded: the codec's reason.
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    Unencodable(Envelope<M>, String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_lives_in_the_sequence_numbers_niche() {
        // A 16-byte message: 8 for seq, 16 for the message, no separate tag.
        assert_eq!(std::mem::size_of::<Envelope<[u64; 2]>>(), 24);
        assert_eq!(std::mem::size_of::<Envelope<u64>>(), 24);
    }
}
