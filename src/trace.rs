//! The event trace of a run, of the simulator or of the threaded runtime: one line of JSON per
//! event, stable so that other tools (the space-time diagram, ShiViz) can read it, and read back
//! by [`parse`].
//!
//! # Format version 1
//!
//! The first line is a header ([`TraceHeader`]) that says what the events cannot: which driver
//! wrote the trace, what its time counts, and what it left out. All of these fields are there,
//! in this order:
//!
//! | field      | meaning |
//! |------------|---------|
//! | `trace`    | the format's version: `1` ([`FORMAT_VERSION`]); a reader refuses a later one |
//! | `driver`   | `simulator` or `runtime` |
//! | `unit`     | what `step` counts: `steps` (the simulator's) or `us` (microseconds since the runtime was built) |
//! | `left_out` | events that happened but are not in the trace: past a process's event cap ([`RuntimeBuilder::trace`](crate::RuntimeBuilder::trace)), or after one that could not be kept with them; always 0 from the simulator |
//! | `snapshots` | snapshots the writer saw an event of, whether kept or left out |
//! | `snapshots_partial` | of those, the ones with some of their events in the trace but not all (a cut, markers or the completion missing) |
//! | `snapshots_absent` | of those, the ones with none of their events in the trace |
//!
//! Example: `{"trace":1,"driver":"runtime","unit":"us","left_out":0,"snapshots":2,"snapshots_partial":0,"snapshots_absent":0}`.
//! A reader ignores header fields it does not know, so a later writer can add some without a
//! new version. A trace written before version 1 has no header: its first line is an event, and
//! [`parse`] still reads it (with [`TraceFile::header`] `None`: the unit and what was left out
//! are then unknown).
//!
//! Every other line is an event, an object with these fields, in this order:
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

use std::collections::BTreeSet;
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

/// The version of the trace format that [`Trace::write`] writes and [`parse`] reads (see the
/// [module documentation](self)).
pub const FORMAT_VERSION: u64 = 1;

/// Which driver wrote a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Driver {
    /// The deterministic simulator ([`crate::sim`]).
    Simulator,
    /// The threaded runtime ([`crate::Runtime`]).
    Runtime,
}

impl Driver {
    /// The name the header uses: `simulator`, `runtime`.
    pub fn name(self) -> &'static str {
        match self {
            Driver::Simulator => "simulator",
            Driver::Runtime => "runtime",
        }
    }

    /// What this driver's `step` counts.
    pub fn unit(self) -> TimeUnit {
        match self {
            Driver::Simulator => TimeUnit::Steps,
            Driver::Runtime => TimeUnit::Micros,
        }
    }
}

/// What a trace's `step` counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// The simulator's steps: an order, with delays, but no duration.
    Steps,
    /// Microseconds since the runtime was built.
    Micros,
}

impl TimeUnit {
    /// The name the header uses, and the diagram's default label: `steps`, `us`.
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Steps => "steps",
            TimeUnit::Micros => "us",
        }
    }
}

/// What a trace says about itself on its first line (see the [module documentation](self)):
/// who wrote it, what its time counts, and what it left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceHeader {
    /// The driver that wrote it.
    pub driver: Driver,
    /// What its `step` counts.
    pub unit: TimeUnit,
    /// Events that happened but are not in the trace (see [`RuntimeBuilder::trace`](crate::RuntimeBuilder::trace)).
    pub left_out: u64,
    /// Snapshots the writer saw an event of, kept or left out.
    pub snapshots: u64,
    /// Snapshots with some of their events in the trace, not all.
    pub snapshots_partial: u64,
    /// Snapshots with none of their events in the trace.
    pub snapshots_absent: u64,
}

impl TraceHeader {
    /// The header of a trace that left nothing out: `driver`'s unit, and the snapshots `events`
    /// have an event of.
    pub fn whole(driver: Driver, events: &[TraceEvent]) -> Self {
        let snapshots: std::collections::BTreeSet<SnapshotId> =
            events.iter().filter_map(|e| e.snapshot).collect();
        TraceHeader {
            driver,
            unit: driver.unit(),
            left_out: 0,
            snapshots: snapshots.len() as u64,
            snapshots_partial: 0,
            snapshots_absent: 0,
        }
    }

    /// Snapshots not wholly in the trace: partial or absent.
    pub fn snapshots_left_out(&self) -> u64 {
        self.snapshots_partial.saturating_add(self.snapshots_absent)
    }

    /// What the trace left out, in words, for a person reading a diagram or a log; `None` if it
    /// left out nothing.
    pub fn shortfall(&self) -> Option<String> {
        if self.left_out == 0 && self.snapshots_left_out() == 0 {
            return None;
        }
        let events = match self.left_out {
            1 => "1 event".to_string(),
            n => format!("{n} events"),
        };
        let snapshots = match self.snapshots_left_out() {
            0 => "every snapshot is wholly in it".to_string(),
            k => format!(
                "{k} of the run's {} snapshots {} not wholly in it ({} in part, {} not at all)",
                self.snapshots,
                if k == 1 { "is" } else { "are" },
                self.snapshots_partial,
                self.snapshots_absent
            ),
        };
        Some(format!(
            "the trace left out {events} (past the per-process event cap); {snapshots}"
        ))
    }
}

impl fmt::Display for TraceHeader {
    /// The header as one line of JSON (see the module documentation), without the newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{\"trace\":{FORMAT_VERSION},\"driver\":\"{}\",\"unit\":\"{}\",\"left_out\":{},\
             \"snapshots\":{},\"snapshots_partial\":{},\"snapshots_absent\":{}}}",
            self.driver.name(),
            self.unit.name(),
            self.left_out,
            self.snapshots,
            self.snapshots_partial,
            self.snapshots_absent
        )
    }
}

impl std::str::FromStr for TraceHeader {
    type Err = ParseTraceError;

    /// Reads a header line as [`Display`](fmt::Display) writes it (the fields in any order,
    /// fields it does not know ignored).
    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let bad = || ParseTraceError::BadHeader(line.to_string());
        let fields = fields(line).ok_or_else(bad)?;
        let field = |name: &str| fields.iter().find(|(key, _)| *key == name).map(|(_, v)| v);
        // The version first: a later version may change any other field.
        match field("trace") {
            Some(Value::Number(FORMAT_VERSION)) => {}
            Some(Value::Number(later)) => return Err(ParseTraceError::UnsupportedVersion(*later)),
            _ => return Err(bad()),
        }
        let text = |name: &str| match field(name) {
            Some(Value::Text(t)) => Some(*t),
            _ => None,
        };
        let number = |name: &str| match field(name) {
            Some(Value::Number(n)) => Some(*n),
            _ => None,
        };
        let driver = match text("driver") {
            Some("simulator") => Driver::Simulator,
            Some("runtime") => Driver::Runtime,
            _ => return Err(bad()),
        };
        let unit = match text("unit") {
            Some("steps") => TimeUnit::Steps,
            Some("us") => TimeUnit::Micros,
            _ => return Err(bad()),
        };
        let header = TraceHeader {
            driver,
            unit,
            left_out: number("left_out").ok_or_else(bad)?,
            snapshots: number("snapshots").ok_or_else(bad)?,
            snapshots_partial: number("snapshots_partial").ok_or_else(bad)?,
            snapshots_absent: number("snapshots_absent").ok_or_else(bad)?,
        };
        match header
            .snapshots_partial
            .checked_add(header.snapshots_absent)
        {
            Some(sum) if sum <= header.snapshots => {}
            _ => return Err(bad()),
        }
        Ok(header)
    }
}

/// Writes `header`, then `events`, as JSON Lines: the one writer of both drivers' traces.
pub(crate) fn write_lines(
    header: &TraceHeader,
    events: &[TraceEvent],
    out: &mut impl std::io::Write,
) -> std::io::Result<()> {
    writeln!(out, "{header}")?;
    for event in events {
        writeln!(out, "{event}")?;
    }
    Ok(())
}

/// A trace put together from each process's own events (the threaded runtime's trace; see
/// [`RuntimeBuilder::trace`](crate::RuntimeBuilder::trace)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// Who wrote it, and what it left out: [`TraceHeader::left_out`] counts events recorded but
    /// left out, past a process's buffer or after an event that could not be placed (a receipt
    /// whose send was left out), so that what is kept is a consistent prefix of the run: every
    /// receipt in it has its send in it.
    pub header: TraceHeader,
    /// The events, by time (ties in an order that respects causality), with vector clocks.
    pub events: Vec<TraceEvent>,
}

impl Trace {
    /// Writes the header, then the events, as JSON Lines (see the [module
    /// documentation](self)).
    pub fn write(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        write_lines(&self.header, &self.events, out)
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
/// [`TraceHeader::left_out`], with `dropped`, events never recorded), which keeps the result a
/// consistent prefix however the per-process buffers were cut. `dropped_snapshots`: the
/// snapshots of the events never recorded. `sent_before(channel, seq)`: whether that message
/// was in the channel before the run (restored from a snapshot); its receipt needs no send.
pub(crate) fn assemble(
    local: Vec<Vec<TraceEvent>>,
    dropped: u64,
    dropped_snapshots: &BTreeSet<SnapshotId>,
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
    // A snapshot is wholly in the trace unless one of its own events is left out: every
    // message it recorded was received before a marker receipt of its, and each process keeps
    // a prefix of its events, so those messages are in the trace whenever its markers are.
    let kept: BTreeSet<SnapshotId> = events.iter().filter_map(|e| e.snapshot).collect();
    let mut left_out: BTreeSet<SnapshotId> = dropped_snapshots.clone();
    for (l, &k) in local.iter().zip(&next) {
        left_out.extend(l[k..].iter().filter_map(|e| e.snapshot));
    }
    let partial = left_out.intersection(&kept).count() as u64;
    let snapshots = kept.union(&left_out).count() as u64;
    // Stable: equal times keep the causal order they were placed in.
    events.sort_by_key(|e: &TraceEvent| e.step);
    Trace {
        header: TraceHeader {
            driver: Driver::Runtime,
            unit: TimeUnit::Micros,
            left_out: dropped + blocked as u64,
            snapshots,
            snapshots_partial: partial,
            snapshots_absent: left_out.len() as u64 - partial,
        },
        events,
    }
}

/// A line that is not part of a trace in the documented format.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseTraceError {
    /// Not a trace event (the line).
    NotAnEvent(String),
    /// A header (it has a `trace` field) with a field missing or malformed (the line).
    BadHeader(String),
    /// A header of a later format version than this crate reads (the version).
    UnsupportedVersion(u64),
    /// A header after the first line (only the first line may be one).
    MisplacedHeader,
}

impl fmt::Display for ParseTraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseTraceError::NotAnEvent(line) => write!(f, "not a trace event: {line}"),
            ParseTraceError::BadHeader(line) => write!(f, "not a trace header: {line}"),
            ParseTraceError::UnsupportedVersion(v) => write!(
                f,
                "trace format version {v}, but this reader knows versions up to {FORMAT_VERSION}"
            ),
            ParseTraceError::MisplacedHeader => {
                write!(f, "a trace header, but not on the first line")
            }
        }
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
        let bad = || ParseTraceError::NotAnEvent(line.to_string());
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

/// A trace file as [`parse`] reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceFile {
    /// Its first line; `None` for a trace written before the format had a header (see the
    /// [module documentation](self)).
    pub header: Option<TraceHeader>,
    /// Its events, in the order they were written.
    pub events: Vec<TraceEvent>,
}

/// Reads a whole trace in JSON Lines (blank lines skipped), with or without a header line; the
/// error names the line (from 1).
pub fn parse(text: &str) -> Result<TraceFile, (usize, ParseTraceError)> {
    let mut file = TraceFile {
        header: None,
        events: Vec::new(),
    };
    let lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    for (n, (k, line)) in lines.enumerate() {
        // No event has a `trace` field, nor a string that reads `"trace"`.
        let is_header = line.contains("\"trace\"");
        match (is_header, n) {
            (true, 0) => file.header = Some(line.parse().map_err(|e| (k + 1, e))?),
            (true, _) => return Err((k + 1, ParseTraceError::MisplacedHeader)),
            (false, _) => file.events.push(line.parse().map_err(|e| (k + 1, e))?),
        }
    }
    Ok(file)
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
        let none = BTreeSet::new();
        let trace = assemble(vec![zero.clone(), one.clone()], 1, &none, |_, _| false);
        let clocks: Vec<(u64, Vec<u64>)> = trace
            .events
            .iter()
            .map(|e| (e.step, e.clock.clone()))
            .collect();
        assert_eq!(clocks, [(1, vec![1, 0]), (2, vec![1, 1])]);
        // 0's receipt of the reply (never sent, as far as the trace knows) and 1's two events.
        assert_eq!(trace.header.left_out, 1 + 3);
        // With the second message restored into the channel before the run, all of it fits.
        let trace = assemble(vec![zero, one], 0, &none, |c, seq| {
            c == Channel::new(0, 1) && seq == 2
        });
        let clocks: Vec<Vec<u64>> = trace.events.iter().map(|e| e.clock.clone()).collect();
        assert_eq!(
            clocks,
            [vec![1, 0], vec![1, 1], vec![1, 2], vec![1, 3], vec![2, 3]]
        );
        assert_eq!(trace.header.left_out, 0);
        assert_eq!(
            trace.header,
            TraceHeader::whole(Driver::Runtime, &trace.events)
        );
    }

    fn marked(step: u64, kind: TraceKind, channel: Option<(usize, usize)>, id: u128) -> TraceEvent {
        TraceEvent {
            snapshot: Some(SnapshotId(uuid::Uuid::from_u128(id))),
            ..ev(step, kind, channel, None)
        }
    }

    #[test]
    fn assembling_counts_the_snapshots_not_wholly_kept() {
        use TraceKind::*;
        let (a, b, c, d) = (0xa, 0xb, 0xc, 0xd);
        // A is whole. B: 0 recorded it, then its buffer filled (B's markers dropped). C: only
        // in dropped events. D: 1 recorded it after a receipt whose send was dropped, so that
        // record is left out with the receipt.
        let zero = vec![
            marked(1, Record, None, a),
            marked(1, MarkerSend, Some((0, 1)), a),
            marked(4, MarkerReceive, Some((1, 0)), a),
            marked(4, Complete, None, a),
            marked(5, Record, None, b),
        ];
        let one = vec![
            marked(2, MarkerReceive, Some((0, 1)), a),
            marked(2, Record, None, a),
            marked(2, MarkerSend, Some((1, 0)), a),
            ev(6, Receive, Some((0, 1)), Some(1)),
            marked(7, Record, None, d),
        ];
        let dropped: BTreeSet<SnapshotId> = [b, c]
            .map(|id| SnapshotId(uuid::Uuid::from_u128(id)))
            .into();
        let trace = assemble(vec![zero, one], 3, &dropped, |_, _| false);
        assert_eq!(trace.events.len(), 8);
        assert_eq!(
            trace.header,
            TraceHeader {
                driver: Driver::Runtime,
                unit: TimeUnit::Micros,
                left_out: 3 + 2,
                snapshots: 4,
                snapshots_partial: 1,
                snapshots_absent: 2,
            }
        );
        assert_eq!(
            trace.header.shortfall().unwrap(),
            "the trace left out 5 events (past the per-process event cap); 3 of the run's 4 \
             snapshots are not wholly in it (1 in part, 2 not at all)"
        );
    }

    #[test]
    fn the_header_is_the_first_line_and_older_traces_have_none() {
        let header = TraceHeader {
            driver: Driver::Runtime,
            unit: TimeUnit::Micros,
            left_out: 12,
            snapshots: 3,
            snapshots_partial: 1,
            snapshots_absent: 1,
        };
        let line = r#"{"trace":1,"driver":"runtime","unit":"us","left_out":12,"snapshots":3,"snapshots_partial":1,"snapshots_absent":1}"#;
        assert_eq!(header.to_string(), line);
        assert_eq!(line.parse::<TraceHeader>().unwrap(), header);
        let events = vec![
            ev(1, TraceKind::Send, Some((0, 1)), Some(1)),
            ev(2, TraceKind::Receive, Some((0, 1)), Some(1)),
        ];
        let trace = Trace {
            header: header.clone(),
            events: events.clone(),
        };
        let mut text = Vec::new();
        trace.write(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().next(), Some(line));
        let back = parse(&text).unwrap();
        assert_eq!(back.header, Some(header));
        assert_eq!(back.events, events);
        // Before version 1: no header line, the same events.
        let old: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        let back = parse(&old).unwrap();
        assert_eq!((back.header, back.events), (None, events));
        // A simulator's trace: steps, nothing left out.
        let sim = TraceHeader::whole(Driver::Simulator, &[]);
        assert_eq!(
            sim.to_string(),
            r#"{"trace":1,"driver":"simulator","unit":"steps","left_out":0,"snapshots":0,"snapshots_partial":0,"snapshots_absent":0}"#
        );
        assert_eq!(sim.shortfall(), None);
        // Fields of a later writer of the same version are ignored; their order does not matter.
        let more = r#"{"unit":"steps","trace":1,"driver":"simulator","left_out":0,"snapshots":0,"snapshots_partial":0,"snapshots_absent":0,"host":"x"}"#;
        assert_eq!(more.parse::<TraceHeader>().unwrap(), sim);
    }

    #[test]
    fn bad_headers_are_refused_with_their_line() {
        let event =
            r#"{"step":1,"event":"send","process":0,"from":0,"to":1,"seq":1,"clock":[1,0]}"#;
        let good = TraceHeader::whole(Driver::Simulator, &[]).to_string();
        let cases = [
            (
                r#"{"trace":2,"driver":"mars"}"#.to_string(),
                1,
                ParseTraceError::UnsupportedVersion(2),
            ),
            (
                format!("\n{event}\n{good}"),
                3,
                ParseTraceError::MisplacedHeader,
            ),
            (
                good.replace("simulator", "mars"),
                1,
                ParseTraceError::BadHeader(String::new()),
            ),
            (
                good.replace("steps", "ms"),
                1,
                ParseTraceError::BadHeader(String::new()),
            ),
            (
                good.replace(",\"left_out\":0", ""),
                1,
                ParseTraceError::BadHeader(String::new()),
            ),
            (
                good.replace("\"snapshots_absent\":0", "\"snapshots_absent\":1"),
                1,
                ParseTraceError::BadHeader(String::new()),
            ),
            (
                good.replace("\"trace\":1", "\"trace\":\"1\""),
                1,
                ParseTraceError::BadHeader(String::new()),
            ),
            (
                format!("{good}\n{{\"step\":1}}"),
                2,
                ParseTraceError::NotAnEvent(String::new()),
            ),
        ];
        for (text, line, error) in cases {
            let (at, got) = parse(&text).unwrap_err();
            assert_eq!(at, line, "{text}");
            // The same kind of error (the line it quotes aside).
            assert_eq!(
                std::mem::discriminant(&got),
                std::mem::discriminant(&error),
                "{text}: {got}"
            );
        }
        assert_eq!(
            ParseTraceError::UnsupportedVersion(2).to_string(),
            "trace format version 2, but this reader knows versions up to 1"
        );
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
        let (line, error) = parse(text).unwrap_err();
        assert_eq!(line, 4);
        assert!(matches!(error, ParseTraceError::NotAnEvent(_)));
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
