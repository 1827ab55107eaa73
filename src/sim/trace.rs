//! The simulator's event trace: one line of JSON per event, stable so that other tools (a later
//! picture of the run) can read it.
//!
//! Every line is an object with these fields, in this order:
//!
//! | field      | meaning |
//! |------------|---------|
//! | `step`     | simulated time of the event |
//! | `event`    | `send`, `receive` (application messages), `marker_send`, `marker_receive`, `record` (a process records its state for a snapshot), `complete` (the last part of a snapshot arrived) |
//! | `process`  | the process where it happened |
//! | `from`, `to` | the channel (`send`, `receive`, `marker_send`, `marker_receive` only) |
//! | `seq`      | the message's number on its channel (`send`, `receive` only) |
//! | `snapshot` | the snapshot's UUID (`marker_send`, `marker_receive`, `record`, `complete`) |
//! | `clock`    | the process's vector clock after the event, one entry per process |
//!
//! Vector clocks: every event at a process increments its own entry, except `marker_send`, which
//! belongs to the same turn as the process's `record` and shares its clock; a message or marker
//! carries its sender's clock, and its receipt first takes the entry-wise maximum. So the
//! `record` events of one snapshot are its cut, and the cut is consistent exactly when, for all
//! processes i and j, `clock(record_j)[i] <= clock(record_i)[i]`. A `complete` event is at the
//! process whose part came last.
//!
//! Example: `{"step":3,"event":"receive","process":1,"from":0,"to":1,"seq":1,"clock":[1,1,0]}`.

use std::fmt::{self, Write as _};

use crate::snapshot::SnapshotId;
use crate::topology::{Channel, ProcessId};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceKind {
    /// An application message was sent.
    Send,
    /// An application message was delivered.
    Receive,
    /// A marker was sent.
    MarkerSend,
    /// A marker arrived.
    MarkerReceive,
    /// A process recorded its state for a snapshot.
    Record,
    /// A snapshot's last part arrived.
    Complete,
}

impl TraceKind {
    fn name(self) -> &'static str {
        match self {
            TraceKind::Send => "send",
            TraceKind::Receive => "receive",
            TraceKind::MarkerSend => "marker_send",
            TraceKind::MarkerReceive => "marker_receive",
            TraceKind::Record => "record",
            TraceKind::Complete => "complete",
        }
    }
}

/// One event of a simulated run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// Simulated time.
    pub step: u64,
    /// What happened.
    pub kind: TraceKind,
    /// Where.
    pub process: ProcessId,
    /// On which channel, for sends and receipts.
    pub channel: Option<Channel>,
    /// The message's sequence number on its channel, for application messages.
    pub seq: Option<u64>,
    /// The snapshot, for markers, records and completions.
    pub snapshot: Option<SnapshotId>,
    /// The process's vector clock after the event.
    pub clock: Vec<u64>,
}

impl fmt::Display for TraceEvent {
    /// The event as one line of JSON (see the module documentation), without the newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = String::with_capacity(96);
        let _ = write!(
            line,
            "{{\"step\":{},\"event\":\"{}\",\"process\":{}",
            self.step,
            self.kind.name(),
            self.process
        );
        if let Some(c) = self.channel {
            let _ = write!(line, ",\"from\":{},\"to\":{}", c.from, c.to);
        }
        if let Some(seq) = self.seq {
            let _ = write!(line, ",\"seq\":{seq}");
        }
        if let Some(id) = self.snapshot {
            let _ = write!(line, ",\"snapshot\":\"{id}\"");
        }
        line.push_str(",\"clock\":[");
        for (i, t) in self.clock.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            let _ = write!(line, "{t}");
        }
        line.push_str("]}");
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_the_documented_json() {
        let e = TraceEvent {
            step: 3,
            kind: TraceKind::Receive,
            process: 1,
            channel: Some(Channel::new(0, 1)),
            seq: Some(1),
            snapshot: None,
            clock: vec![1, 1, 0],
        };
        assert_eq!(
            e.to_string(),
            r#"{"step":3,"event":"receive","process":1,"from":0,"to":1,"seq":1,"clock":[1,1,0]}"#
        );
        let id = SnapshotId(uuid::Uuid::from_u128(0xab));
        let r = TraceEvent {
            step: 0,
            kind: TraceKind::Record,
            process: 0,
            channel: None,
            seq: None,
            snapshot: Some(id),
            clock: vec![1],
        };
        assert_eq!(
            r.to_string(),
            format!(r#"{{"step":0,"event":"record","process":0,"snapshot":"{id}","clock":[1]}}"#)
        );
    }
}
