//! The event trace of a run, of the simulator or of the threaded runtime: one line of JSON per
//! event, stable so that other tools (the space-time diagram, ShiViz) can read it, and read back
//! by [`TraceEvent::from_str`](std::str::FromStr).
//!
//! Every line is an object with these fields, in this order:
//!
//! | field      | meaning |
//! |------------|---------|
//! | `step`     | when: the simulated step in a simulator's trace; microseconds since the runtime was built in a runtime's trace |
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

use crate::envelope::Envelope;
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

/// One event of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceEvent {
    /// When: the simulated step, or (in a runtime's trace) microseconds since the runtime was
    /// built.
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

/// What a trace notes of `envelope` going out (`sending`) or coming in: the event's kind, the
/// message's number on its channel, the marker's snapshot. Both drivers' traces use it.
pub(crate) fn envelope_event<M>(
    envelope: &Envelope<M>,
    sending: bool,
) -> (TraceKind, Option<u64>, Option<SnapshotId>) {
    match (envelope, sending) {
        (Envelope::Message { seq, .. }, true) => (TraceKind::Send, Some(seq.get()), None),
        (Envelope::Message { seq, .. }, false) => (TraceKind::Receive, Some(seq.get()), None),
        (Envelope::Marker(id), true) => (TraceKind::MarkerSend, None, Some(*id)),
        (Envelope::Marker(id), false) => (TraceKind::MarkerReceive, None, Some(*id)),
    }
}

/// A trace put together from each process's own events (the threaded runtime's trace; see
/// [`RuntimeBuilder::trace`](crate::RuntimeBuilder::trace)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Trace {
    /// The events, by time (ties in an order that respects causality), with vector clocks.
    pub events: Vec<TraceEvent>,
    /// Events recorded but left out: past a process's buffer, or after an event that could not
    /// be placed (a receipt whose send was left out), so that what is kept is a consistent
    /// prefix of the run: every receipt in it has its send in it.
    pub left_out: u64,
}

impl Trace {
    /// Writes the events as JSON Lines (see [`TraceEvent`]).
    pub fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        for event in &self.events {
            writeln!(out, "{event}")?;
        }
        Ok(())
    }
}

/// What a receipt is matched to its send by: the channel and the message's number, or the
/// channel and the marker's snapshot.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Message(Channel, u64),
    Marker(Channel, SnapshotId),
}

fn key(e: &TraceEvent) -> Option<Key> {
    let channel = e.channel?;
    match e.kind {
        TraceKind::Send | TraceKind::Receive => Some(Key::Message(channel, e.seq?)),
        TraceKind::MarkerSend | TraceKind::MarkerReceive => Some(Key::Marker(channel, e.snapshot?)),
        TraceKind::Record | TraceKind::Complete => None,
    }
}

/// Puts together a trace from each process's events in its own order (their `clock` ignored):
/// computes the vector clocks as the simulator does (see the module documentation) by playing
/// the processes forward, a receipt only once its send has been played. A receipt whose send
/// is not there blocks its process: it and what follows are left out (counted in
/// [`Trace::left_out`], with `dropped`, events never recorded), which keeps the result a
/// consistent prefix however the per-process buffers were cut. `sent_before(channel, seq)`:
/// whether that message was in the channel before the run (restored from a snapshot); its
/// receipt needs no send.
pub(crate) fn assemble(
    local: Vec<Vec<TraceEvent>>,
    dropped: u64,
    sent_before: impl Fn(Channel, u64) -> bool,
) -> Trace {
    let n = local.len();
    let mut next = vec![0; n];
    let mut clocks = vec![vec![0u64; n]; n];
    let mut sent: std::collections::HashMap<Key, Vec<u64>> = std::collections::HashMap::new();
    let mut events = Vec::with_capacity(local.iter().map(Vec::len).sum());
    let mut progressed = true;
    while progressed {
        progressed = false;
        for p in 0..n {
            while let Some(event) = local[p].get(next[p]) {
                let theirs = match (event.kind, key(event)) {
                    (TraceKind::Receive | TraceKind::MarkerReceive, Some(k)) => {
                        match sent.remove(&k) {
                            Some(clock) => Some(clock),
                            None if matches!(k, Key::Message(c, seq) if sent_before(c, seq)) => {
                                None
                            }
                            None => break,
                        }
                    }
                    _ => None,
                };
                let clock = &mut clocks[p];
                if let Some(theirs) = theirs {
                    for (mine, t) in clock.iter_mut().zip(&theirs) {
                        *mine = (*mine).max(*t);
                    }
                }
                // As in the simulator: a marker goes out in its record's turn, sharing its clock.
                if event.kind != TraceKind::MarkerSend {
                    clock[p] += 1;
                }
                let mut placed = event.clone();
                placed.process = p;
                placed.clock = clock.clone();
                if matches!(event.kind, TraceKind::Send | TraceKind::MarkerSend) {
                    if let Some(k) = key(event) {
                        sent.insert(k, placed.clock.clone());
                    }
                }
                events.push(placed);
                next[p] += 1;
                progressed = true;
            }
        }
    }
    let blocked: usize = local.iter().zip(&next).map(|(l, &k)| l.len() - k).sum();
    // Stable: equal times keep the causal order they were placed in.
    events.sort_by_key(|e: &TraceEvent| e.step);
    Trace {
        events,
        left_out: dropped + blocked as u64,
    }
}

/// A line that is not a trace event in the documented format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseTraceError(String);

impl fmt::Display for ParseTraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a trace event: {}", self.0)
    }
}

impl std::error::Error for ParseTraceError {}

impl TraceKind {
    fn from_name(name: &str) -> Option<Self> {
        [
            TraceKind::Send,
            TraceKind::Receive,
            TraceKind::MarkerSend,
            TraceKind::MarkerReceive,
            TraceKind::Record,
            TraceKind::Complete,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// One value of a trace line: the format has numbers, strings and arrays of numbers only.
enum Value<'a> {
    Number(u64),
    Text(&'a str),
    Numbers(Vec<u64>),
}

/// Reads a flat JSON object of the trace's format (no nesting, no escapes: none of its strings
/// need them) into its fields, in order.
fn fields(line: &str) -> Option<Vec<(&str, Value<'_>)>> {
    let mut rest = line.trim().strip_prefix('{')?.strip_suffix('}')?.trim();
    let mut out = Vec::new();
    while !rest.is_empty() {
        let after_quote = rest.strip_prefix('"')?;
        let end = after_quote.find('"')?;
        let key = &after_quote[..end];
        rest = after_quote[end + 1..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start();
        let (value, tail) = if let Some(s) = rest.strip_prefix('"') {
            let end = s.find('"')?;
            (Value::Text(&s[..end]), &s[end + 1..])
        } else if let Some(s) = rest.strip_prefix('[') {
            let end = s.find(']')?;
            let numbers = s[..end]
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| t.parse().ok())
                .collect::<Option<Vec<u64>>>()?;
            (Value::Numbers(numbers), &s[end + 1..])
        } else {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            (Value::Number(rest[..end].parse().ok()?), &rest[end..])
        };
        out.push((key, value));
        rest = tail.trim_start();
        if let Some(t) = rest.strip_prefix(',') {
            rest = t.trim_start();
        } else if !rest.is_empty() {
            return None;
        }
    }
    Some(out)
}

impl std::str::FromStr for TraceEvent {
    type Err = ParseTraceError;

    /// Reads one line as [`Display`](fmt::Display) writes it (the fields in any order).
    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let bad = || ParseTraceError(line.to_string());
        let mut event = TraceEvent {
            step: 0,
            kind: TraceKind::Send,
            process: 0,
            channel: None,
            seq: None,
            snapshot: None,
            clock: Vec::new(),
        };
        let (mut kind, mut step, mut process, mut from, mut to) = (None, None, None, None, None);
        for (key, value) in fields(line).ok_or_else(bad)? {
            match (key, value) {
                ("step", Value::Number(n)) => step = Some(n),
                ("event", Value::Text(t)) => kind = TraceKind::from_name(t),
                ("process", Value::Number(n)) => process = Some(n as ProcessId),
                ("from", Value::Number(n)) => from = Some(n as ProcessId),
                ("to", Value::Number(n)) => to = Some(n as ProcessId),
                ("seq", Value::Number(n)) => event.seq = Some(n),
                ("snapshot", Value::Text(t)) => {
                    event.snapshot = Some(SnapshotId(uuid::Uuid::parse_str(t).map_err(|_| bad())?))
                }
                ("clock", Value::Numbers(c)) => event.clock = c,
                _ => return Err(bad()),
            }
        }
        event.kind = kind.ok_or_else(bad)?;
        event.step = step.ok_or_else(bad)?;
        event.process = process.ok_or_else(bad)?;
        event.channel = match (from, to) {
            (Some(from), Some(to)) => Some(Channel::new(from, to)),
            (None, None) => None,
            _ => return Err(bad()),
        };
        Ok(event)
    }
}

/// Reads a whole trace in JSON Lines (blank lines skipped); the error names the line (from 1).
pub fn parse(text: &str) -> Result<Vec<TraceEvent>, (usize, ParseTraceError)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(k, l)| l.parse().map_err(|e| (k + 1, e)))
        .collect()
}

pub mod shiviz;
pub mod svg;

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(
        step: u64,
        kind: TraceKind,
        channel: Option<(usize, usize)>,
        seq: Option<u64>,
    ) -> TraceEvent {
        TraceEvent {
            step,
            kind,
            process: 0,
            channel: channel.map(|(f, t)| Channel::new(f, t)),
            seq,
            snapshot: None,
            clock: Vec::new(),
        }
    }

    #[test]
    fn assembling_computes_clocks_and_keeps_a_consistent_prefix() {
        use TraceKind::{Receive, Send};
        // 0 sends two messages to 1; 1 receives both and replies; but 0's buffer lost its
        // second send, so 1's second receipt and everything after it is left out.
        let zero = vec![
            ev(1, Send, Some((0, 1)), Some(1)),
            ev(5, Receive, Some((1, 0)), Some(1)),
        ];
        let one = vec![
            ev(2, Receive, Some((0, 1)), Some(1)),
            ev(3, Receive, Some((0, 1)), Some(2)),
            ev(4, Send, Some((1, 0)), Some(1)),
        ];
        let trace = assemble(vec![zero.clone(), one.clone()], 1, |_, _| false);
        let clocks: Vec<(u64, Vec<u64>)> = trace
            .events
            .iter()
            .map(|e| (e.step, e.clock.clone()))
            .collect();
        assert_eq!(clocks, [(1, vec![1, 0]), (2, vec![1, 1])]);
        // 0's receipt of the reply (never sent, as far as the trace knows) and 1's two events.
        assert_eq!(trace.left_out, 1 + 3);
        // With the second message restored into the channel before the run, all of it fits.
        let trace = assemble(vec![zero, one], 0, |c, seq| {
            c == Channel::new(0, 1) && seq == 2
        });
        let clocks: Vec<Vec<u64>> = trace.events.iter().map(|e| e.clock.clone()).collect();
        assert_eq!(
            clocks,
            [vec![1, 0], vec![1, 1], vec![1, 2], vec![1, 3], vec![2, 3]]
        );
        assert_eq!(trace.left_out, 0);
    }

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
        for event in [e, r] {
            assert_eq!(event.to_string().parse::<TraceEvent>().unwrap(), event);
        }
        let text = "\n{\"step\":1,\"event\":\"send\",\"process\":0,\"from\":0,\"to\":1,\"seq\":1,\"clock\":[1,0]}\n\n{\"step\":2,\"event\":\"sent\"}";
        let (line, _) = parse(text).unwrap_err();
        assert_eq!(line, 4);
        for bad in [
            "",
            "{",
            "{\"step\":1}",
            "{\"step\":x,\"event\":\"send\",\"process\":0,\"clock\":[]}",
            "{\"step\":1,\"event\":\"send\",\"process\":0,\"from\":1,\"clock\":[]}",
        ] {
            assert!(bad.parse::<TraceEvent>().is_err(), "{bad}");
        }
    }
}
