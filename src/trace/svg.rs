//! A space-time diagram of a trace, as SVG: one horizontal line per process, time running left
//! to right, application messages as arrows, markers as dashed arrows in their snapshot's
//! colour, each `record` as a dot, each snapshot's cut as a line through its dots, the messages
//! each snapshot recorded as in flight highlighted (a stroke in each recording snapshot's
//! colour), and a legend with what each snapshot cost.
//!
//! ```
//! use chandy_lamport::trace::{self, svg};
//!
//! let text = "{\"trace\":1,\"driver\":\"simulator\",\"unit\":\"steps\",\"left_out\":0,\"snapshots\":0,\"snapshots_partial\":0,\"snapshots_absent\":0}\n\
//!             {\"step\":0,\"event\":\"send\",\"process\":0,\"from\":0,\"to\":1,\"seq\":1,\"clock\":[1,0]}\n\
//!             {\"step\":2,\"event\":\"receive\",\"process\":1,\"from\":0,\"to\":1,\"seq\":1,\"clock\":[1,1]}\n";
//! let file = trace::parse(text).unwrap();
//! // The header gives the axis its unit, and says what the trace itself left out (here nothing).
//! let options = svg::SvgOptions { header: file.header, ..svg::SvgOptions::default() };
//! let diagram = svg::render(&file.events, &options);
//! assert!(diagram.text.contains("class=\"message\""));
//! assert!(diagram.note.is_none()); // nothing left out
//! ```
//!
//! # Layout
//!
//! The events are first put in order of `step`, keeping the trace's order among equal steps (a
//! stable sort: a process's own events stay in the order it logged them). Each step then gets
//! its own band of columns, to the right of every earlier step's, and inside a band every event
//! takes the next free column of its process, and a receipt also a column right of its send.
//! So x grows with time, a process's events never overlap, events of different processes in
//! the same step share columns, and steps with no events take no room. A `marker_send` is drawn
//! in the column of the `record` it follows (they are one turn of the process: they share a
//! vector clock), so a snapshot's markers start at its record dot.
//!
//! That is the compressed time axis, the default: distance along it is order, not duration.
//! With [`TimeAxis::Linear`], x is instead proportional to `step` over the window, ticks fall on
//! round times, and events close in time may overlap. A caption under the axis says which it is
//! (`time in µs: to scale`, `time in steps: compressed (...)`), and in what unit:
//! [`SvgOptions::unit`], else the one the trace's header gives, else `steps`.
//!
//! Cuts are drawn first, then messages and markers, then record dots and completion squares:
//! a dot is never hidden under a cut or an arrow.
//!
//! # Classes (for styling, and for tools that read the diagram)
//!
//! | element | class | data attributes |
//! |---|---|---|
//! | a process's line | `process` | `data-process` |
//! | an application message (`<g>`: line and head) | `message`, plus `in-flight` if a snapshot recorded it | `data-channel` (`"i-j"`), `data-seq`, and for `in-flight` `data-snapshot` (every snapshot that recorded it) |
//! | in an `in-flight` message, one stroke (`<line>`) per snapshot that recorded it | `recorded` | `data-snapshot` (that one) |
//! | a marker (`<g>`, dashed) | `marker` | `data-snapshot`, `data-channel` |
//! | a record point (`<circle>`) | `record` | `data-snapshot`, `data-process` |
//! | a snapshot's cut (`<polyline>` through its record points, by process) | `cut` | `data-snapshot` |
//! | a snapshot's completion (small square) | `complete` | `data-snapshot` |
//! | the legend (`<g>`) | `legend` | |
//! | the note on what was left out | `note` | |
//! | the caption saying which time axis it is | `caption` | `data-time-axis` (`compressed`, `linear`) |
//!
//! A message recorded in flight by several concurrent snapshots is still one arrow: its
//! `data-snapshot` lists their UUIDs separated by spaces, in the snapshots' order (that of their
//! first `record` in the trace), and its shaft is drawn as that many parallel strokes side by
//! side, one in each snapshot's colour, so that each snapshot's in-flight messages can be
//! picked out by colour (and counted by `recorded` elements), whichever others share them. A
//! message recorded by one snapshot has its colour, head included. Snapshot ids are full UUIDs
//! in attributes and the first 8 hex digits in text.
//!
//! A message is recorded in flight by snapshot S on channel i -> j exactly when it was sent
//! before i recorded its state for S and received after j did (each compared in the trace's
//! order at that process): this is computed from the trace alone, and agrees with the channel
//! states the algorithm recorded (`tests/diagram.rs` checks it against the simulator's).
//!
//! # Legend
//!
//! Under the diagram, a key to its marks, then one entry per snapshot with a point in the
//! window, numbered `S1`, `S2`... in the order of their first `record` (the same in every window
//! of one trace), with what the trace says it cost: its initiator (the process that recorded
//! before any of its markers reached it), the time from the initiator's `record` to the
//! `complete` event, the markers sent, the messages it recorded in flight, and when each process
//! recorded.
//!
//! # Windows
//!
//! A trace longer than [`SvgOptions::max_events`], or one drawn with [`SvgOptions::from`] or
//! [`SvgOptions::to`], is drawn in part: the events with `from <= step <= to`, at most
//! `max_events` of them (the first). With neither bound, a long trace is drawn from its start
//! through the completion of the first snapshot to complete (to the end of that step); if that
//! is more than `max_events` events, over the steps of the first snapshot (in the order they
//! complete) whose own steps, from its first `record` through its completion, fit; if none
//! does, over the first one's steps, cut at `max_events`; if no snapshot completes, the trace's
//! first `max_events` events.
//!
//! A message or marker with only one end inside the window is not drawn (no stubs: half an
//! arrow reads as a lost message); nor is one with an end missing from the trace (still in
//! flight when it ends, or, in a run restored from a snapshot, sent before it began). Only a
//! snapshot with every process's `record` inside the window gets a cut. Whatever is left out is
//! counted in a note, drawn at the top of the diagram and returned in [`Svg::note`], starting
//! with what the trace itself left out if [`SvgOptions::header`] says so.
//!
//! The output is a function of the trace and the options only: the same input gives the same
//! bytes (nothing here iterates a hash map).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::ops::Range;

use super::{TraceEvent, TraceHeader, TraceKind};
use crate::snapshot::SnapshotId;
use crate::topology::{Channel, ProcessId};

/// What to draw and how to label it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvgOptions {
    /// Draw only events at this step or later.
    pub from: Option<u64>,
    /// Draw only events at this step or earlier.
    pub to: Option<u64>,
    /// Draw at most this many events (default 400: readable on a screen, a few thousand pixels
    /// wide); see the [module documentation](self) for which.
    pub max_events: usize,
    /// A title, drawn at the top (default: none, a generic heading is drawn instead).
    pub title: Option<String>,
    /// Names of the processes, by id (a missing one is `p<id>`): the scenario files' names,
    /// for instance.
    pub names: Vec<String>,
    /// What a trace's `step` counts, for the axis and the legend (`us` is written `µs`). `None`
    /// (the default): the [`header`](Self::header)'s unit, or `steps` without a header.
    pub unit: Option<String>,
    /// The trace's header, if it has one ([`TraceFile::header`](super::TraceFile)): gives the
    /// default unit, and what the trace itself left out is noted in the diagram.
    pub header: Option<TraceHeader>,
    /// How time maps to x (default: [`TimeAxis::Compressed`]).
    pub time: TimeAxis,
}

/// How the diagram's x axis shows time; the diagram says which under its axis.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeAxis {
    /// Steps with no event take no room and each step only as much as its events need (see the
    /// [module documentation](self), "Layout"): x keeps the order of events and spreads them
    /// out, but a long quiet gap looks as short as a busy moment.
    #[default]
    Compressed,
    /// x proportional to time, over as much width as the compressed layout would take (at
    /// least 800 pixels): durations can be compared by eye, but events close in time overlap.
    Linear,
}

impl Default for SvgOptions {
    fn default() -> Self {
        SvgOptions {
            from: None,
            to: None,
            max_events: 400,
            title: None,
            names: Vec::new(),
            unit: None,
            header: None,
            time: TimeAxis::Compressed,
        }
    }
}

/// A rendered diagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Svg {
    /// The SVG document.
    pub text: String,
    /// What was left out, in words (also drawn in the diagram); `None` if everything was drawn.
    pub note: Option<String>,
    /// The events drawn: positions in the trace once put in order of `step` (a stable sort, so
    /// the trace's own positions for a simulator's trace, whose steps never go back).
    pub shown: Range<usize>,
    /// Events in the trace.
    pub events: usize,
    /// Snapshots drawn in full (every process's `record` in the window), each with its cut.
    pub snapshots_drawn: usize,
    /// Snapshots in the trace (those with a `record`).
    pub snapshots: usize,
}

impl fmt::Display for Svg {
    /// The SVG document.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Renders `events` (a whole trace, in the order it was written) as a space-time diagram.
pub fn render(events: &[TraceEvent], options: &SvgOptions) -> Svg {
    let analysis = Analysis::new(events);
    let shown = analysis.window(options);
    Drawing::new(&analysis, shown, options).finish()
}

/// An application message or a marker: its two ends, as positions in the sorted trace.
struct Link {
    channel: Channel,
    /// Application messages: the sequence number.
    seq: Option<u64>,
    /// Markers: the snapshot.
    snapshot: Option<SnapshotId>,
    send: Option<usize>,
    receive: Option<usize>,
    /// Application messages: the snapshots (indices) that recorded it in flight.
    recorded_by: Vec<usize>,
}

/// What the trace says about one snapshot.
struct SnapshotInfo {
    id: SnapshotId,
    /// Each process's `record`, by process.
    records: BTreeMap<ProcessId, usize>,
    initiator: Option<ProcessId>,
    /// The `complete` event.
    complete: Option<usize>,
    markers_sent: usize,
    in_flight: usize,
}

/// The trace in step order, its messages and markers paired up, its snapshots.
struct Analysis<'a> {
    events: Vec<&'a TraceEvent>,
    processes: usize,
    messages: Vec<Link>,
    markers: Vec<Link>,
    /// In the order of their first `record`.
    snapshots: Vec<SnapshotInfo>,
}

/// Pairs a send with its receipt under `key`, whichever comes first in the trace (a runtime's
/// trace is merged from several threads): a second send under a key already sent starts a new
/// link, so a malformed trace draws oddly but never panics.
fn pair<K: Ord>(
    links: &mut Vec<Link>,
    open: &mut BTreeMap<K, usize>,
    key: K,
    sending: bool,
    position: usize,
    new: impl FnOnce() -> Link,
) {
    fn end(link: &mut Link, sending: bool) -> &mut Option<usize> {
        if sending {
            &mut link.send
        } else {
            &mut link.receive
        }
    }
    if let Some(&k) = open.get(&key) {
        if end(&mut links[k], sending).is_none() {
            *end(&mut links[k], sending) = Some(position);
            return;
        }
    }
    let mut link = new();
    *end(&mut link, sending) = Some(position);
    open.insert(key, links.len());
    links.push(link);
}

impl<'a> Analysis<'a> {
    fn new(trace: &'a [TraceEvent]) -> Self {
        let mut events: Vec<&TraceEvent> = trace.iter().collect();
        events.sort_by_key(|e| e.step);
        let processes = events
            .iter()
            .flat_map(|e| {
                let c = e.channel.map_or(0, |c| c.from.max(c.to) + 1);
                [e.clock.len(), e.process + 1, c]
            })
            .max()
            .unwrap_or(0);
        let (mut messages, mut markers) = (Vec::new(), Vec::new());
        let (mut open_messages, mut open_markers) = (BTreeMap::new(), BTreeMap::new());
        let mut snapshots: Vec<SnapshotInfo> = Vec::new();
        let mut index: BTreeMap<SnapshotId, usize> = BTreeMap::new();
        // Where each process first got each snapshot's marker: a process that recorded before
        // any arrived is the initiator.
        let mut first_marker: BTreeMap<(SnapshotId, ProcessId), usize> = BTreeMap::new();
        for (k, e) in events.iter().enumerate() {
            let mut snapshot = |snapshots: &mut Vec<SnapshotInfo>, id: SnapshotId| {
                *index.entry(id).or_insert_with(|| {
                    snapshots.push(SnapshotInfo {
                        id,
                        records: BTreeMap::new(),
                        initiator: None,
                        complete: None,
                        markers_sent: 0,
                        in_flight: 0,
                    });
                    snapshots.len() - 1
                })
            };
            match (e.kind, e.channel, e.seq, e.snapshot) {
                (TraceKind::Send | TraceKind::Receive, Some(channel), Some(seq), _) => pair(
                    &mut messages,
                    &mut open_messages,
                    (channel, seq),
                    e.kind == TraceKind::Send,
                    k,
                    || Link {
                        channel,
                        seq: Some(seq),
                        snapshot: None,
                        send: None,
                        receive: None,
                        recorded_by: Vec::new(),
                    },
                ),
                (TraceKind::MarkerSend | TraceKind::MarkerReceive, Some(channel), _, Some(id)) => {
                    if e.kind == TraceKind::MarkerSend {
                        let s = snapshot(&mut snapshots, id);
                        snapshots[s].markers_sent += 1;
                    } else {
                        first_marker.entry((id, e.process)).or_insert(k);
                    }
                    pair(
                        &mut markers,
                        &mut open_markers,
                        (channel, id),
                        e.kind == TraceKind::MarkerSend,
                        k,
                        || Link {
                            channel,
                            seq: None,
                            snapshot: Some(id),
                            send: None,
                            receive: None,
                            recorded_by: Vec::new(),
                        },
                    )
                }
                (TraceKind::Record, _, _, Some(id)) => {
                    let s = snapshot(&mut snapshots, id);
                    snapshots[s].records.entry(e.process).or_insert(k);
                }
                (TraceKind::Complete, _, _, Some(id)) => {
                    let s = snapshot(&mut snapshots, id);
                    snapshots[s].complete.get_or_insert(k);
                }
                // Not in the documented format (a field missing): nothing to draw.
                _ => {}
            }
        }
        // A snapshot seen only through markers or a completion has no point on the diagram.
        snapshots.retain(|s| !s.records.is_empty());
        snapshots.sort_by_key(|s| s.records.values().min().copied());
        // Each channel's messages with both ends in the trace, in the order they were sent,
        // and whether they were received in that order (always, for this crate's channels).
        let mut by_channel: BTreeMap<Channel, Vec<usize>> = BTreeMap::new();
        for (m, link) in messages.iter().enumerate() {
            if link.send.is_some() && link.receive.is_some() {
                by_channel.entry(link.channel).or_default().push(m);
            }
        }
        let mut fifo = BTreeMap::new();
        for (&channel, list) in &mut by_channel {
            list.sort_by_key(|&m| messages[m].send);
            let in_order = list
                .windows(2)
                .all(|w| messages[w[0]].receive < messages[w[1]].receive);
            fifo.insert(channel, in_order);
        }
        for (s, info) in snapshots.iter_mut().enumerate() {
            let mut by_time: Vec<(usize, ProcessId)> =
                info.records.iter().map(|(&p, &k)| (k, p)).collect();
            by_time.sort();
            info.initiator = by_time
                .iter()
                .find(|&&(k, p)| first_marker.get(&(info.id, p)).is_none_or(|&m| m > k))
                .or(by_time.first())
                .map(|&(_, p)| p);
            // In flight on i -> j: sent before i's record, received after j's. The ones sent
            // before are a prefix of the channel's list; on a FIFO channel the ones received
            // after are the end of that prefix, so the cost is the answer's size, not the
            // trace's, for each of many snapshots.
            for (channel, list) in &by_channel {
                let (Some(&at_sender), Some(&at_receiver)) = (
                    info.records.get(&channel.from),
                    info.records.get(&channel.to),
                ) else {
                    continue;
                };
                let sent_before = list.partition_point(|&m| messages[m].send < Some(at_sender));
                for &m in list[..sent_before].iter().rev() {
                    if messages[m].receive > Some(at_receiver) {
                        messages[m].recorded_by.push(s);
                        info.in_flight += 1;
                    } else if fifo[channel] {
                        break;
                    }
                }
            }
        }
        Analysis {
            events,
            processes,
            messages,
            markers,
            snapshots,
        }
    }

    /// The events to draw (see the module documentation, "Windows").
    fn window(&self, options: &SvgOptions) -> Range<usize> {
        let total = self.events.len();
        let max = options.max_events.max(1);
        // The first position whose step is past `step`.
        let after = |step: u64| self.events.partition_point(|e| e.step <= step);
        let capped = |lo: usize, hi: usize| lo..hi.min(lo.saturating_add(max));
        if options.from.is_some() || options.to.is_some() {
            let lo = options
                .from
                .map_or(0, |from| self.events.partition_point(|e| e.step < from));
            let hi = options.to.map_or(total, after).max(lo);
            return capped(lo, hi);
        }
        if total <= max {
            return 0..total;
        }
        // Each completed snapshot's own steps, from its first record through its completion,
        // in the order they completed.
        let mut spans: Vec<(usize, Range<usize>)> = self
            .snapshots
            .iter()
            .filter_map(|s| {
                let complete = s.complete?;
                let first = self.events[*s.records.values().min()?].step;
                let lo = self.events.partition_point(|e| e.step < first);
                Some((complete, lo..after(self.events[complete].step)))
            })
            .collect();
        spans.sort_by_key(|(complete, _)| *complete);
        let window = match spans.first() {
            None => 0..max,
            Some((_, first)) if first.end <= max => 0..first.end,
            // Too long from the start: the first snapshot that fits on its own, or the first
            // one's beginning.
            Some((_, first)) => spans
                .iter()
                .map(|(_, span)| span)
                .find(|span| span.len() <= max)
                .unwrap_or(first)
                .clone(),
        };
        capped(window.start, window.end)
    }

    fn short(&self, s: usize) -> String {
        self.snapshots[s].id.short()
    }
}

/// The smallest of 1, 2, 5, 10, 20, 50... that is at least `at_least`: a tick spacing a
/// person can add up.
fn round_step(at_least: f64) -> u64 {
    let mut power: u64 = 1;
    loop {
        for m in [1, 2, 5] {
            let step = power.saturating_mul(m);
            if step as f64 >= at_least || step == u64::MAX {
                return step;
            }
        }
        power = power.saturating_mul(10);
    }
}

/// The legend's key: the label of each sample mark.
const KEY: [&str; 6] = [
    "message",
    "recorded in flight (a stroke per snapshot)",
    "marker",
    "record",
    "cut",
    "complete",
];

/// Where each of the key's samples starts, left to right, and (last) where the key ends.
fn key_positions() -> [i64; KEY.len() + 1] {
    let mut x = [20i64; KEY.len() + 1];
    for (k, label) in KEY.iter().enumerate() {
        // A sample 30 pixels wide, its label (about 6.2 pixels a character at 12 pixels), a gap.
        x[k + 1] = x[k] + 36 + (label.len() as f64 * 6.2) as i64 + 16;
    }
    x
}

/// Where an arrow runs (see `Drawing::along`).
struct ArrowGeometry {
    from: (f64, f64),
    to: (i64, i64),
    unit: (f64, f64),
    base: (f64, f64),
}

/// A coordinate as the diagram writes it: a whole number bare, else to a tenth.
fn coordinate(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// `n` things, in words: `1 marker`, `2 markers`, `2 processes`.
fn plural(n: usize, one: &str) -> String {
    match (n, one.ends_with('s')) {
        (1, _) => format!("1 {one}"),
        (_, true) => format!("{n} {one}es"),
        (_, false) => format!("{n} {one}s"),
    }
}

/// Escapes text for SVG content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Snapshot colours, told apart also in print (Tableau 10 without its grey, which is the
/// application messages' colour).
const PALETTE: [&str; 9] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22",
];

fn colour(s: usize) -> &'static str {
    PALETTE[s % PALETTE.len()]
}

/// Room left of the process lines, for their names.
const LEFT: i64 = 80;
/// Room above the first process line for the title and subtitle; each line of the note adds
/// [`LINE`].
const TOP: i64 = 80;
/// The height of a line of text.
const LINE: i64 = 16;

const STYLE: &str = "\
.process{stroke:#333;stroke-width:1.5}\
.tick{stroke:#e8e8e8;stroke-width:1}\
.message line{stroke:#555;stroke-width:1.2}\
.message path{fill:#555}\
.marker line{stroke-width:1.2;stroke-dasharray:4 3}\
.cut{fill:none;stroke-width:6;stroke-opacity:0.25;stroke-linejoin:round}\
.record{stroke:#fff;stroke-width:1}\
.note{fill:#b35900;font-style:italic}\
.name{font-weight:bold}\
.axis{fill:#777;font-size:10px}\
.caption{font-style:italic}\
";

/// The diagram being written.
struct Drawing<'a, 'o> {
    a: &'a Analysis<'a>,
    shown: Range<usize>,
    options: &'o SvgOptions,
    /// By position inside the window: the event's x.
    xs: Vec<i64>,
    /// With a linear time axis: the first and last times drawn, and pixels per unit of time.
    scale: Option<(u64, u64, f64)>,
    /// What time is in, as the diagram writes it.
    unit: String,
    dy: i64,
    /// The first process line's y.
    top: i64,
    /// What was left out, one part per line.
    notes: Vec<String>,
    out: String,
}

impl<'a, 'o> Drawing<'a, 'o> {
    fn new(a: &'a Analysis<'a>, shown: Range<usize>, options: &'o SvgOptions) -> Self {
        let columns = Self::columns(a, shown.clone());
        let last = columns.iter().max().copied().unwrap_or(0);
        // Wide columns for a short trace, narrow ones for a long one: a few hundred events fit
        // a screen or two.
        let dx = (900 / (last + 1)).clamp(14, 40);
        let (xs, scale) = match (options.time, shown.is_empty()) {
            (TimeAxis::Linear, false) => {
                let (t0, t1) = (a.events[shown.start].step, a.events[shown.end - 1].step);
                // As wide as the compressed layout, so that the two pictures of one window
                // compare, and never so narrow that nearby events all fall on one pixel.
                let span = (t1 - t0).max(1) as f64;
                let px = (last * dx).max(800) as f64 / span;
                let xs = shown
                    .clone()
                    .map(|k| LEFT + 20 + ((a.events[k].step - t0) as f64 * px).round() as i64)
                    .collect();
                (xs, Some((t0, t1, px)))
            }
            _ => (columns.iter().map(|c| LEFT + 20 + c * dx).collect(), None),
        };
        let unit = options
            .unit
            .clone()
            .or_else(|| options.header.as_ref().map(|h| h.unit.name().to_string()))
            .unwrap_or_else(|| "steps".to_string());
        let dy = if a.processes <= 8 { 50 } else { 36 };
        let mut drawing = Drawing {
            a,
            shown,
            options,
            xs,
            scale,
            unit: if unit == "us" {
                "µs".to_string()
            } else {
                unit
            },
            dy,
            top: TOP,
            notes: Vec::new(),
            out: String::new(),
        };
        drawing.notes = drawing.notes();
        drawing.top = TOP + LINE * drawing.notes.len() as i64;
        drawing
    }

    /// Columns of the window's events (see the module documentation, "Layout").
    fn columns(a: &Analysis<'_>, shown: Range<usize>) -> Vec<i64> {
        let lo = shown.start;
        let mut columns: Vec<i64> = Vec::with_capacity(shown.len());
        let mut next_free = vec![0i64; a.processes];
        let mut last: Vec<Option<usize>> = vec![None; a.processes];
        let mut send_of: BTreeMap<usize, usize> = BTreeMap::new();
        for link in a.messages.iter().chain(&a.markers) {
            if let (Some(s), Some(r)) = (link.send, link.receive) {
                send_of.insert(r, s);
            }
        }
        let (mut band, mut used, mut step) = (0i64, -1i64, None);
        for k in shown {
            let e = a.events[k];
            if step != Some(e.step) {
                band = used + 1;
                step = Some(e.step);
            }
            let p = e.process;
            let same_turn = e.kind == TraceKind::MarkerSend
                && last[p].is_some_and(|j| {
                    let before = a.events[j];
                    matches!(before.kind, TraceKind::Record | TraceKind::MarkerSend)
                        && before.snapshot == e.snapshot
                });
            let column = if same_turn {
                columns[last[p].expect("checked") - lo]
            } else {
                let after_send = send_of
                    .get(&k)
                    .filter(|&&s| s >= lo && s < k)
                    .map_or(0, |&s| columns[s - lo] + 1);
                band.max(next_free[p]).max(after_send)
            };
            columns.push(column);
            next_free[p] = column + 1;
            last[p] = Some(k);
            used = used.max(column);
        }
        columns
    }

    fn inside(&self, k: Option<usize>) -> bool {
        k.is_some_and(|k| self.shown.contains(&k))
    }

    fn x(&self, k: usize) -> i64 {
        self.xs[k - self.shown.start]
    }

    fn y(&self, p: ProcessId) -> i64 {
        self.top + p as i64 * self.dy
    }

    fn point(&self, k: usize) -> (i64, i64) {
        (self.x(k), self.y(self.a.events[k].process))
    }

    fn name(&self, p: ProcessId) -> String {
        self.options
            .names
            .get(p)
            .cloned()
            .unwrap_or_else(|| format!("p{p}"))
    }

    fn right(&self) -> i64 {
        self.xs.iter().max().copied().unwrap_or(LEFT + 20) + 20
    }

    fn bottom(&self) -> i64 {
        self.y(self.a.processes.saturating_sub(1)) + 30
    }

    /// Is every process's `record` of snapshot `s` inside the window?
    fn drawn_in_full(&self, s: usize) -> bool {
        let records = &self.a.snapshots[s].records;
        records.len() == self.a.processes && records.values().all(|&k| self.inside(Some(k)))
    }

    fn finish(mut self) -> Svg {
        let a = self.a;
        let drawn = (0..a.snapshots.len())
            .filter(|&s| self.drawn_in_full(s))
            .count();
        let note = (!self.notes.is_empty()).then(|| self.notes.join("; "));
        let legend: Vec<usize> = (0..a.snapshots.len())
            .filter(|&s| {
                a.snapshots[s]
                    .records
                    .values()
                    .any(|&k| self.inside(Some(k)))
            })
            .collect();
        let legend_lines: usize = legend
            .iter()
            .map(|&s| 1 + self.recorded_lines(s).len())
            .sum();
        let width = self.right().max(760).max(key_positions()[KEY.len()]);
        // Under the axis's labels and its caption.
        let legend_top = self.bottom() + 44;
        let height = legend_top + 40 + 18 * legend_lines as i64 + 10;
        let _ = write!(
            self.out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <style>{STYLE}</style>\n\
             <rect width=\"{width}\" height=\"{height}\" fill=\"#fff\"/>\n"
        );
        self.heading();
        self.axis();
        self.processes();
        for s in 0..a.snapshots.len() {
            if self.drawn_in_full(s) {
                self.cut(s);
            }
        }
        for link in &a.messages {
            self.message(link);
        }
        for link in &a.markers {
            self.marker(link);
        }
        self.points();
        self.legend(legend_top, &legend);
        self.out.push_str("</svg>\n");
        Svg {
            text: self.out,
            note,
            shown: self.shown,
            events: a.events.len(),
            snapshots_drawn: drawn,
            snapshots: a.snapshots.len(),
        }
    }

    /// What was left out, in words, in parts; none if nothing was.
    fn notes(&self) -> Vec<String> {
        let a = self.a;
        let drawn = (0..a.snapshots.len())
            .filter(|&s| self.drawn_in_full(s))
            .count();
        let mut parts = Vec::new();
        if let Some(shortfall) = self
            .options
            .header
            .as_ref()
            .and_then(TraceHeader::shortfall)
        {
            parts.push(shortfall);
        }
        let total = a.events.len();
        if self.shown.is_empty() && total > 0 {
            parts.push(format!("no event in the window, {total} in the trace"));
        } else if self.shown != (0..total) {
            parts.push(format!(
                "events {}-{} of {total} shown (time {}-{} {})",
                self.shown.start + 1,
                self.shown.end,
                a.events[self.shown.start].step,
                a.events[self.shown.end - 1].step,
                self.unit,
            ));
        }
        if drawn < a.snapshots.len() {
            parts.push(format!(
                "{drawn} of {} snapshots drawn in full",
                a.snapshots.len()
            ));
        }
        let count = |links: &[Link], one: &str| {
            let half = links
                .iter()
                .filter(|l| self.inside(l.send) != self.inside(l.receive))
                .filter(|l| l.send.is_some() && l.receive.is_some())
                .count();
            let lost = links
                .iter()
                .filter(|l| l.send.is_none() || l.receive.is_none())
                .filter(|l| self.inside(l.send) || self.inside(l.receive))
                .count();
            let mut found = Vec::new();
            if half > 0 {
                found.push(format!(
                    "{} crossing the window's edge not drawn",
                    plural(half, one)
                ));
            }
            if lost > 0 {
                found.push(format!(
                    "{} with one end outside the trace not drawn",
                    plural(lost, one)
                ));
            }
            found
        };
        parts.extend(count(&a.messages, "message"));
        parts.extend(count(&a.markers, "marker"));
        parts
    }

    fn heading(&mut self) {
        let a = self.a;
        let title = self
            .options
            .title
            .clone()
            .unwrap_or_else(|| "Space-time diagram".to_string());
        let _ = writeln!(
            self.out,
            "<text x=\"20\" y=\"26\" font-size=\"16\" class=\"name\">{}</text>",
            esc(&title)
        );
        let _ = writeln!(
            self.out,
            "<text x=\"20\" y=\"46\" fill=\"#555\">{}, {}, {}; time runs left to right</text>",
            plural(a.processes, "process"),
            plural(a.events.len(), "event"),
            plural(a.snapshots.len(), "snapshot")
        );
        // One part a line, so that a long note stays inside the picture.
        for (i, part) in self.notes.iter().enumerate() {
            let lead = if i == 0 {
                "Not everything is drawn: "
            } else {
                ""
            };
            let _ = writeln!(
                self.out,
                "<text x=\"{}\" y=\"{}\" class=\"note\">{lead}{}</text>",
                if i == 0 { 20 } else { 40 },
                64 + LINE * i as i64,
                esc(part)
            );
        }
    }

    /// Faint vertical lines with time labels, as many as fit: at the start of steps on a
    /// compressed axis, at round times on a linear one; and under them, which axis it is.
    fn axis(&mut self) {
        let (top, bottom) = (self.top - 16, self.bottom() - 12);
        let _ = writeln!(
            self.out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"axis\">{}</text>",
            LEFT - 8,
            bottom + 12,
            esc(&self.unit)
        );
        let mut ticks: Vec<(i64, u64)> = Vec::new();
        match self.scale {
            None => {
                let mut last_label: Option<i64> = None;
                let mut step = None;
                for k in self.shown.clone() {
                    let e = self.a.events[k];
                    if step == Some(e.step) {
                        continue;
                    }
                    step = Some(e.step);
                    let x = self.x(k);
                    if last_label.is_some_and(|l| x - l < 40) {
                        continue;
                    }
                    last_label = Some(x);
                    ticks.push((x, e.step));
                }
            }
            Some((t0, t1, px)) => {
                let every = round_step(80.0 / px);
                let mut t = t0.div_ceil(every).saturating_mul(every);
                while t <= t1 {
                    let x = LEFT + 20 + ((t - t0) as f64 * px).round() as i64;
                    ticks.push((x, t));
                    match t.checked_add(every) {
                        Some(next) => t = next,
                        None => break,
                    }
                }
            }
        }
        for (x, t) in ticks {
            let _ = writeln!(
                self.out,
                "<line class=\"tick\" x1=\"{x}\" y1=\"{top}\" x2=\"{x}\" y2=\"{bottom}\"/>\
                 <text x=\"{x}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{t}</text>",
                bottom + 12,
            );
        }
        let (kind, words) = match self.scale {
            None => (
                "compressed",
                "compressed (gaps shortened: distance is order, not duration)",
            ),
            Some(_) => ("linear", "to scale"),
        };
        let _ = writeln!(
            self.out,
            "<text x=\"{LEFT}\" y=\"{}\" class=\"axis caption\" data-time-axis=\"{kind}\">time in {}: {words}</text>",
            bottom + 28,
            esc(&self.unit)
        );
    }

    fn processes(&mut self) {
        let right = self.right();
        for p in 0..self.a.processes {
            let y = self.y(p);
            let _ = writeln!(
                self.out,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" class=\"name\">{}</text>\
                 <line class=\"process\" data-process=\"{p}\" x1=\"{LEFT}\" y1=\"{y}\" x2=\"{right}\" y2=\"{y}\"/>",
                LEFT - 8,
                y + 4,
                esc(&self.name(p))
            );
        }
    }

    fn cut(&mut self, s: usize) {
        let info = &self.a.snapshots[s];
        let points: Vec<String> = info
            .records
            .values()
            .map(|&k| {
                let (x, y) = self.point(k);
                format!("{x},{y}")
            })
            .collect();
        let _ = writeln!(
            self.out,
            "<polyline class=\"cut\" data-snapshot=\"{}\" stroke=\"{}\" points=\"{}\"><title>cut of S{} {}</title></polyline>",
            info.id,
            colour(s),
            points.join(" "),
            s + 1,
            self.a.short(s)
        );
    }

    /// An arrow from event `from` to event `to`: a line, and a head drawn as a path so that it
    /// takes the arrow's colour without SVG markers (whose colour cannot follow the line's).
    fn arrow(&self, from: usize, to: usize, colour: Option<&str>) -> String {
        let stroke = colour.map_or(String::new(), |c| format!(" style=\"stroke:{c}\""));
        format!(
            "{}{}",
            self.shaft(from, to, 0.0, &stroke),
            self.head(from, to, colour)
        )
    }

    /// The geometry of an arrow: its ends, the unit vector along it, and where its head begins.
    fn along(&self, from: usize, to: usize) -> ArrowGeometry {
        let ((x1, y1), (x2, y2)) = (self.point(from), self.point(to));
        let (dx, dy) = ((x2 - x1) as f64, (y2 - y1) as f64);
        let length = (dx * dx + dy * dy).sqrt().max(1.0);
        let (ux, uy) = (dx / length, dy / length);
        let head = 8.0;
        ArrowGeometry {
            from: (x1 as f64, y1 as f64),
            to: (x2, y2),
            unit: (ux, uy),
            base: (x2 as f64 - ux * head, y2 as f64 - uy * head),
        }
    }

    /// An arrow's line up to its head, moved `offset` pixels sideways (to the left of the
    /// arrow's direction for a positive one); `attrs` go on the `<line>`.
    fn shaft(&self, from: usize, to: usize, offset: f64, attrs: &str) -> String {
        let g = self.along(from, to);
        let (nx, ny) = (-g.unit.1 * offset, g.unit.0 * offset);
        let ((x1, y1), (x2, y2)) = (
            (g.from.0 + nx, g.from.1 + ny),
            (g.base.0 + nx, g.base.1 + ny),
        );
        // Whole pixels print as before the offsets existed (`80`, not `80.0`).
        format!(
            "<line x1=\"{}\" y1=\"{}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"{attrs}/>",
            coordinate(x1),
            coordinate(y1)
        )
    }

    /// An arrow's head, in `colour` (the stylesheet's by default).
    fn head(&self, from: usize, to: usize, colour: Option<&str>) -> String {
        let g = self.along(from, to);
        let ((x2, y2), (bx, by), (ux, uy)) = (g.to, g.base, g.unit);
        let half = 3.5;
        // A style attribute, not `fill=`: the stylesheet's rules would win over that.
        let fill = colour.map_or(String::new(), |c| format!(" style=\"fill:{c}\""));
        format!(
            "<path d=\"M{x2} {y2}L{:.1} {:.1}L{:.1} {:.1}Z\"{fill}/>",
            bx - uy * half,
            by + ux * half,
            bx + uy * half,
            by - ux * half,
        )
    }

    fn message(&mut self, link: &Link) {
        let (Some(send), Some(receive)) = (link.send, link.receive) else {
            return;
        };
        if !self.inside(Some(send)) || !self.inside(Some(receive)) {
            return;
        }
        let a = self.a;
        let c = link.channel;
        let seq = link.seq.unwrap_or(0);
        let mut title = format!(
            "{} → {} #{seq}: sent at {}, received at {}",
            self.name(c.from),
            self.name(c.to),
            a.events[send].step,
            a.events[receive].step
        );
        let (class, data, arrow) = if link.recorded_by.is_empty() {
            ("message", String::new(), self.arrow(send, receive, None))
        } else {
            let by = &link.recorded_by;
            let ids: Vec<String> = by.iter().map(|&s| a.snapshots[s].id.to_string()).collect();
            let names: Vec<String> = by
                .iter()
                .map(|&s| format!("S{} {}", s + 1, a.short(s)))
                .collect();
            let _ = write!(title, "; recorded in flight by {}", names.join(", "));
            // One stroke per snapshot, side by side, so that each snapshot's in-flight set can
            // be seen whole: a band at most 12 pixels wide however many share the message.
            let k = by.len() as f64;
            let spacing = (12.0 / k).min(3.0);
            let width = if by.len() == 1 { 3.0 } else { spacing * 0.85 };
            let mut arrow = String::new();
            for (i, &s) in by.iter().enumerate() {
                let offset = (i as f64 - (k - 1.0) / 2.0) * spacing;
                let attrs = format!(
                    " class=\"recorded\" data-snapshot=\"{}\" style=\"stroke:{};stroke-width:{width:.2}\"",
                    a.snapshots[s].id,
                    colour(s)
                );
                arrow.push_str(&self.shaft(send, receive, offset, &attrs));
            }
            // The head is the message's, not one snapshot's, once several share it.
            let head = (by.len() == 1).then(|| colour(by[0]));
            arrow.push_str(&self.head(send, receive, head));
            (
                "message in-flight",
                format!(" data-snapshot=\"{}\"", ids.join(" ")),
                arrow,
            )
        };
        let _ = writeln!(
            self.out,
            "<g class=\"{class}\" data-channel=\"{}-{}\" data-seq=\"{seq}\"{data}><title>{}</title>{arrow}</g>",
            c.from,
            c.to,
            esc(&title)
        );
    }

    fn marker(&mut self, link: &Link) {
        let (Some(send), Some(receive), Some(id)) = (link.send, link.receive, link.snapshot) else {
            return;
        };
        if !self.inside(Some(send)) || !self.inside(Some(receive)) {
            return;
        }
        let a = self.a;
        let s = a.snapshots.iter().position(|info| info.id == id);
        let tint = s.map_or("#999", colour);
        let label = s.map_or_else(|| id.short(), |s| format!("S{} {}", s + 1, a.short(s)));
        let c = link.channel;
        let title = format!(
            "marker of {label}, {} → {}: sent at {}, received at {}",
            self.name(c.from),
            self.name(c.to),
            a.events[send].step,
            a.events[receive].step
        );
        let arrow = self.arrow(send, receive, Some(tint));
        let _ = writeln!(
            self.out,
            "<g class=\"marker\" data-snapshot=\"{id}\" data-channel=\"{}-{}\"><title>{}</title>{arrow}</g>",
            c.from,
            c.to,
            esc(&title)
        );
    }

    /// Record dots and completion squares, on top of the arrows.
    fn points(&mut self) {
        let a = self.a;
        for (s, info) in a.snapshots.iter().enumerate() {
            for (&p, &k) in &info.records {
                if !self.inside(Some(k)) {
                    continue;
                }
                let (x, y) = self.point(k);
                let title = format!(
                    "{} records its state for S{} {} at {}",
                    self.name(p),
                    s + 1,
                    a.short(s),
                    a.events[k].step
                );
                let _ = writeln!(
                    self.out,
                    "<circle class=\"record\" data-snapshot=\"{}\" data-process=\"{p}\" cx=\"{x}\" cy=\"{y}\" r=\"5\" fill=\"{}\"><title>{}</title></circle>",
                    info.id,
                    colour(s),
                    esc(&title)
                );
            }
            if let Some(k) = info.complete.filter(|&k| self.inside(Some(k))) {
                let (x, y) = self.point(k);
                let _ = writeln!(
                    self.out,
                    "<rect class=\"complete\" data-snapshot=\"{}\" x=\"{}\" y=\"{}\" width=\"8\" height=\"8\" fill=\"#fff\" stroke=\"{}\" stroke-width=\"2\"><title>S{} {} complete at {}</title></rect>",
                    info.id,
                    x - 4,
                    y - 14,
                    colour(s),
                    s + 1,
                    a.short(s),
                    a.events[k].step
                );
            }
        }
    }

    /// The legend's lines of record times for snapshot `s`, 8 processes a line.
    fn recorded_lines(&self, s: usize) -> Vec<String> {
        let a = self.a;
        let times: Vec<String> = a.snapshots[s]
            .records
            .iter()
            .map(|(&p, &k)| format!("{} at {}", self.name(p), a.events[k].step))
            .collect();
        times
            .chunks(8)
            .enumerate()
            .map(|(i, chunk)| {
                let lead = if i == 0 { "recorded: " } else { "" };
                format!("{lead}{}", chunk.join(", "))
            })
            .collect()
    }

    /// The key to the drawing, then one entry per snapshot with a point in the window: its
    /// initiator and its cost, all derived from the trace.
    fn legend(&mut self, top: i64, listed: &[usize]) {
        let a = self.a;
        let unit = esc(&self.unit);
        let mut out = String::new();
        let _ = writeln!(out, "<g class=\"legend\">");
        // The key: a sample of each kind of mark (class `key`, so that nothing counts them as
        // the real thing), laid out left to right by the length of their labels.
        let y = top;
        let (c0, c1) = (colour(0), colour(1));
        let line = |x: i64, y: f64, attrs: &str| {
            format!(
                "<line class=\"key\" x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" {attrs}/>",
                x + 30
            )
        };
        let samples: [(&str, &dyn Fn(i64) -> String); 6] = [
            (KEY[0], &|x| {
                line(x, y as f64, "stroke=\"#555\" stroke-width=\"1.2\"")
            }),
            (KEY[1], &|x| {
                let a = line(
                    x,
                    y as f64 - 1.5,
                    &format!("stroke=\"{c0}\" stroke-width=\"2.5\""),
                );
                let b = line(
                    x,
                    y as f64 + 1.5,
                    &format!("stroke=\"{c1}\" stroke-width=\"2.5\""),
                );
                a + &b
            }),
            (KEY[2], &|x| {
                line(
                    x,
                    y as f64,
                    &format!("stroke=\"{c0}\" stroke-width=\"1.2\" stroke-dasharray=\"4 3\""),
                )
            }),
            (KEY[3], &|x| {
                format!(
                    "<circle class=\"key\" cx=\"{}\" cy=\"{y}\" r=\"5\" fill=\"{c0}\"/>",
                    x + 15
                )
            }),
            (KEY[4], &|x| {
                line(
                    x,
                    y as f64,
                    &format!("stroke=\"{c0}\" stroke-width=\"6\" stroke-opacity=\"0.25\""),
                )
            }),
            (KEY[5], &|x| {
                format!(
                    "<rect class=\"key\" x=\"{}\" y=\"{}\" width=\"8\" height=\"8\" fill=\"#fff\" stroke=\"{c0}\" stroke-width=\"2\"/>",
                    x + 11,
                    y - 4
                )
            }),
        ];
        for ((label, sample), x) in samples.into_iter().zip(key_positions()) {
            let _ = write!(
                out,
                "{}<text x=\"{}\" y=\"{}\">{label}</text>",
                sample(x),
                x + 36,
                y + 4
            );
        }
        out.push('\n');
        let mut y = top + 28;
        for &s in listed {
            let info = &a.snapshots[s];
            let initiator = info
                .initiator
                .map_or_else(|| "unknown".to_string(), |p| self.name(p));
            let started = info.initiator.and_then(|p| info.records.get(&p));
            let completion = match (info.complete, started) {
                (Some(c), Some(&r)) => format!(
                    "complete after {} {unit}",
                    a.events[c].step.saturating_sub(a.events[r].step)
                ),
                _ => "not complete in the trace".to_string(),
            };
            let partly = if self.drawn_in_full(s) {
                ""
            } else {
                " · not all in the window: no cut"
            };
            let _ = writeln!(
                out,
                "<rect x=\"20\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
                 <text x=\"40\" y=\"{y}\"><tspan class=\"name\">S{} {}</tspan> · initiator {} · {completion} · {} sent · {} recorded in flight{partly}</text>",
                y - 10,
                colour(s),
                s + 1,
                a.short(s),
                esc(&initiator),
                plural(info.markers_sent, "marker"),
                plural(info.in_flight, "message"),
            );
            y += 18;
            for line in self.recorded_lines(s) {
                let _ = writeln!(
                    out,
                    "<text x=\"40\" y=\"{y}\" fill=\"#555\">{}</text>",
                    esc(&line)
                );
                y += 18;
            }
        }
        out.push_str("</g>\n");
        self.out.push_str(&out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        step: u64,
        kind: TraceKind,
        process: ProcessId,
        channel: Option<(ProcessId, ProcessId)>,
        seq: Option<u64>,
        snapshot: Option<SnapshotId>,
    ) -> TraceEvent {
        TraceEvent {
            step,
            kind,
            process,
            channel: channel.map(|(f, t)| Channel::new(f, t)),
            seq,
            snapshot,
            clock: vec![0, 0],
        }
    }

    /// p0 sends m1, records, sends its marker; p1 gets the marker (records), then m1: m1 is in
    /// flight; m2 from p1 after its record is not.
    fn two() -> (Vec<TraceEvent>, SnapshotId) {
        use TraceKind::*;
        let id = SnapshotId(uuid::Uuid::from_u128(
            0x1234_5678_9abc_def0_1234_5678_9abc_def0,
        ));
        let s = Some(id);
        let events = vec![
            event(0, Send, 0, Some((0, 1)), Some(1), None),
            event(0, Record, 0, None, None, s),
            event(0, MarkerSend, 0, Some((0, 1)), None, s),
            // A delay-0 marker: received in the same step as it was sent.
            event(0, MarkerReceive, 1, Some((0, 1)), None, s),
            event(0, Record, 1, None, None, s),
            event(0, MarkerSend, 1, Some((1, 0)), None, s),
            event(1, Send, 1, Some((1, 0)), Some(1), None),
            event(2, Receive, 1, Some((0, 1)), Some(1), None),
            event(3, MarkerReceive, 0, Some((1, 0)), None, s),
            event(3, Complete, 0, None, None, s),
            event(4, Receive, 0, Some((1, 0)), Some(1), None),
        ];
        (events, id)
    }

    #[test]
    fn in_flight_initiator_and_cost_come_from_the_trace() {
        let (events, id) = two();
        let a = Analysis::new(&events);
        assert_eq!(a.processes, 2);
        assert_eq!(a.snapshots.len(), 1);
        let s = &a.snapshots[0];
        assert_eq!((s.initiator, s.markers_sent, s.in_flight), (Some(0), 2, 1));
        assert_eq!(a.messages[0].recorded_by, [0]);
        assert!(a.messages[1].recorded_by.is_empty());
        let svg = render(&events, &SvgOptions::default());
        assert_eq!(svg.note, None);
        assert_eq!((svg.snapshots_drawn, svg.snapshots), (1, 1));
        let text = &svg.text;
        assert!(text.contains(&format!(
            "class=\"message in-flight\" data-channel=\"0-1\" data-seq=\"1\" data-snapshot=\"{id}\""
        )));
        assert!(text.contains(
            "initiator p0 · complete after 3 steps · 2 markers sent · 1 message recorded in flight"
        ));
        assert_eq!(text.matches("class=\"marker\"").count(), 2);
        assert_eq!(text.matches("class=\"cut\"").count(), 1);
    }

    #[test]
    fn same_step_events_never_overlap_and_markers_leave_from_the_record() {
        let (events, _) = two();
        let a = Analysis::new(&events);
        let columns = Drawing::columns(&a, 0..a.events.len());
        // p0: send, record (+ its marker, same column); p1: marker receipt after the marker's
        // send, record; all at step 0.
        assert_eq!(&columns[..6], &[0, 1, 1, 2, 3, 3]);
        // Step 1 starts right of everything in step 0.
        assert_eq!(columns[6], 4);
    }

    #[test]
    fn windows_count_what_they_leave_out() {
        let (events, _) = two();
        let options = SvgOptions {
            from: Some(1),
            ..SvgOptions::default()
        };
        let svg = render(&events, &options);
        assert_eq!(svg.shown, 6..11);
        assert_eq!(svg.snapshots_drawn, 0);
        let note = svg.note.unwrap();
        assert!(
            note.starts_with("events 7-11 of 11 shown (time 1-4 steps)"),
            "{note}"
        );
        assert!(note.contains("0 of 1 snapshots drawn in full"), "{note}");
        assert!(note.contains("1 message crossing"), "{note}");
        assert!(note.contains("1 marker crossing"), "{note}");
        assert!(!svg.text.contains("class=\"cut\""));
        let small = SvgOptions {
            max_events: 5,
            ..SvgOptions::default()
        };
        // The first snapshot completes at event 10, too late for 5 events: from the start of its
        // first record's step (step 0, event 1), 5 events.
        assert_eq!(render(&events, &small).shown, 0..5);
    }

    #[test]
    fn text_is_escaped() {
        let (events, _) = two();
        let options = SvgOptions {
            title: Some("a < b & \"c\"".into()),
            names: vec!["<x>".into()],
            ..SvgOptions::default()
        };
        let text = render(&events, &options).text;
        assert!(text.contains("a &lt; b &amp; &quot;c&quot;"));
        assert!(text.contains("&lt;x&gt;"));
        assert!(!text.contains("<x>"));
    }

    #[test]
    fn empty_traces_and_empty_windows_draw_without_panicking() {
        let empty = render(&[], &SvgOptions::default());
        assert_eq!((empty.note, empty.shown, empty.snapshots), (None, 0..0, 0));
        let (events, _) = two();
        for (from, to) in [(Some(9), None), (Some(3), Some(1))] {
            let options = SvgOptions {
                from,
                to,
                ..SvgOptions::default()
            };
            let svg = render(&events, &options);
            assert!(svg.shown.is_empty());
            assert!(svg
                .note
                .unwrap()
                .starts_with("no event in the window, 11 in the trace"));
        }
    }
}
