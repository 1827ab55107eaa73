//! The space-time diagram (`trace::svg`) and the ShiViz log (`trace::shiviz`), checked by
//! reading what they wrote: the SVG is well-formed XML, every delivered message and marker is
//! one arrow, every snapshot's cut goes exactly through its record points, and the arrows marked
//! in flight are exactly the messages the simulator's snapshots recorded; the ShiViz log parses
//! with its own regular expression and its clocks follow ShiViz's rules. One diagram is compared
//! byte for byte with a golden file (`UPDATE_GOLDEN=1` rewrites it).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chandy_lamport::sim::scenario::{self, Delivery};
use chandy_lamport::sim::Simulation;
use chandy_lamport::trace::svg::{self, SvgOptions, TimeAxis};
use chandy_lamport::trace::{shiviz, Driver, TimeUnit, TraceEvent, TraceHeader, TraceKind};
use chandy_lamport::{Channel, GlobalSnapshot, SnapshotId, Topology};
use common::branches;

/// One element of the SVG: its name and attributes (values unescaped only as far as the checks
/// need: they compare numbers, ids and class names, which need no escapes).
#[derive(Debug)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
}

impl Element {
    fn has_class(&self, class: &str) -> bool {
        self.attrs
            .get("class")
            .is_some_and(|c| c.split_whitespace().any(|k| k == class))
    }

    fn attr(&self, name: &str) -> &str {
        self.attrs
            .get(name)
            .unwrap_or_else(|| panic!("<{}> without {name}: {:?}", self.name, self.attrs))
    }
}

/// Checks that every `&` in `text` starts one of the entities the renderer writes.
fn check_entities(text: &str, what: &str) {
    for (i, _) in text.match_indices('&') {
        let rest = &text[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "bare & in {what}: {:?}",
            &rest[..rest.len().min(20)]
        );
    }
}

/// A minimal XML well-formedness check (the subset an SVG file uses: a declaration, elements,
/// attributes, text): tags balance, one root, attribute values quoted, no stray `<` or `&`.
/// Returns every element, in document order.
fn parse_xml(text: &str) -> Vec<Element> {
    let mut elements = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = text
        .strip_prefix("<?xml version=\"1.0\" encoding=\"UTF-8\"?>")
        .expect("an XML declaration first");
    loop {
        let Some(lt) = rest.find('<') else {
            assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
            break;
        };
        let content = &rest[..lt];
        assert!(
            !open.is_empty() || content.trim().is_empty(),
            "text outside the root: {content:?}"
        );
        check_entities(content, "text");
        rest = &rest[lt + 1..];
        let gt = rest.find('>').expect("an unclosed tag");
        let tag = &rest[..gt];
        rest = &rest[gt + 1..];
        assert!(!tag.contains('<'), "a `<` inside a tag: {tag:?}");
        if let Some(name) = tag.strip_prefix('/') {
            let expected = open
                .pop()
                .unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(name, expected, "</{name}> closes <{expected}>");
            continue;
        }
        let (body, empty) = match tag.strip_suffix('/') {
            Some(body) => (body, true),
            None => (tag, false),
        };
        let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
        let name = &body[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "bad element name {name:?}"
        );
        let mut attrs = BTreeMap::new();
        let mut a = body[name_end..].trim_start();
        while !a.is_empty() {
            let eq = a
                .find('=')
                .unwrap_or_else(|| panic!("attribute without value: {a:?}"));
            let key = &a[..eq];
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "bad attribute name {key:?} in <{name}>"
            );
            let value = a[eq + 1..]
                .strip_prefix('"')
                .unwrap_or_else(|| panic!("unquoted attribute {key} in <{name}>"));
            let close = value.find('"').expect("an unclosed attribute value");
            check_entities(&value[..close], "an attribute");
            assert!(
                attrs
                    .insert(key.to_string(), value[..close].to_string())
                    .is_none(),
                "attribute {key} twice in <{name}>"
            );
            let after = &value[close + 1..];
            assert!(
                after.is_empty() || after.starts_with(char::is_whitespace),
                "no space after attribute {key} in <{name}>"
            );
            a = after.trim_start();
        }
        if open.is_empty() {
            roots += 1;
        }
        if !empty {
            open.push(name.to_string());
        }
        elements.push(Element {
            name: name.to_string(),
            attrs,
        });
    }
    assert!(open.is_empty(), "unclosed elements: {open:?}");
    assert_eq!(roots, 1, "one root element");
    assert_eq!(elements[0].name, "svg");
    elements
}

/// The elements of class `class`.
fn with_class<'e>(elements: &'e [Element], class: &str) -> Vec<&'e Element> {
    elements.iter().filter(|e| e.has_class(class)).collect()
}

/// What a diagram must show of a trace whose snapshots are `snapshots` (all drawn in full).
fn check_diagram(
    what: &str,
    trace: &[TraceEvent],
    snapshots: &[&GlobalSnapshot<u64, u64>],
    processes: usize,
) {
    let options = SvgOptions {
        max_events: usize::MAX,
        ..SvgOptions::default()
    };
    let diagram = svg::render(trace, &options);
    let elements = parse_xml(&diagram.text);
    let with = |class: &str| with_class(&elements, class);
    assert_eq!(diagram.shown, 0..trace.len(), "{what}: all drawn");
    assert_eq!(diagram.snapshots, snapshots.len(), "{what}");
    assert_eq!(diagram.snapshots_drawn, snapshots.len(), "{what}");
    // Only messages still in flight at the end of the trace may be left out.
    if let Some(note) = &diagram.note {
        assert!(
            note.ends_with("messages with one end outside the trace not drawn")
                || note.ends_with("message with one end outside the trace not drawn"),
            "{what}: {note}"
        );
        assert!(!note.contains(';'), "{what}: {note}");
    }
    let lines: BTreeSet<&str> = with("process")
        .iter()
        .map(|e| e.attr("data-process"))
        .collect();
    assert_eq!(lines.len(), processes, "{what}: one line per process");
    assert_eq!(with("legend").len(), 1, "{what}");
    let count = |kind: TraceKind| trace.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        with("message").len(),
        count(TraceKind::Receive),
        "{what}: one arrow per delivered message"
    );
    assert_eq!(
        with("marker").len(),
        count(TraceKind::MarkerReceive),
        "{what}: one arrow per delivered marker"
    );
    // Arrows are one element each: a message's channel and number say which.
    let arrows: BTreeSet<(&str, &str)> = with("message")
        .iter()
        .map(|e| (e.attr("data-channel"), e.attr("data-seq")))
        .collect();
    assert_eq!(
        arrows.len(),
        with("message").len(),
        "{what}: arrows are distinct"
    );
    // Each snapshot: one record point per process, one cut through exactly those points.
    for s in snapshots {
        let id = s.id.to_string();
        let records: Vec<&Element> = with("record")
            .into_iter()
            .filter(|e| e.attr("data-snapshot") == id)
            .collect();
        let by_process: BTreeSet<&str> = records.iter().map(|e| e.attr("data-process")).collect();
        assert_eq!(records.len(), processes, "{what}: records of {id}");
        assert_eq!(by_process.len(), processes, "{what}: records of {id}");
        let mut points: Vec<String> = records
            .iter()
            .map(|e| format!("{},{}", e.attr("cx"), e.attr("cy")))
            .collect();
        let cuts: Vec<&Element> = with("cut")
            .into_iter()
            .filter(|e| e.attr("data-snapshot") == id)
            .collect();
        assert_eq!(cuts.len(), 1, "{what}: one cut for {id}");
        let mut cut: Vec<String> = cuts[0]
            .attr("points")
            .split_whitespace()
            .map(str::to_string)
            .collect();
        points.sort();
        cut.sort();
        assert_eq!(cut, points, "{what}: the cut of {id} is its record points");
    }
    assert_eq!(with("cut").len(), snapshots.len(), "{what}: no other cut");
    // In flight: per snapshot and channel, the arrows marked are the messages recorded.
    let mut marked: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for e in with("in-flight") {
        assert!(
            e.has_class("message"),
            "{what}: only messages are in flight"
        );
        for id in e.attr("data-snapshot").split_whitespace() {
            marked
                .entry((id.to_string(), e.attr("data-channel").to_string()))
                .or_default()
                .push(e.attr("data-seq").parse().unwrap());
        }
    }
    for seqs in marked.values_mut() {
        seqs.sort();
    }
    let mut recorded: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for s in snapshots {
        for c in &s.channels {
            if !c.messages.is_empty() {
                recorded.insert(
                    (
                        s.id.to_string(),
                        format!("{}-{}", c.channel.from, c.channel.to),
                    ),
                    c.messages.iter().map(|m| m.seq).collect(),
                );
            }
        }
    }
    assert_eq!(
        marked, recorded,
        "{what}: in-flight arrows are the recorded messages"
    );
    // Each snapshot's own strokes: one per message it recorded, shared or not.
    let mut strokes: BTreeMap<String, usize> = BTreeMap::new();
    for e in with("recorded") {
        *strokes
            .entry(e.attr("data-snapshot").to_string())
            .or_default() += 1;
    }
    let mut per_snapshot: BTreeMap<String, usize> = BTreeMap::new();
    for ((id, _), seqs) in &recorded {
        *per_snapshot.entry(id.clone()).or_default() += seqs.len();
    }
    assert_eq!(
        strokes, per_snapshot,
        "{what}: a stroke per snapshot per message"
    );
    check_draw_order(what, &elements);
    for e in with("message") {
        assert_eq!(
            e.has_class("in-flight"),
            e.attrs.contains_key("data-snapshot"),
            "{what}: data-snapshot exactly on in-flight arrows"
        );
    }
}

/// Record dots come after (so are drawn over) every cut and every in-flight stroke.
fn check_draw_order(what: &str, elements: &[Element]) {
    let first_record = elements
        .iter()
        .position(|e| e.has_class("record"))
        .unwrap_or(elements.len());
    let last_under = elements
        .iter()
        .rposition(|e| e.has_class("cut") || e.has_class("recorded"));
    assert!(
        last_under.is_none_or(|k| k < first_record),
        "{what}: a record dot under a cut or an in-flight stroke"
    );
}

/// Reads `tests/scenarios/NAME`.
fn scenario_file(name: &str) -> (String, String) {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "scenarios", name]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap();
    (path.display().to_string(), text)
}

/// Runs a scenario with its trace.
fn run_scenario(
    top: &str,
    events: &str,
    seed: u64,
    delivery: Delivery,
) -> (
    scenario::ScenarioTopology,
    Vec<GlobalSnapshot<u64, u64>>,
    Vec<TraceEvent>,
) {
    let (top_path, top_text) = scenario_file(top);
    let topo = scenario::parse_topology(&top_path, &top_text).unwrap();
    let (events_path, events_text) = scenario_file(events);
    let events = scenario::parse_events(&events_path, &events_text, &topo).unwrap();
    let run = scenario::run_traced(&topo, &events, &events_path, seed, delivery).unwrap();
    (topo, run.snapshots, run.trace)
}

const SCENARIOS: [(&str, &str); 5] = [
    ("pair.top", "pair-in-flight.events"),
    ("xyz.top", "xyz.events"),
    ("eight.top", "eight-concurrent.events"),
    ("eight.top", "eight-sequential.events"),
    ("ring10.top", "ring10.events"),
];

#[test]
fn scenario_diagrams_show_every_message_marker_cut_and_recorded_message() {
    for (top, events) in SCENARIOS {
        for delivery in [Delivery::Causal, Delivery::Fifo] {
            for seed in 0..4 {
                let what = format!("{events} {delivery:?} seed {seed}");
                let (topo, snapshots, trace) = run_scenario(top, events, seed, delivery);
                let snapshots: Vec<&GlobalSnapshot<u64, u64>> = snapshots.iter().collect();
                check_diagram(&what, &trace, &snapshots, topo.names.len());
                check_shiviz(&what, &trace);
            }
        }
    }
}

/// A bank on the simulator (transfers always in flight), with snapshots started at random
/// moments from random processes, several at once.
fn bank(topology: Topology, seed: u64, rounds: usize, steps: u64) -> Simulation<common::Branch> {
    let n = topology.processes();
    let (procs, _) = branches(n, 100, 2, seed);
    let mut sim = Simulation::builder(topology)
        .seed(seed)
        .trace(true)
        .build(procs)
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    for _ in 0..rounds {
        sim.run_for(rng.u64(0..steps));
        for _ in 0..rng.usize(1..=3) {
            sim.start_snapshot(rng.usize(..n)).unwrap();
        }
    }
    sim.run_until_snapshots_complete(100_000).unwrap();
    sim
}

#[test]
fn concurrent_snapshots_on_a_complete_graph_are_drawn_exactly() {
    for seed in 0..20 {
        let sim = bank(Topology::complete(4), seed, 3, 8);
        let snapshots: Vec<&GlobalSnapshot<u64, u64>> = sim
            .started()
            .iter()
            .map(|id| &**sim.completed_snapshot(*id).unwrap())
            .collect();
        assert!(snapshots.len() >= 3);
        let what = format!("complete(4) seed {seed}");
        check_diagram(&what, sim.trace(), &snapshots, 4);
        check_shiviz(&what, sim.trace());
    }
}

/// The path of a golden file.
fn golden(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests", "golden", name]
        .iter()
        .collect()
}

/// Compares `actual` with the golden file `name`, or rewrites it under `UPDATE_GOLDEN=1`.
fn compare_golden(name: &str, actual: &str) {
    let path = golden(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: cannot read ({e}); write it with `UPDATE_GOLDEN=1 cargo test --test diagram`",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from what is rendered now, from line {}:\n  golden: {:?}\n  now:    {:?}\n\
             If the change is intended, regenerate it with `UPDATE_GOLDEN=1 cargo test --test \
             diagram` and look at the new picture before committing it.",
            path.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("(end of file)"),
            actual.lines().nth(line).unwrap_or("(end of file)"),
        );
    }
}

#[test]
fn the_xyz_diagram_and_log_are_the_golden_ones() {
    let (topo, snapshots, trace) = run_scenario("xyz.top", "xyz.events", 0, Delivery::Fifo);
    // This seed is the interesting one: X's token is overtaken by a marker, so it is in flight.
    assert_eq!(snapshots[0].in_flight().count(), 1);
    let options = SvgOptions {
        title: Some("xyz scenario, FIFO only, seed 0".to_string()),
        names: topo.names.clone(),
        ..SvgOptions::default()
    };
    let diagram = svg::render(&trace, &options);
    assert_eq!(
        svg::render(&trace, &options),
        diagram,
        "the same trace, the same bytes"
    );
    compare_golden("xyz-fifo-seed0.svg", &diagram.text);
    compare_golden("xyz-fifo-seed0.shiviz", &shiviz::shiviz(&trace));
}

/// Parses a ShiViz clock, `{"p0":1,"p2":3}`, into a vector of `n` entries.
fn shiviz_clock(text: &str, n: usize) -> Vec<u64> {
    let map: BTreeMap<String, u64> = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("clock {text:?} is not a JSON object of numbers: {e}"));
    let mut clock = vec![0; n];
    for (host, t) in map {
        let p: usize = host
            .strip_prefix('p')
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("host {host:?} in a clock"));
        assert!(t > 0, "only non-zero entries are listed: {text}");
        clock[p] = t;
    }
    clock
}

/// The ShiViz log of `trace` parses with the regular expression on its first line (checked by
/// its structure: a description line, then `HOST {CLOCK}` with a host without spaces), has one
/// event per trace event but `marker_send`s, each host's own entry goes up by exactly one per
/// event from 1, and a receipt's clock is at least its send's (a marker's: its `record`'s).
fn check_shiviz(what: &str, trace: &[TraceEvent]) {
    let log = shiviz::shiviz(trace);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines[0], r"(?<event>.*)\n(?<host>\S*) (?<clock>{.*})");
    assert_eq!(lines[0], shiviz::REGEX);
    assert_eq!(lines[1], "", "one execution: no delimiter");
    let body = &lines[2..];
    assert_eq!(body.len() % 2, 0, "{what}: two lines an event");
    let kept: Vec<&TraceEvent> = trace
        .iter()
        .filter(|e| e.kind != TraceKind::MarkerSend)
        .collect();
    assert_eq!(
        body.len() / 2,
        kept.len(),
        "{what}: every event but marker sends"
    );
    let n = trace.iter().map(|e| e.clock.len()).max().unwrap_or(0);
    let mut own = vec![0u64; n];
    let mut clocks = Vec::new();
    for (pair, e) in body.chunks(2).zip(&kept) {
        let (event, host_line) = (pair[0], pair[1]);
        assert!(!event.is_empty(), "{what}: a description");
        let (host, clock) = host_line
            .split_once(' ')
            .unwrap_or_else(|| panic!("{what}: {host_line:?} is not `HOST {{CLOCK}}`"));
        assert!(!host.contains(char::is_whitespace));
        assert!(
            clock.starts_with('{') && clock.ends_with('}'),
            "{host_line}"
        );
        assert_eq!(host, format!("p{}", e.process), "{what}");
        let clock = shiviz_clock(clock, n);
        assert_eq!(clock, e.clock, "{what}: the trace's clock");
        own[e.process] += 1;
        assert_eq!(
            clock[e.process], own[e.process],
            "{what}: {host}'s own entry goes up by one per event: {event}"
        );
        clocks.push(clock);
    }
    // Receipts: at least the sender's clock at the send (for a marker, at its record).
    let mut sent: BTreeMap<String, usize> = BTreeMap::new();
    for (k, e) in kept.iter().enumerate() {
        let key = match (e.kind, e.channel, e.seq, e.snapshot) {
            (TraceKind::Send, Some(c), Some(seq), _) => Some(format!("m {c:?} {seq}")),
            (TraceKind::Record, _, _, Some(id)) => Some(format!("r {} {id}", e.process)),
            _ => None,
        };
        if let Some(key) = key {
            sent.insert(key, k);
        }
    }
    for (k, e) in kept.iter().enumerate() {
        let key = match (e.kind, e.channel, e.seq, e.snapshot) {
            (TraceKind::Receive, Some(c), Some(seq), _) => format!("m {c:?} {seq}"),
            (TraceKind::MarkerReceive, Some(c), _, Some(id)) => format!("r {} {id}", c.from),
            _ => continue,
        };
        let from = sent[&key];
        assert!(
            clocks[from].iter().zip(&clocks[k]).all(|(s, r)| s <= r),
            "{what}: receipt {} before its send {}",
            body[2 * k],
            body[2 * from]
        );
    }
}

/// Renders a window of a simulator's trace and checks it: a note saying what was left out,
/// cuts for exactly the snapshots whose every record is inside, arrows for exactly the messages
/// with both ends inside.
fn check_window(sim: &Simulation<common::Branch>, options: &SvgOptions) -> svg::Svg {
    let trace = sim.trace();
    let n = sim.wiring().processes();
    let total_snapshots = sim.started().len();
    // The simulator's steps never go back: positions in the diagram are the trace's.
    assert!(trace.windows(2).all(|w| w[0].step <= w[1].step));
    let diagram = svg::render(trace, options);
    let what = format!("{n} processes, {:?}..={:?}", options.from, options.to);
    let elements = parse_xml(&diagram.text);
    let note = diagram.note.clone().expect("a note");
    assert!(
        note.contains(&format!("of {} shown", trace.len())),
        "{what}: {note}"
    );
    assert!(diagram.text.contains("Not everything is drawn"));
    assert!(diagram.shown.len() <= options.max_events);
    assert_eq!(diagram.snapshots, total_snapshots);
    let inside = |k: usize| diagram.shown.contains(&k);
    let mut whole = BTreeSet::new();
    for id in sim.started() {
        let records: Vec<usize> = (0..trace.len())
            .filter(|&k| trace[k].kind == TraceKind::Record && trace[k].snapshot == Some(*id))
            .collect();
        assert_eq!(records.len(), n);
        if records.iter().all(|&k| inside(k)) {
            whole.insert(id.to_string());
        }
    }
    let cuts: BTreeSet<String> = with_class(&elements, "cut")
        .iter()
        .map(|e| e.attr("data-snapshot").to_string())
        .collect();
    assert_eq!(cuts, whole, "{what}: cuts of the snapshots drawn in full");
    assert_eq!(diagram.snapshots_drawn, whole.len());
    if whole.len() < total_snapshots {
        assert!(
            note.contains(&format!(
                "{} of {total_snapshots} snapshots drawn in full",
                whole.len()
            )),
            "{what}: {note}"
        );
    }
    let mut sends = BTreeMap::new();
    let mut both = 0;
    for (k, e) in trace.iter().enumerate() {
        match e.kind {
            TraceKind::Send => {
                sends.insert((e.channel, e.seq), k);
            }
            TraceKind::Receive if inside(k) && inside(sends[&(e.channel, e.seq)]) => both += 1,
            _ => {}
        }
    }
    assert_eq!(
        with_class(&elements, "message").len(),
        both,
        "{what}: messages with both ends inside"
    );
    diagram
}

/// The default window of a long trace, worked out independently of the renderer: from the
/// start through the step of the first completion if that fits in `max` events, else the
/// steps of the first snapshot (in completion order) whose own steps (first record through
/// completion) fit, else the first one's, cut at `max`.
fn default_window(trace: &[TraceEvent], max: usize) -> std::ops::Range<usize> {
    let spans: Vec<std::ops::Range<usize>> = trace
        .iter()
        .filter(|e| e.kind == TraceKind::Complete)
        .map(|complete| {
            let first_record = trace
                .iter()
                .find(|e| e.kind == TraceKind::Record && e.snapshot == complete.snapshot)
                .unwrap();
            let start = trace
                .iter()
                .position(|e| e.step == first_record.step)
                .unwrap();
            let end = trace
                .iter()
                .position(|e| e.step > complete.step)
                .unwrap_or(trace.len());
            start..end
        })
        .collect();
    if spans[0].end <= max {
        return 0..spans[0].end;
    }
    match spans.iter().find(|span| span.len() <= max) {
        Some(span) => span.clone(),
        None => spans[0].start..spans[0].end.min(spans[0].start + max),
    }
}

#[test]
fn a_long_trace_is_drawn_in_a_window_with_a_note_and_only_whole_cuts() {
    // 16 processes on a ring, thousands of events: no snapshot fits in 400 events.
    let sim = bank(Topology::ring(16), 7, 8, 40);
    let trace = sim.trace();
    assert!(trace.len() > 1000, "{} events", trace.len());
    let default = check_window(&sim, &SvgOptions::default());
    assert_eq!(default.shown, default_window(trace, 400));
    // Windows in steps: everything inside them, up to the limit. Some cut snapshots in two,
    // some hold snapshots whole (the test is not vacuous).
    let (mut some_whole, mut some_cut) = (false, false);
    for (from, to) in [(0, 60), (40, 140), (100, 400)] {
        let options = SvgOptions {
            from: Some(from),
            to: Some(to),
            max_events: 5_000,
            ..SvgOptions::default()
        };
        let diagram = check_window(&sim, &options);
        some_whole |= diagram.snapshots_drawn > 0;
        some_cut |= diagram.snapshots_drawn < diagram.snapshots;
        let in_steps: Vec<usize> = (0..trace.len())
            .filter(|&k| (from..=to).contains(&trace[k].step))
            .collect();
        assert_eq!(diagram.shown, in_steps[0]..in_steps[in_steps.len() - 1] + 1);
    }
    assert!(some_whole && some_cut);
    // Smaller systems, long runs: the default window holds a whole snapshot when one fits.
    let mut fits = 0;
    for seed in 0..10 {
        let sim = bank(Topology::complete(4), seed, 6, 40);
        if sim.trace().len() <= 400 {
            continue;
        }
        let default = check_window(&sim, &SvgOptions::default());
        let expected = default_window(sim.trace(), 400);
        assert_eq!(default.shown, expected, "seed {seed}");
        if default.snapshots_drawn > 0 {
            fits += 1;
        }
    }
    assert!(fits > 0);
}

/// An event of a hand-made trace (the renderer reads neither clocks nor anything else missing).
fn at(
    step: u64,
    kind: TraceKind,
    process: usize,
    channel: Option<(usize, usize)>,
    seq: Option<u64>,
    snapshot: Option<SnapshotId>,
) -> TraceEvent {
    TraceEvent {
        step,
        kind,
        process,
        channel: channel.map(|(from, to)| Channel::new(from, to)),
        seq,
        snapshot,
        clock: vec![0, 0],
    }
}

/// Two snapshots, A and B, both started at p0 after it sent m1 and both reaching p1 before m1
/// does: m1 is in flight in both.
fn shared_in_flight() -> (Vec<TraceEvent>, SnapshotId, SnapshotId) {
    use TraceKind::*;
    let a = SnapshotId(uuid::Uuid::from_u128(
        0xaaaa_0000_0000_0000_0000_0000_0000_0001,
    ));
    let b = SnapshotId(uuid::Uuid::from_u128(
        0xbbbb_0000_0000_0000_0000_0000_0000_0002,
    ));
    let mut events = vec![at(0, Send, 0, Some((0, 1)), Some(1), None)];
    for id in [a, b] {
        events.extend([
            at(1, Record, 0, None, None, Some(id)),
            at(1, MarkerSend, 0, Some((0, 1)), None, Some(id)),
        ]);
    }
    for id in [a, b] {
        events.extend([
            at(3, MarkerReceive, 1, Some((0, 1)), None, Some(id)),
            at(3, Record, 1, None, None, Some(id)),
            at(3, MarkerSend, 1, Some((1, 0)), None, Some(id)),
        ]);
    }
    events.push(at(7, Receive, 1, Some((0, 1)), Some(1), None));
    for id in [a, b] {
        events.extend([
            at(9, MarkerReceive, 0, Some((1, 0)), None, Some(id)),
            at(9, Complete, 0, None, None, Some(id)),
        ]);
    }
    (events, a, b)
}

#[test]
fn a_message_recorded_by_two_snapshots_is_drawn_for_each() {
    let (events, a, b) = shared_in_flight();
    let diagram = svg::render(&events, &SvgOptions::default());
    let elements = parse_xml(&diagram.text);
    let message = with_class(&elements, "in-flight");
    assert_eq!(message.len(), 1);
    assert_eq!(message[0].attr("data-snapshot"), format!("{a} {b}"));
    // One stroke each, in each one's colour (the legend's swatch), side by side: the same
    // direction, apart.
    let strokes = with_class(&elements, "recorded");
    let ids: Vec<&str> = strokes.iter().map(|e| e.attr("data-snapshot")).collect();
    assert_eq!(ids, [a.to_string(), b.to_string()]);
    let swatches: Vec<String> = elements
        .iter()
        .filter(|e| e.name == "rect" && e.attrs.get("width").is_some_and(|w| w == "12"))
        .map(|e| format!("stroke:{};", e.attr("fill")))
        .collect();
    assert_eq!(swatches.len(), 2);
    for (stroke, swatch) in strokes.iter().zip(&swatches) {
        assert!(
            stroke.attr("style").starts_with(swatch.as_str()),
            "{:?}",
            stroke.attrs
        );
    }
    let ends = |e: &Element| -> [f64; 4] {
        ["x1", "y1", "x2", "y2"].map(|k| e.attr(k).parse::<f64>().unwrap())
    };
    let (s, t) = (ends(strokes[0]), ends(strokes[1]));
    let direction = |e: [f64; 4]| (e[2] - e[0], e[3] - e[1]);
    let ((dx, dy), (ex, ey)) = (direction(s), direction(t));
    // The sine of the angle between them, with coordinates written to a tenth of a pixel.
    let sine = (dx * ey - dy * ex) / (dx.hypot(dy) * ex.hypot(ey));
    assert!(sine.abs() < 0.005, "parallel: {s:?} {t:?}");
    let apart = ((s[0] - t[0]).powi(2) + (s[1] - t[1]).powi(2)).sqrt();
    assert!((2.0..=4.0).contains(&apart), "{apart} pixels apart");
    // The legend agrees: one message each.
    assert_eq!(
        diagram.text.matches("1 message recorded in flight").count(),
        2
    );
    check_draw_order("shared", &elements);
}

/// The x of each record dot and the step of its `record` event.
fn record_positions(elements: &[Element], events: &[TraceEvent]) -> Vec<(f64, u64)> {
    with_class(elements, "record")
        .iter()
        .map(|e| {
            let (id, p) = (e.attr("data-snapshot"), e.attr("data-process"));
            let event = events
                .iter()
                .find(|ev| {
                    ev.kind == TraceKind::Record
                        && ev.process.to_string() == p
                        && ev.snapshot.is_some_and(|s| s.to_string() == id)
                })
                .unwrap();
            (e.attr("cx").parse().unwrap(), event.step)
        })
        .collect()
}

/// Whether every point is on one line through the first and last (to a pixel's rounding).
fn proportional(points: &[(f64, u64)]) -> bool {
    let lo = points.iter().min_by_key(|p| p.1).unwrap();
    let hi = points.iter().max_by_key(|p| p.1).unwrap();
    let px = (hi.0 - lo.0) / (hi.1 - lo.1) as f64;
    points
        .iter()
        .all(|&(x, t)| (x - lo.0 - (t - lo.1) as f64 * px).abs() <= 1.0)
}

#[test]
fn a_linear_time_axis_puts_events_in_proportion_to_time_and_says_so() {
    // A bank on the simulator, whose records spread unevenly over the steps.
    let sim = bank(Topology::complete(4), 3, 3, 30);
    let trace = sim.trace();
    let all = SvgOptions {
        max_events: usize::MAX,
        ..SvgOptions::default()
    };
    let linear = SvgOptions {
        time: TimeAxis::Linear,
        ..all.clone()
    };
    let caption = |elements: &[Element]| {
        let captions = with_class(elements, "caption");
        assert_eq!(captions.len(), 1);
        captions[0].attr("data-time-axis").to_string()
    };
    let compressed = parse_xml(&svg::render(trace, &all).text);
    let to_scale_svg = svg::render(trace, &linear);
    let to_scale = parse_xml(&to_scale_svg.text);
    assert_eq!(caption(&compressed), "compressed");
    assert_eq!(caption(&to_scale), "linear");
    assert!(to_scale_svg.text.contains("time in steps: to scale"));
    let points = record_positions(&to_scale, trace);
    assert!(points.len() >= 12);
    assert!(proportional(&points), "{points:?}");
    // The compressed axis is not to scale on this trace: the check has teeth.
    assert!(!proportional(&record_positions(&compressed, trace)));
    // Ticks at round times, evenly spaced.
    let ticks: Vec<f64> = to_scale
        .iter()
        .filter(|e| e.attrs.get("class").is_some_and(|c| c == "tick"))
        .map(|e| e.attr("x1").parse().unwrap())
        .collect();
    assert!(ticks.len() >= 3);
    let gap = ticks[1] - ticks[0];
    assert!(ticks.windows(2).all(|w| (w[1] - w[0] - gap).abs() <= 1.0));
    // Every arrow, cut and dot is still drawn, as on the compressed axis.
    for class in ["message", "marker", "record", "cut", "recorded"] {
        assert_eq!(
            with_class(&to_scale, class).len(),
            with_class(&compressed, class).len(),
            "{class}"
        );
    }
}

#[test]
fn the_unit_and_what_the_trace_left_out_come_from_its_header() {
    let (events, _, _) = shared_in_flight();
    let header = TraceHeader {
        driver: Driver::Runtime,
        unit: TimeUnit::Micros,
        left_out: 40,
        snapshots: 3,
        snapshots_partial: 0,
        snapshots_absent: 1,
    };
    let from_header = SvgOptions {
        header: Some(header.clone()),
        ..SvgOptions::default()
    };
    let diagram = svg::render(&events, &from_header);
    assert!(diagram.text.contains("time in µs: compressed"));
    assert!(diagram.text.contains("complete after 8 µs"));
    let note = diagram.note.unwrap();
    assert!(
        note.starts_with(
            "the trace left out 40 events (past the per-process event cap); 1 of the run's 3 \
             snapshots is not wholly in it (0 in part, 1 not at all)"
        ),
        "{note}"
    );
    assert!(diagram.text.contains("1 of the run&#39;s 3 snapshots"));
    // `unit` still overrides the header.
    let overridden = SvgOptions {
        unit: Some("ticks".to_string()),
        ..from_header
    };
    assert!(svg::render(&events, &overridden)
        .text
        .contains("time in ticks: compressed"));
    // No header: steps, and nothing said about what the trace left out.
    let plain = svg::render(&events, &SvgOptions::default());
    assert!(plain.text.contains("time in steps: compressed"));
    assert_eq!(plain.note, None);
}
