//! The deterministic simulator: exact replay, exploration over seeds, the corner-case schedules,
//! the trace, and the scripted scenarios.

mod common;

use std::collections::HashSet;

use chandy_lamport::sim::scenario::{self, Delivery};
use chandy_lamport::sim::{explore, Schedule, Simulation, TraceEvent, TraceKind};
use chandy_lamport::{Channel, Topology};
use common::{branches, check_bank, Branch};

/// A strongly connected topology drawn from `seed`: a one-way ring through a random order, plus
/// random extra channels.
fn topology(seed: u64) -> Topology {
    let mut rng = fastrand::Rng::with_seed(seed);
    let n = rng.usize(2..=8);
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let mut edges: Vec<(usize, usize)> = (0..n).map(|i| (order[i], order[(i + 1) % n])).collect();
    for _ in 0..rng.usize(0..n * 2) {
        let (a, b) = (rng.usize(..n), rng.usize(..n));
        if a != b && !edges.contains(&(a, b)) {
            edges.push((a, b));
        }
    }
    Topology::from_edges(n, edges)
}

/// A bank run on the simulator: traffic, then snapshots started at random moments from random
/// processes (some at once), then every snapshot checked exactly.
fn bank_run(seed: u64, schedule: Schedule, trace: bool) -> Simulation<Branch> {
    let topology = topology(seed);
    let n = topology.processes();
    let (procs, _) = branches(n, 100, 3, seed);
    let mut sim = Simulation::builder(topology)
        .seed(seed)
        .schedule(schedule)
        .trace(trace)
        .build(procs)
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0xA5A5);
    for _ in 0..rng.usize(1..6) {
        sim.run_for(rng.u64(0..20));
        for _ in 0..rng.usize(1..3) {
            sim.start_snapshot(rng.usize(..n)).unwrap();
        }
    }
    sim.run_until_snapshots_complete(100_000).unwrap();
    sim
}

/// Every snapshot of a bank run completed, verifies exactly, conserves and finds every transfer
/// (a failed check panics; `explore` reports the panic with its seed).
fn check_run(sim: &Simulation<Branch>) -> Result<(), String> {
    let n = sim.wiring().processes() as u64;
    if sim.snapshots().len() != sim.started().len() {
        return Err(format!(
            "{} of {} snapshots completed",
            sim.snapshots().len(),
            sim.started().len()
        ));
    }
    for s in sim.snapshots() {
        check_bank(s, n * 100, n * 3);
    }
    Ok(())
}

#[test]
fn the_same_seed_replays_exactly_and_another_differs() {
    let a = bank_run(11, Schedule::Random, true);
    let b = bank_run(11, Schedule::Random, true);
    assert!(!a.trace().is_empty());
    assert_eq!(a.trace(), b.trace(), "identical event traces");
    assert_eq!(
        a.snapshots(),
        b.snapshots(),
        "identical snapshots, ids and times included"
    );
    let c = bank_run(12, Schedule::Random, true);
    assert_ne!(a.trace(), c.trace());
    // Same topology and traffic, other scheduling seed: the runs still differ.
    let topology = Topology::complete(4);
    let run = |seed: u64| {
        let (procs, _) = branches(4, 100, 2, 5);
        let mut sim = Simulation::builder(topology.clone())
            .seed(seed)
            .trace(true)
            .build(procs)
            .unwrap();
        sim.run_for(30);
        sim.trace().to_vec()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn exploration_finds_every_snapshot_consistent() {
    let passed = explore(0..400, |seed| {
        check_run(&bank_run(seed, Schedule::Random, false))
    });
    match passed {
        Ok(n) => assert!(n > 0),
        Err(failure) => panic!("{failure}"),
    }
}

#[test]
fn corner_case_schedules_stay_consistent() {
    let late = explore(0..200, |seed| {
        check_run(&bank_run(seed, Schedule::LateMarkers, false))
    });
    late.unwrap_or_else(|f| panic!("late markers: {f}"));
    let held = explore(0..200, |seed| {
        let t = topology(seed);
        let channel = t.channels()[seed as usize % t.channels().len()];
        check_run(&bank_run(seed, Schedule::HoldChannel(channel), false))
    });
    held.unwrap_or_else(|f| panic!("held channel: {f}"));
}

#[test]
fn late_markers_make_snapshots_take_longer_but_find_the_same() {
    let runs = |schedule: Schedule| -> (u128, usize) {
        (0..50).fold((0, 0), |(latency, found), seed| {
            let sim = bank_run(seed, schedule, false);
            let l: u128 = sim
                .snapshots()
                .iter()
                .map(|s| s.latency().as_millis())
                .sum();
            let f: usize = sim.snapshots().iter().map(|s| s.in_flight().count()).sum();
            (latency + l, found + f)
        })
    };
    let (random, late) = (runs(Schedule::Random), runs(Schedule::LateMarkers));
    assert!(
        late.0 > random.0,
        "markers held back: {} vs {} steps",
        late.0,
        random.0
    );
    // In the bank every transfer is always in flight: the schedule changes the timing, never
    // what a snapshot must find.
    assert_eq!(late.1, random.1);
}

#[test]
fn a_held_channel_is_delivered_last() {
    let held = Channel::new(0, 1);
    let (procs, _) = branches(3, 100, 2, 1);
    let mut sim = Simulation::builder(Topology::complete(3))
        .schedule(Schedule::HoldChannel(held))
        .delay(1..=1)
        .trace(true)
        .build(procs)
        .unwrap();
    sim.run_for(50);
    // Within each step, no delivery on another channel comes after one on the held channel.
    let receipts: Vec<&TraceEvent> = sim
        .trace()
        .iter()
        .filter(|e| matches!(e.kind, TraceKind::Receive | TraceKind::MarkerReceive))
        .collect();
    assert!(receipts.iter().any(|e| e.channel == Some(held)));
    for pair in receipts.windows(2) {
        if pair[0].step == pair[1].step && pair[0].channel == Some(held) {
            assert_eq!(
                pair[1].channel,
                Some(held),
                "held channel went before another"
            );
        }
    }
}

/// The trace's vector clocks give an independent check of each snapshot: the `record` events
/// of one snapshot form a consistent cut iff no record happens-before another process's record
/// in a way that puts that process's later events inside the cut: for all i, j,
/// clock(record_j)[i] <= clock(record_i)[i].
#[test]
fn trace_vector_clocks_confirm_every_cut() {
    for seed in 0..50 {
        let sim = bank_run(seed, Schedule::Random, true);
        let n = sim.wiring().processes();
        for id in sim.started() {
            let records: Vec<&TraceEvent> = sim
                .trace()
                .iter()
                .filter(|e| e.kind == TraceKind::Record && e.snapshot == Some(*id))
                .collect();
            assert_eq!(records.len(), n, "one record per process");
            for ri in &records {
                for rj in &records {
                    let i = ri.process;
                    assert!(
                        rj.clock[i] <= ri.clock[i],
                        "seed {seed}: inconsistent cut in the trace"
                    );
                }
            }
        }
        // Receipts follow their sends: a message's receipt clock dominates its send clock.
        let mut sends = std::collections::HashMap::new();
        for e in sim.trace() {
            match e.kind {
                TraceKind::Send => {
                    sends.insert((e.channel, e.seq), e.clock.clone());
                }
                TraceKind::Receive => {
                    let sent = &sends[&(e.channel, e.seq)];
                    assert!(sent.iter().zip(&e.clock).all(|(s, r)| s <= r));
                }
                _ => {}
            }
        }
    }
}

#[test]
fn the_trace_is_json_lines() {
    let sim = bank_run(3, Schedule::Random, true);
    let mut out = Vec::new();
    sim.write_trace(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    // A header first: the simulator's, in steps, nothing left out.
    let (first, events) = text.split_once('\n').unwrap();
    let header: serde_json::Value = serde_json::from_str(first).unwrap();
    assert_eq!(header["trace"], 1);
    assert_eq!(header["driver"], "simulator");
    assert_eq!(header["unit"], "steps");
    assert_eq!(header["left_out"], 0);
    assert_eq!(
        header["snapshots"].as_u64().unwrap() as usize,
        sim.started().len()
    );
    let kinds: HashSet<String> = events
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["step"].is_u64() && v["process"].is_u64() && v["clock"].is_array());
            v["event"].as_str().unwrap().to_string()
        })
        .collect();
    for k in [
        "send",
        "receive",
        "marker_send",
        "marker_receive",
        "record",
        "complete",
    ] {
        assert!(kinds.contains(k), "{k} missing");
    }
}

#[test]
fn ticks_let_processes_work_on_their_own() {
    use chandy_lamport::{Context, Process, ProcessId};
    /// Sends one token per tick to its only neighbour.
    struct Pump(u64);
    impl Process for Pump {
        type Message = u64;
        type State = u64;
        fn on_message(&mut self, _: ProcessId, m: u64, _: &mut Context<'_, u64>) {
            self.0 += m;
        }
        fn on_tick(&mut self, ctx: &mut Context<'_, u64>) {
            if self.0 > 0 {
                self.0 -= 1;
                let to = ctx.neighbours()[0];
                ctx.send(to, 1).unwrap();
            }
        }
        fn record(&self) -> u64 {
            self.0
        }
    }
    let mut sim = Simulation::builder(Topology::ring(5))
        .tick_every(3)
        .seed(9)
        .build((0..5).map(|_| Pump(10)))
        .unwrap();
    sim.run_for(100);
    assert!(sim.deliveries() > 50);
    let id = sim.start_snapshot(0).unwrap();
    sim.run_until_snapshots_complete(1_000).unwrap();
    let s = sim.completed_snapshot(id).unwrap();
    s.verify().unwrap();
    assert_eq!(s.total(|t| *t, |t| *t), 50);
}

fn scenario_files(
    top: &str,
    events: &str,
) -> (scenario::ScenarioTopology, Vec<scenario::ScenarioEvent>) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/");
    let read = |f: &str| std::fs::read_to_string(format!("{dir}{f}")).unwrap();
    let topo = scenario::parse_topology(top, &read(top)).unwrap();
    let events = scenario::parse_events(events, &read(events), &topo).unwrap();
    (topo, events)
}

#[test]
fn scenarios_conserve_and_pass_the_cut_check_under_many_seeds() {
    let cases = [
        ("pair.top", "pair-in-flight.events", 1),
        ("xyz.top", "xyz.events", 1),
        ("eight.top", "eight-sequential.events", 3),
        ("eight.top", "eight-concurrent.events", 5),
        ("ring10.top", "ring10.events", 2),
    ];
    for (top, events, count) in cases {
        let (topo, script) = scenario_files(top, events);
        for delivery in [Delivery::Causal, Delivery::Fifo] {
            let failed = explore(0..100, |seed| {
                let snaps = scenario::run(&topo, &script, events, seed, delivery)
                    .map_err(|e| e.to_string())?;
                if snaps.len() != count {
                    return Err(format!("{} snapshots", snaps.len()));
                }
                for s in &snaps {
                    s.verify().map_err(|e| e.to_string())?;
                    if s.total(|t| *t, |t| *t) != topo.total() {
                        return Err("tokens not conserved".into());
                    }
                }
                Ok(())
            });
            if let Err(f) = failed {
                panic!("{top} {events} {delivery:?}: {f}");
            }
        }
    }
}

#[test]
fn scenarios_with_a_fixed_answer_give_it_under_every_seed() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios/");
    for (top, events, snap) in [
        ("xyz.top", "xyz.events", "xyz.snap"),
        ("pair.top", "pair-in-flight.events", "pair-in-flight.snap"),
    ] {
        let (topo, script) = scenario_files(top, events);
        let want = std::fs::read_to_string(format!("{dir}{snap}")).unwrap();
        for seed in 0..200 {
            let snaps = scenario::run(&topo, &script, events, seed, Delivery::Causal).unwrap();
            assert_eq!(
                scenario::format(&topo, &snaps),
                want,
                "{events} seed {seed}"
            );
        }
    }
}

/// Starts a snapshot in its first callback, then panics in it.
struct StartsThenPanics;

impl chandy_lamport::Process for StartsThenPanics {
    type Message = ();
    type State = ();
    fn on_start(&mut self, ctx: &mut chandy_lamport::Context<'_, ()>) {
        if ctx.id() == 1 {
            ctx.start_snapshot();
            panic!("boom after the start");
        }
    }
    fn on_message(&mut self, _: usize, _: (), _: &mut chandy_lamport::Context<'_, ()>) {}
    fn record(&self) {}
}

#[test]
fn a_snapshot_started_by_a_callback_that_then_panics_ends_failed_in_the_simulator_too() {
    let mut sim = Simulation::new(
        Topology::complete(3),
        [StartsThenPanics, StartsThenPanics, StartsThenPanics],
        7,
    )
    .unwrap();
    sim.run_for(10);
    // As in the runtime: the id handed out has an end, the process's failure.
    let started = sim.started().to_vec();
    assert_eq!(started.len(), 1);
    let failed = sim.failed_snapshots();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!((failed[0].id, failed[0].initiator), (started[0], 1));
    assert!(
        matches!(
            &failed[0].error,
            chandy_lamport::Error::ProcessFailed { process: 1, .. }
        ),
        "{:?}",
        failed[0].error
    );
}
