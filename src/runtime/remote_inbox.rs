//! What a process run by a cluster node receives from the other nodes: one crossbeam channel
//! (its inbox) that the node's link readers feed, each envelope with its channel, instead of one
//! channel per edge.
//!
//! Why one channel and not one per edge: a reader spreads a peer's traffic over every channel
//! from that peer's processes into this node's (256 at 16 processes a node), so each of its
//! sends went to a channel it had not touched for a while, and crossbeam's `send` missed the
//! cache on the channel's tail, the slot and the receivers' waker: 9% of the cluster's CPU at
//! 3 nodes x 16 processes, where the bare program's reader, sending to one inbox per process,
//! spent under 1% (`perf`, BENCHMARKS.md, "tenth round"). One inbox per process keeps those
//! lines hot.
//!
//! The channels stay channels: each edge keeps its order (one reader per peer feeds the inbox in
//! the order the peer wrote, and a marker's place in its channel is kept), and the event loop
//! still visits them one by one when that matters. A visit of the inbox delivers what it holds
//! in arrival order, straight to the process, for as long as nothing is parked and the visit's
//! pace allows (`pace.rs`: a batch, and the time budget). When the visit is cut, what is left in
//! the inbox is sorted into a queue per channel (parked) without running any callback, and
//! each channel with something parked is visited as any other ready channel (`rotation.rs`).
//! So a marker behind a slow channel's backlog in the inbox waits, as on its own channel, for
//! one visit of each other channel, not for the whole backlog; and under load with fast
//! callbacks, most envelopes go straight from the inbox to the process.
//!
//! Memory stays bounded: a channel's parked queue holds at most `bound` envelopes (the node's
//! `max_backlog`). An arrival for a full queue is held, and the inbox is not read past it until
//! the channel's visits make room; the readers hold back once the inbox itself holds
//! `max_backlog` (`link.rs`, `hold_back`).

use std::collections::VecDeque;

use crossbeam_channel::Receiver;

use crate::envelope::Envelope;
use crate::runtime::take::take;

/// An envelope from another node, with the local incoming number of its channel at the
/// receiving process.
pub(crate) struct Arrival<M> {
    /// The channel's local incoming number.
    pub(crate) channel: u32,
    /// The envelope.
    pub(crate) envelope: Envelope<M>,
}

/// The bit of the inbox in the doorbell of a process with `incoming` incoming channels: after
/// their bits and its control channel's.
pub(crate) fn inbox_bit(incoming: usize) -> usize {
    incoming + 1
}

/// One process's inbox from other nodes, and what it has parked by channel.
pub(crate) struct RemoteInbox<M> {
    rx: Receiver<Arrival<M>>,
    /// By local incoming number: envelopes taken from the inbox, waiting for their channel's
    /// visit (empty, and unallocated, for the channels from this node).
    parked: Vec<VecDeque<Envelope<M>>>,
    /// How many are parked, over all channels.
    parked_total: usize,
    /// An arrival taken from the inbox whose channel's queue was full: the next to park.
    held: Option<Arrival<M>>,
    /// The most envelopes one channel's queue holds.
    bound: usize,
}

/// A channel's queue emptied keeps its room up to this many envelopes (reused by the next
/// burst); past it, the room is given back.
const KEPT_CAPACITY: usize = 1024;

impl<M> RemoteInbox<M> {
    /// The inbox `rx` of a process with `incoming` incoming channels, parking at most `bound`
    /// envelopes a channel.
    pub(crate) fn new(rx: Receiver<Arrival<M>>, incoming: usize, bound: usize) -> Self {
        RemoteInbox {
            rx,
            parked: (0..incoming).map(|_| VecDeque::new()).collect(),
            parked_total: 0,
            held: None,
            bound: bound.max(1),
        }
    }

    /// Whether nothing is parked: the inbox may then deliver straight to the process.
    #[inline]
    pub(crate) fn nothing_parked(&self) -> bool {
        self.parked_total == 0
    }

    /// The next arrival, to deliver at once: only while nothing is parked (`nothing_parked`),
    /// else it would pass what is.
    #[inline]
    pub(crate) fn next_direct(&mut self) -> Option<Arrival<M>> {
        // A held arrival means a full queue, so something is parked.
        debug_assert!(self.parked_total == 0 && self.held.is_none());
        take(&self.rx)
    }

    /// Sorts what the inbox holds now into the channels' queues (at most what it held when
    /// called: a reader that keeps sending cannot keep this going), calling `arrived` with each
    /// channel whose queue was empty. Stops at a full queue, holding the arrival for it.
    pub(crate) fn sort(&mut self, mut arrived: impl FnMut(usize)) {
        let mut left = self.rx.len();
        loop {
            let arrival = match self.held.take() {
                Some(arrival) => arrival,
                None if left == 0 => return,
                None => {
                    left -= 1;
                    // Through the one read of the inbox (`take.rs`), as `next_direct` reads.
                    match take(&self.rx) {
                        Some(arrival) => arrival,
                        None => return,
                    }
                }
            };
            let queue = &mut self.parked[arrival.channel as usize];
            if queue.len() >= self.bound {
                self.held = Some(arrival);
                return;
            }
            if queue.is_empty() {
                arrived(arrival.channel as usize);
            }
            queue.push_back(arrival.envelope);
            self.parked_total += 1;
        }
    }

    /// Whether channel `i` has anything parked.
    #[inline]
    pub(crate) fn has_parked(&self, i: usize) -> bool {
        !self.parked[i].is_empty()
    }

    /// The oldest envelope parked for channel `i`.
    #[inline]
    pub(crate) fn take_parked(&mut self, i: usize) -> Option<Envelope<M>> {
        let queue = &mut self.parked[i];
        let envelope = queue.pop_front()?;
        self.parked_total -= 1;
        if queue.is_empty() && queue.capacity() > KEPT_CAPACITY {
            // A burst is over: its memory goes back, as a crossbeam channel's blocks do.
            *queue = VecDeque::new();
        }
        Some(envelope)
    }

    /// Whether the inbox waits for room in channel `i`'s queue and now has it: its next visit
    /// can go on sorting.
    pub(crate) fn room_for_held(&self, i: usize) -> bool {
        self.held
            .as_ref()
            .is_some_and(|h| h.channel as usize == i && self.parked[i].len() < self.bound)
    }

    /// Everything not delivered, by local incoming number, oldest first: what was parked, the
    /// arrival held, then what is still in the inbox (read as shutdown reads a channel).
    pub(crate) fn into_leftovers(
        mut self,
        read: impl Fn(&Receiver<Arrival<M>>) -> Vec<Arrival<M>>,
    ) -> Vec<VecDeque<Envelope<M>>> {
        let rest = self.held.take().into_iter().chain(read(&self.rx));
        for arrival in rest {
            if let Some(queue) = self.parked.get_mut(arrival.channel as usize) {
                queue.push_back(arrival.envelope);
            }
        }
        self.parked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SnapshotId;
    use std::num::NonZeroU64;

    fn message(seq: u64) -> Envelope<u64> {
        Envelope::Message {
            seq: NonZeroU64::new(seq).unwrap(),
            message: seq,
        }
    }

    fn seq(e: &Envelope<u64>) -> Option<u64> {
        match e {
            Envelope::Message { seq, .. } => Some(seq.get()),
            Envelope::Marker(_) => None,
        }
    }

    fn arrival(channel: u32, envelope: Envelope<u64>) -> Arrival<u64> {
        Arrival { channel, envelope }
    }

    #[test]
    fn arrivals_come_straight_while_nothing_is_parked_and_are_sorted_in_channel_order_after() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut inbox = RemoteInbox::new(rx, 3, 100);
        tx.send(arrival(0, message(1))).unwrap();
        assert_eq!(inbox.next_direct().map(|a| a.channel), Some(0));
        for (channel, s) in [(1, 1), (2, 1), (1, 2)] {
            tx.send(arrival(channel, message(s))).unwrap();
        }
        tx.send(arrival(2, Envelope::Marker(SnapshotId::random())))
            .unwrap();
        let mut arrived = Vec::new();
        inbox.sort(|c| arrived.push(c));
        assert!(inbox.held.is_none(), "everything was sorted");
        // Each channel is announced once, when its queue stops being empty.
        assert_eq!(arrived, vec![1, 2]);
        assert!(!inbox.nothing_parked());
        // Nothing comes straight past what is parked.
        tx.send(arrival(0, message(2))).unwrap();
        assert!(!inbox.nothing_parked());
        let one: Vec<_> = std::iter::from_fn(|| inbox.take_parked(1)).collect();
        assert_eq!(one.iter().map(seq).collect::<Vec<_>>(), [Some(1), Some(2)]);
        let two: Vec<_> = std::iter::from_fn(|| inbox.take_parked(2)).collect();
        assert_eq!(two.iter().map(seq).collect::<Vec<_>>(), [Some(1), None]);
        assert!(inbox.nothing_parked());
        assert_eq!(inbox.next_direct().map(|a| a.channel), Some(0));
    }

    #[test]
    fn a_full_queue_holds_the_inbox_until_its_channel_makes_room() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut inbox = RemoteInbox::new(rx, 2, 2);
        for s in 1..=3 {
            tx.send(arrival(0, message(s))).unwrap();
        }
        tx.send(arrival(1, message(1))).unwrap();
        inbox.sort(|_| {});
        assert!(inbox.held.is_some(), "channel 0's queue is full");
        // The third of channel 0 is held; channel 1's, behind it, stays in the inbox.
        assert!(!inbox.has_parked(1));
        assert!(!inbox.room_for_held(0));
        assert_eq!(inbox.take_parked(0).as_ref().and_then(seq), Some(1));
        assert!(inbox.room_for_held(0));
        assert!(!inbox.room_for_held(1));
        let mut arrived = Vec::new();
        inbox.sort(|c| arrived.push(c));
        assert!(inbox.held.is_none(), "everything was sorted");
        assert_eq!(arrived, vec![1]);
        let zero: Vec<_> = std::iter::from_fn(|| inbox.take_parked(0)).collect();
        assert_eq!(zero.iter().map(seq).collect::<Vec<_>>(), [Some(2), Some(3)]);
    }

    #[test]
    fn sorting_takes_only_what_the_inbox_held_when_it_began() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut inbox = RemoteInbox::new(rx, 1, 100);
        tx.send(arrival(0, message(1))).unwrap();
        let mut calls = 0;
        inbox.sort(|_| {
            calls += 1;
            // A reader that sends on while the process sorts.
            tx.send(arrival(0, message(2))).unwrap();
        });
        assert!(inbox.held.is_none());
        assert_eq!(calls, 1);
        assert_eq!(inbox.rx.len(), 1);
    }

    #[test]
    fn a_queue_emptied_after_a_burst_gives_its_memory_back() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut inbox = RemoteInbox::new(rx, 1, usize::MAX);
        for s in 1..=3_000 {
            tx.send(arrival(0, message(s))).unwrap();
        }
        inbox.sort(|_| {});
        assert!(inbox.held.is_none());
        assert!(inbox.parked[0].capacity() >= 3_000);
        let taken = std::iter::from_fn(|| inbox.take_parked(0)).count();
        assert_eq!(taken, 3_000);
        assert!(inbox.parked[0].capacity() <= KEPT_CAPACITY);
    }

    #[test]
    fn leftovers_are_parked_then_held_then_the_inbox_by_channel() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let mut inbox = RemoteInbox::new(rx, 2, 1);
        for (channel, s) in [(0, 1), (0, 2), (1, 1), (0, 3)] {
            tx.send(arrival(channel, message(s))).unwrap();
        }
        inbox.sort(|_| {});
        assert!(inbox.held.is_some(), "channel 0's queue is full");
        let left = inbox.into_leftovers(|rx| std::iter::from_fn(|| take(rx)).collect());
        let seqs = |q: &VecDeque<Envelope<u64>>| q.iter().map(seq).collect::<Vec<_>>();
        assert_eq!(seqs(&left[0]), [Some(1), Some(2), Some(3)]);
        assert_eq!(seqs(&left[1]), [Some(1)]);
    }
}
