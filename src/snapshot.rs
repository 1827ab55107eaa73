//! What a snapshot is made of: its id, each process's local part, the assembled global
//! snapshot, and the exact consistent-cut check ([`algorithm`](crate::algorithm), "Correctness").

use std::sync::Arc;
use std::time::Duration;

use crate::error::{plural, CutError, Error};
pub(crate) use crate::ids::IdMap;
pub use crate::ids::SnapshotId;
use crate::ids::{Channel, ProcessId};

/// How a snapshot ended: the global snapshot, or why it could not complete.
///
/// The snapshot comes as an `Arc` on purpose: the same snapshot goes to every ticket waiting on
/// it and every subscriber, and a snapshot can be large (every state, every recorded message),
/// so each gets a pointer rather than a copy. `Arc::try_unwrap` takes it out when you hold the
/// only one; `(*snapshot).clone()` copies it when you need your own (`M` and `S` cloneable).
pub type SnapshotOutcome<M, S> = Result<Arc<GlobalSnapshot<M, S>>, Error>;

/// An application message recorded as in flight on a channel.
///
/// The message is behind an `Arc`: a message recorded by several concurrent snapshots is stored
/// once and shared by all of them.
#[derive(Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct RecordedMessage<M> {
    /// Its sequence number on its channel: the `seq`-th message sent on that channel, from 1.
    pub seq: u64,
    /// The message.
    pub message: Arc<M>,
}

// Manual impl: cloning shares the message, so `M: Clone` is not needed.
impl<M> Clone for RecordedMessage<M> {
    fn clone(&self) -> Self {
        RecordedMessage {
            seq: self.seq,
            message: Arc::clone(&self.message),
        }
    }
}

/// One process's part of one snapshot, as the marker core hands it over when the process has
/// recorded its state and received the snapshot's marker on every incoming channel.
///
/// Channel vectors are indexed by the process's local channel numbers (see
/// [`Wiring`](crate::topology::Wiring)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LocalSnapshot<M, S> {
    /// The snapshot.
    pub id: SnapshotId,
    /// The process this part belongs to.
    pub process: ProcessId,
    /// Whether this process started the snapshot.
    pub initiated: bool,
    /// The process's recorded state.
    pub state: S,
    /// By local outgoing channel: messages sent on it when the state was recorded.
    pub sent: Vec<u64>,
    /// By local incoming channel: messages received on it when the state was recorded.
    pub received: Vec<u64>,
    /// By local incoming channel: the messages recorded as in flight, in arrival order.
    pub recorded: Vec<Vec<RecordedMessage<M>>>,
}

/// One channel's part of a global snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ChannelSnapshot<M> {
    /// The channel.
    pub channel: Channel,
    /// Messages the sender had sent on it when the sender recorded its state.
    pub sent: u64,
    /// Messages the receiver had received on it when the receiver recorded its state.
    pub received: u64,
    /// The channel's recorded state: the messages in flight across the cut, in arrival order.
    pub messages: Vec<RecordedMessage<M>>,
}

/// A completed global snapshot: every process's recorded state and every channel's recorded
/// messages (empty channels included), with when and by whom it was started.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct GlobalSnapshot<M, S> {
    /// Its id.
    pub id: SnapshotId,
    /// The process that started it.
    pub initiator: ProcessId,
    /// When it started, measured from the driver's start (the runtime's `build`).
    pub started_at: Duration,
    /// When the last process's part arrived, on the same clock.
    pub completed_at: Duration,
    /// When each process recorded its state, on the same clock, by process id. Empty for a
    /// snapshot made by hand or read from a checkpoint written before this field existed.
    #[cfg_attr(feature = "serde", serde(default))]
    pub recorded_at: Vec<Duration>,
    /// Each process's recorded state, by process id.
    pub states: Vec<S>,
    /// Each channel's part, in the topology's channel order.
    pub channels: Vec<ChannelSnapshot<M>>,
}

/// What a snapshot cost: its time, the markers it took, what it recorded (see
/// [`GlobalSnapshot::cost`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotCost {
    /// From start to the last part's arrival.
    pub latency: Duration,
    /// By process: when it recorded its state, after the start (empty if not known).
    pub recorded_after: Vec<Duration>,
    /// Markers sent: one on every channel.
    pub markers: usize,
    /// Application messages recorded as in flight.
    pub messages: usize,
    /// An estimate of the bytes recorded: the states and messages themselves, shallow
    /// (`size_of` each; what they own on the heap is not counted), shared messages once.
    pub bytes: usize,
}

impl std::fmt::Display for SnapshotCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} us, {}, {} recorded (~{})",
            self.latency.as_micros(),
            plural(self.markers, "marker"),
            plural(self.messages, "message"),
            plural(self.bytes, "byte")
        )?;
        if !self.recorded_after.is_empty() {
            let at: Vec<String> = self
                .recorded_after
                .iter()
                .map(|d| format!("+{}", d.as_micros()))
                .collect();
            write!(f, ", recorded at {} us", at.join(" "))?;
        }
        Ok(())
    }
}

impl<M, S> GlobalSnapshot<M, S> {
    /// What this snapshot cost (see [`SnapshotCost`]).
    pub fn cost(&self) -> SnapshotCost {
        let messages = self.channels.iter().map(|c| c.messages.len()).sum();
        SnapshotCost {
            latency: self.latency(),
            recorded_after: self
                .recorded_at
                .iter()
                .map(|t| t.saturating_sub(self.started_at))
                .collect(),
            markers: self.channels.len(),
            messages,
            bytes: self.states.len() * std::mem::size_of::<S>()
                + messages * (std::mem::size_of::<M>() + std::mem::size_of::<u64>()),
        }
    }

    /// Time from start to completion.
    pub fn latency(&self) -> Duration {
        self.completed_at.saturating_sub(self.started_at)
    }

    /// The part of the channel `from -> to`, if there is such a channel.
    pub fn channel(&self, from: ProcessId, to: ProcessId) -> Option<&ChannelSnapshot<M>> {
        self.channels
            .iter()
            .find(|c| c.channel == Channel::new(from, to))
    }

    /// Every recorded in-flight message with its channel, channel by channel, in arrival order.
    pub fn in_flight(&self) -> impl Iterator<Item = (Channel, &M)> + '_ {
        self.channels
            .iter()
            .flat_map(|c| c.messages.iter().map(move |m| (c.channel, &*m.message)))
    }

    /// Sums a quantity over the whole cut: `of_state` over every recorded process state plus
    /// `of_message` over every recorded in-flight message. For a conserved quantity (money,
    /// tokens) this is the total to compare with the initial one.
    pub fn total<T: std::iter::Sum<T>>(
        &self,
        of_state: impl Fn(&S) -> T,
        of_message: impl Fn(&M) -> T,
    ) -> T {
        let states: T = self.states.iter().map(of_state).sum();
        let messages: T = self.in_flight().map(|(_, m)| of_message(m)).sum();
        [states, messages].into_iter().sum()
    }

    /// Checks the consistent-cut criterion ([`algorithm`](crate::algorithm), "Correctness")
    /// exactly: on every channel,
    /// `received <= sent` (no orphan message), and the recorded messages are exactly those
    /// numbered `received+1 ..= sent`, in order. O(channels + recorded messages).
    pub fn verify(&self) -> Result<(), CutError> {
        self.channels.iter().try_for_each(ChannelSnapshot::verify)
    }
}

impl<M> ChannelSnapshot<M> {
    /// Channel `channel` with nothing sent, received or recorded: where an assembly starts.
    pub(crate) fn empty(channel: Channel) -> Self {
        ChannelSnapshot {
            channel,
            sent: 0,
            received: 0,
            messages: Vec::new(),
        }
    }

    /// Checks this channel's part of the consistent-cut criterion (see
    /// [`GlobalSnapshot::verify`]).
    pub fn verify(&self) -> Result<(), CutError> {
        let (sent, received) = (self.sent, self.received);
        if received > sent {
            return Err(CutError::Orphan {
                channel: self.channel,
                sent,
                received,
            });
        }
        let count = sent - received;
        // Counted from `received`, never as `received + 1..=sent`: a checkpoint file may hold
        // any counters, `u64::MAX` too, and `received + 1` would overflow. `received + k` for
        // `k <= count` is at most `sent`.
        let want = (1..=count).map(|k| received + k);
        let matches = self.messages.len() as u64 == count
            && self
                .messages
                .iter()
                .zip(want.clone())
                .all(|(m, s)| m.seq == s);
        if matches {
            return Ok(());
        }
        // Name the first position that differs.
        let mut expected = want.map(Some).chain(std::iter::repeat(None));
        let mut found = self
            .messages
            .iter()
            .map(|m| Some(m.seq))
            .chain(std::iter::repeat(None));
        let index = (0..)
            .find(|_| expected.next() != found.next())
            .expect("a difference exists");
        let expected = ((index as u64) < count).then(|| received + (index as u64 + 1));
        Err(CutError::WrongRecording {
            channel: self.channel,
            sent,
            received,
            index,
            expected,
            found: self.messages.get(index).map(|m| m.seq),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(sent: u64, received: u64, seqs: &[u64]) -> ChannelSnapshot<()> {
        ChannelSnapshot {
            channel: Channel::new(0, 1),
            sent,
            received,
            messages: seqs
                .iter()
                .map(|&seq| RecordedMessage {
                    seq,
                    message: Arc::new(()),
                })
                .collect(),
        }
    }

    #[test]
    fn random_ids_are_v4_and_distinct() {
        let ids: std::collections::HashSet<SnapshotId> =
            (0..10_000).map(|_| SnapshotId::random()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.uuid().get_version_num() == 4));
    }

    #[test]
    fn exact_recording_verifies() {
        channel(5, 2, &[3, 4, 5]).verify().unwrap();
        channel(0, 0, &[]).verify().unwrap();
        channel(7, 7, &[]).verify().unwrap();
    }

    /// Counters at the top of `u64` (a checkpoint file may hold any) verify, or are named, with
    /// no overflow (before: "attempt to add with overflow").
    #[test]
    fn counters_at_the_top_of_u64_do_not_overflow() {
        let max = u64::MAX;
        channel(max, max, &[]).verify().unwrap();
        channel(max, max - 1, &[max]).verify().unwrap();
        assert_eq!(
            channel(max, max, &[max]).verify(),
            Err(CutError::WrongRecording {
                channel: Channel::new(0, 1),
                sent: max,
                received: max,
                index: 0,
                expected: None,
                found: Some(max),
            })
        );
        assert_eq!(
            channel(max, max - 2, &[max]).verify(),
            Err(CutError::WrongRecording {
                channel: Channel::new(0, 1),
                sent: max,
                received: max - 2,
                index: 0,
                expected: Some(max - 1),
                found: Some(max),
            })
        );
    }

    #[test]
    fn orphan_is_named() {
        assert_eq!(
            channel(2, 3, &[]).verify(),
            Err(CutError::Orphan {
                channel: Channel::new(0, 1),
                sent: 2,
                received: 3
            })
        );
    }

    #[test]
    fn wrong_identity_with_right_count_is_caught() {
        // Right count, wrong messages: a count-only check would pass this.
        assert_eq!(
            channel(5, 2, &[3, 5, 4]).verify(),
            Err(CutError::WrongRecording {
                channel: Channel::new(0, 1),
                sent: 5,
                received: 2,
                index: 1,
                expected: Some(4),
                found: Some(5)
            })
        );
    }

    #[test]
    fn missing_and_extra_messages_are_caught() {
        let missing = channel(5, 2, &[3, 4]).verify().unwrap_err();
        assert!(matches!(
            missing,
            CutError::WrongRecording {
                index: 2,
                expected: Some(5),
                found: None,
                ..
            }
        ));
        let extra = channel(4, 2, &[3, 4, 5]).verify().unwrap_err();
        assert!(matches!(
            extra,
            CutError::WrongRecording {
                index: 2,
                expected: None,
                found: Some(5),
                ..
            }
        ));
    }

    #[test]
    fn total_sums_states_and_messages() {
        let snap = GlobalSnapshot {
            id: SnapshotId::random(),
            initiator: 0,
            started_at: Duration::ZERO,
            completed_at: Duration::from_millis(2),
            recorded_at: Vec::new(),
            states: vec![10u64, 20],
            channels: vec![ChannelSnapshot {
                channel: Channel::new(0, 1),
                sent: 1,
                received: 0,
                messages: vec![RecordedMessage {
                    seq: 1,
                    message: Arc::new(5u64),
                }],
            }],
        };
        assert_eq!(snap.total(|s| *s, |m| *m), 35);
        assert_eq!(snap.latency(), Duration::from_millis(2));
        assert!(snap.channel(1, 0).is_none());
        assert_eq!(snap.in_flight().count(), 1);
    }
}
