//! The threaded runtime's trace: off by default, and when on, a consistent prefix of the run
//! whose vector clocks and events agree with the snapshots the runtime took.

mod common;

use std::collections::{BTreeSet, HashMap};

use chandy_lamport::trace::{svg, Driver, TimeUnit, Trace, TraceEvent, TraceKind};
use chandy_lamport::{Channel, GlobalSnapshot, Runtime, SnapshotId, Topology};
use common::{branches, check_bank, seed, wait_for_traffic, PATIENCE};

/// Every receipt in the trace has its send before it, and each process's clock entry counts its
/// own events (a `marker_send` shares its `record`'s).
fn check_causality(trace: &Trace, processes: usize) {
    let mut sends: HashMap<(Channel, Option<u64>, Option<SnapshotId>), &TraceEvent> =
        HashMap::new();
    let mut own = vec![0u64; processes];
    let mut last_step = 0;
    for e in &trace.events {
        assert!(e.step >= last_step, "events by time");
        last_step = e.step;
        if e.kind != TraceKind::MarkerSend {
            own[e.process] += 1;
        }
        assert_eq!(e.clock[e.process], own[e.process], "{e}");
        let key = (e.channel.unwrap_or(Channel::new(0, 0)), e.seq, e.snapshot);
        match e.kind {
            TraceKind::Send | TraceKind::MarkerSend => {
                sends.insert(key, e);
            }
            TraceKind::Receive | TraceKind::MarkerReceive => {
                let send = sends.get(&key).unwrap_or_else(|| panic!("no send for {e}"));
                assert!(send.step <= e.step, "{send} after {e}");
                assert!(
                    send.clock.iter().zip(&e.clock).all(|(s, r)| s <= r),
                    "{send} not before {e}"
                );
            }
            TraceKind::Record | TraceKind::Complete => {}
        }
    }
}

/// What the trace says snapshot `s` recorded: its cut (each process's `record`), consistent by
/// the clocks, and the messages that cross it, which must be exactly the messages the snapshot
/// recorded in flight.
fn rederive(trace: &Trace, s: &GlobalSnapshot<u64, u64>) {
    let n = s.states.len();
    let records: Vec<&TraceEvent> = (0..n)
        .map(|p| {
            trace
                .events
                .iter()
                .find(|e| e.kind == TraceKind::Record && e.process == p && e.snapshot == Some(s.id))
                .unwrap_or_else(|| panic!("process {p} never recorded {}", s.id))
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            assert!(
                records[j].clock[i] <= records[i].clock[i],
                "snapshot {}: the cut is not consistent at ({i}, {j})",
                s.id
            );
        }
    }
    // Position of each event in its process's own order, to say before or after the record.
    let before_record = |e: &TraceEvent| {
        e.clock[e.process] < records[e.process].clock[e.process]
            || (e.clock[e.process] == records[e.process].clock[e.process]
                && e.kind == TraceKind::MarkerSend)
    };
    let sent_before: BTreeSet<(Channel, u64)> = trace
        .events
        .iter()
        .filter(|e| {
            e.kind == TraceKind::Send && e.clock[e.process] <= records[e.process].clock[e.process]
        })
        .map(|e| (e.channel.unwrap(), e.seq.unwrap()))
        .collect();
    let crossing: BTreeSet<(Channel, u64)> = trace
        .events
        .iter()
        .filter(|e| e.kind == TraceKind::Receive && !before_record(e))
        .map(|e| (e.channel.unwrap(), e.seq.unwrap()))
        .filter(|m| sent_before.contains(m))
        .collect();
    let recorded: BTreeSet<(Channel, u64)> = s
        .channels
        .iter()
        .flat_map(|c| c.messages.iter().map(move |m| (c.channel, m.seq)))
        .collect();
    assert_eq!(
        crossing, recorded,
        "snapshot {}: in flight by the trace vs recorded",
        s.id
    );
}

#[test]
fn a_runtime_trace_is_consistent_and_agrees_with_every_snapshot() {
    let (seed, _guard) = seed("a_runtime_trace_is_consistent_and_agrees_with_every_snapshot");
    let n = 4;
    let (procs, traffic) = branches(n, 1000, 2, seed);
    let runtime = Runtime::builder(Topology::complete(n))
        .trace(1_000_000)
        .build(procs)
        .unwrap();
    wait_for_traffic(&traffic, 100);
    let mut snapshots = Vec::new();
    for initiator in [0, 2, 3] {
        let ticket = runtime.start_snapshot(initiator).unwrap();
        snapshots.push(ticket.wait_timeout(*PATIENCE).unwrap());
    }
    let during = runtime.trace().expect("built with a trace");
    check_causality(&during, n);
    let stopped = runtime.shutdown().unwrap();
    let trace = stopped.trace.expect("built with a trace");
    check_causality(&trace, n);
    assert!(trace.events.len() >= during.events.len());
    for s in &snapshots {
        check_bank(s, n as u64 * 1000, n as u64 * 2);
        rederive(&trace, s);
        let completions = trace
            .events
            .iter()
            .filter(|e| e.kind == TraceKind::Complete && e.snapshot == Some(s.id))
            .count();
        assert_eq!(completions, 1);
        // The cost beside the snapshot agrees with the trace: each process recorded when the
        // trace says (same clock), after the start and before the end.
        let cost = s.cost();
        assert_eq!(
            (cost.markers, cost.messages),
            (n * (n - 1), s.in_flight().count())
        );
        assert!(
            cost.recorded_after.iter().all(|&d| d <= cost.latency),
            "{cost}"
        );
        for (p, at) in s.recorded_at.iter().enumerate() {
            let record = trace
                .events
                .iter()
                .find(|e| e.kind == TraceKind::Record && e.process == p && e.snapshot == Some(s.id))
                .unwrap();
            assert_eq!(record.step, at.as_micros() as u64, "process {p}");
        }
    }
    // Each snapshot renders: a window from the start to its completion holds its cut, through
    // its records, and its in-flight messages (as many as it recorded; they were sent before
    // the records, so the window starts at the start).
    for s in &snapshots {
        let steps: Vec<u64> = trace
            .events
            .iter()
            .filter(|e| e.snapshot == Some(s.id) && e.kind != TraceKind::MarkerReceive)
            .map(|e| e.step)
            .collect();
        let options = svg::SvgOptions {
            from: Some(0),
            to: steps.iter().max().copied(),
            max_events: usize::MAX,
            header: Some(trace.header.clone()),
            ..Default::default()
        };
        let picture = svg::render(&trace.events, &options).text;
        let tagged = |class: &str| {
            picture
                .lines()
                .filter(|l| {
                    l.contains(&format!("class=\"{class}\"")) && l.contains(&s.id.to_string())
                })
                .count()
        };
        // Each message it recorded carries a stroke of its own, shared with other snapshots
        // or not.
        let strokes = picture
            .matches(&format!("class=\"recorded\" data-snapshot=\"{}\"", s.id))
            .count();
        assert_eq!(strokes, s.in_flight().count(), "snapshot {}", s.id);
        assert_eq!(tagged("cut"), 1, "snapshot {}", s.id);
        assert_eq!(tagged("record"), n, "snapshot {}", s.id);
        assert_eq!(
            tagged("message in-flight"),
            s.in_flight().count(),
            "snapshot {}",
            s.id
        );
    }
    // The JSON Lines read back as they were written, header first.
    let mut text = Vec::new();
    trace.write(&mut text).unwrap();
    let back = chandy_lamport::trace::parse(std::str::from_utf8(&text).unwrap()).unwrap();
    assert_eq!(back.events, trace.events);
    assert_eq!(back.header.as_ref(), Some(&trace.header));
    assert_eq!(
        (trace.header.driver, trace.header.unit),
        (Driver::Runtime, TimeUnit::Micros)
    );
    // Nothing left out: every snapshot is wholly in it.
    assert_eq!(trace.header.left_out, 0);
    assert_eq!(trace.header.snapshots, snapshots.len() as u64);
    assert_eq!(trace.header.shortfall(), None);
}

#[test]
fn a_full_trace_buffer_keeps_a_consistent_prefix_and_says_how_much_it_left_out() {
    let (procs, traffic) = branches(4, 1000, 2, 7);
    let runtime = Runtime::builder(Topology::complete(4))
        .trace(300)
        .build(procs)
        .unwrap();
    wait_for_traffic(&traffic, 5_000);
    // Every buffer is full by now: none of this snapshot's events is kept.
    let late = runtime.snapshot(1).unwrap();
    let trace = runtime.shutdown().unwrap().trace.unwrap();
    assert!(trace.header.left_out > 0);
    assert!(trace.events.len() <= 4 * 300);
    assert!(trace.events.iter().all(|e| e.snapshot != Some(late.id)));
    assert_eq!(
        (
            trace.header.snapshots,
            trace.header.snapshots_partial,
            trace.header.snapshots_absent
        ),
        (1, 0, 1)
    );
    let words = trace.header.shortfall().unwrap();
    assert!(
        words.ends_with("1 of the run's 1 snapshots is not wholly in it (0 in part, 1 not at all)"),
        "{words}"
    );
    check_causality(&trace, 4);
}

#[test]
fn no_trace_unless_asked_for() {
    let (procs, _) = branches(3, 10, 1, 1);
    let runtime = Runtime::new(Topology::complete(3), procs).unwrap();
    assert!(runtime.trace().is_none());
    assert!(runtime.shutdown().unwrap().trace.is_none());
}
