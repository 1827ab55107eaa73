//! A trace as a [ShiViz](https://bestchai.bitbucket.io/shiviz/) log, to explore a run
//! interactively in the browser (paste the log into ShiViz's input page, or upload the file).
//!
//! The file is in the form ShiViz reads from an uploaded file: its first line is the parsing
//! regular expression ([`REGEX`], ShiViz's own default), its second line the delimiter between
//! several executions (empty: one run), then two lines per event: a description, then the host
//! (`p0`, `p1`, ...) and its vector clock as a JSON object that lists the non-zero entries only,
//! in process order:
//!
//! ```text
//! (?<event>.*)\n(?<host>\S*) (?<clock>{.*})
//!
//! send p0 -> p1 #1 at 0
//! p0 {"p0":1}
//! receive p0 -> p1 #1 at 3
//! p1 {"p0":1,"p1":1}
//! ```
//!
//! ShiViz requires each host's own clock entry to go up by exactly one from one of its events
//! to the next, starting at 1. The trace's clocks do, except at a `marker_send`, which shares
//! the clock of its `record` (they are one turn of the process: see the [trace
//! format](super)). So `marker_send` events are left out of the log: ShiViz then draws each
//! marker's edge from the `record` event to the marker's receipt, which is where the marker
//! left from, and the `record` line names the processes its markers went to.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{TraceEvent, TraceKind};
use crate::snapshot::SnapshotId;
use crate::topology::ProcessId;

/// The regular expression on the log's first line (ShiViz's default): a description line, then
/// a line with the host and its clock.
pub const REGEX: &str = r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})";

/// The ShiViz log of `events` (a trace in the order it was written): see the [module
/// documentation](self).
pub fn shiviz(events: &[TraceEvent]) -> String {
    // Where each record's markers went, to name them on the record's line.
    let mut markers: BTreeMap<(ProcessId, SnapshotId), Vec<ProcessId>> = BTreeMap::new();
    for e in events {
        if let (TraceKind::MarkerSend, Some(c), Some(id)) = (e.kind, e.channel, e.snapshot) {
            markers.entry((e.process, id)).or_default().push(c.to);
        }
    }
    let mut out = String::with_capacity(64 * events.len() + 64);
    out.push_str(REGEX);
    out.push_str("\n\n");
    for e in events {
        let short = |id: Option<SnapshotId>| {
            id.map_or_else(
                || "?".to_string(),
                |id| id.to_string().chars().take(8).collect(),
            )
        };
        let channel = e
            .channel
            .map_or_else(String::new, |c| format!("p{} -> p{}", c.from, c.to));
        let step = e.step;
        let _ = match e.kind {
            TraceKind::MarkerSend => continue,
            TraceKind::Send => writeln!(out, "send {channel} #{} at {step}", e.seq.unwrap_or(0)),
            TraceKind::Receive => {
                writeln!(out, "receive {channel} #{} at {step}", e.seq.unwrap_or(0))
            }
            TraceKind::MarkerReceive => writeln!(
                out,
                "marker of snapshot {} received {channel} at {step}",
                short(e.snapshot)
            ),
            TraceKind::Record => {
                let to = e
                    .snapshot
                    .and_then(|id| markers.get(&(e.process, id)))
                    .map_or_else(String::new, |to| {
                        let to: Vec<String> = to.iter().map(|p| format!("p{p}")).collect();
                        format!(", markers to {}", to.join(" "))
                    });
                writeln!(
                    out,
                    "record for snapshot {} at {step}{to}",
                    short(e.snapshot)
                )
            }
            TraceKind::Complete => {
                writeln!(out, "snapshot {} complete at {step}", short(e.snapshot))
            }
        };
        let _ = write!(out, "p{} {{", e.process);
        let mut first = true;
        for (p, &t) in e.clock.iter().enumerate().filter(|(_, &t)| t > 0) {
            let _ = write!(out, "{}\"p{p}\":{t}", if first { "" } else { "," });
            first = false;
        }
        out.push_str("}\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Channel;

    #[test]
    fn two_lines_an_event_and_no_marker_sends() {
        let id = SnapshotId(uuid::Uuid::from_u128(0xabcd_ef01 << 96));
        let event = |kind, process, channel: Option<(usize, usize)>, clock: Vec<u64>| TraceEvent {
            step: 7,
            kind,
            process,
            channel: channel.map(|(f, t)| Channel::new(f, t)),
            seq: (matches!(kind, TraceKind::Send | TraceKind::Receive)).then_some(1),
            snapshot: (!matches!(kind, TraceKind::Send | TraceKind::Receive)).then_some(id),
            clock,
        };
        let events = [
            event(TraceKind::Send, 0, Some((0, 1)), vec![1, 0]),
            event(TraceKind::Record, 0, None, vec![2, 0]),
            event(TraceKind::MarkerSend, 0, Some((0, 1)), vec![2, 0]),
            event(TraceKind::Receive, 1, Some((0, 1)), vec![1, 1]),
            event(TraceKind::MarkerReceive, 1, Some((0, 1)), vec![2, 2]),
        ];
        assert_eq!(
            shiviz(&events),
            "(?<event>.*)\\n(?<host>\\S*) (?<clock>{.*})\n\n\
             send p0 -> p1 #1 at 7\np0 {\"p0\":1}\n\
             record for snapshot abcdef01 at 7, markers to p1\np0 {\"p0\":2}\n\
             receive p0 -> p1 #1 at 7\np1 {\"p0\":1,\"p1\":1}\n\
             marker of snapshot abcdef01 received p0 -> p1 at 7\np1 {\"p0\":2,\"p1\":2}\n"
        );
    }
}
