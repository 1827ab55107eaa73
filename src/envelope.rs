//! What travels on a channel: an application message with its number on the channel, or a
//! marker. Both drivers carry exactly this, so markers and messages share each channel's FIFO
//! order.

use crate::ids::SnapshotId;

/// What travels on a channel. Markers share the channel with application messages, so FIFO
/// order between them is the channel's own.
#[derive(Clone, Debug)]
pub(crate) enum Envelope<M> {
    /// An application message; `seq` is its number on this channel, from 1.
    Message { seq: u64, message: M },
    /// A marker of a snapshot.
    Marker(SnapshotId),
}
