//! Every interleaving of small systems, checked on the code that ships (`sim::exhaustive`).
//!
//! Each system below is explored exhaustively: every order of its events the FIFO channels allow,
//! up to reordering of events at different processes. In every execution every snapshot must
//! complete, pass the exact cut check, and conserve the money. The larger systems run with
//! `EXHAUSTIVE_LARGE=1`; their counts are in the documentation of `sim::exhaustive`.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use chandy_lamport::sim::exhaustive::{CheckError, Choice, Exhaustive, Interleaving, Report, Step};
use chandy_lamport::sim::Simulation;
use chandy_lamport::{Channel, Context, GlobalSnapshot, Process, ProcessId, SendError, Topology};

/// An amount of money, and how many more times it is to be passed on.
type Money = (u64, u32);

/// A bank teller: pays out when its script says so, passes on money that is to be passed on, and
/// can start a snapshot from inside a callback, when a given amount arrives.
struct Teller {
    balance: u64,
    /// Start a snapshot (once) when this amount arrives.
    snapshot_on: Option<u64>,
}

impl Teller {
    fn new(balance: u64) -> Self {
        Teller {
            balance,
            snapshot_on: None,
        }
    }

    fn pay(&mut self, to: ProcessId, amount: u64, hops: u32, ctx: &mut Context<'_, Money>) {
        self.balance -= amount;
        // Refused only by a process that has failed: the money stays here.
        if let Err(SendError::Disconnected { .. }) = ctx.send(to, (amount, hops)) {
            self.balance += amount;
        }
    }
}

impl Process for Teller {
    type Message = Money;
    type State = u64;

    fn on_message(&mut self, _: ProcessId, (amount, hops): Money, ctx: &mut Context<'_, Money>) {
        self.balance += amount;
        if hops > 0 {
            let to = ctx.neighbours()[0];
            self.pay(to, amount, hops - 1, ctx);
        }
        if self.snapshot_on == Some(amount) {
            self.snapshot_on = None;
            ctx.start_snapshot();
        }
    }

    fn record(&self) -> u64 {
        self.balance
    }
}

/// Process `from` pays `amount` to `to`, to be passed on `hops` more times.
fn pay(to: ProcessId, amount: u64, hops: u32) -> Step<Teller> {
    Step::call(move |t: &mut Teller, ctx| t.pay(to, amount, hops, ctx))
}

fn total(snapshot: &GlobalSnapshot<Money, u64>) -> u64 {
    snapshot.total(|balance| *balance, |(amount, _)| *amount)
}

/// A checker for tellers with these balances on `topology`, checking that every snapshot
/// conserves the money and that every snapshot started completed.
fn tellers(
    topology: Topology,
    balances: Vec<u64>,
    snapshot_on: Vec<Option<u64>>,
) -> Exhaustive<Teller> {
    let money: u64 = balances.iter().sum();
    Exhaustive::new(topology, move |sim| {
        sim.build(balances.iter().zip(&snapshot_on).map(|(&b, &on)| Teller {
            balance: b,
            snapshot_on: on,
        }))
    })
    .invariant(move |s| match total(s) {
        t if t == money => Ok(()),
        t => Err(format!("{t} in the bank, not {money}")),
    })
    .at_end(move |sim: &Simulation<Teller>| {
        let left: u64 = sim.processes().map(|t| t.balance).sum();
        if left != money {
            return Err(format!("{left} left at the end, not {money}"));
        }
        if sim.snapshots().len() != sim.started().len() {
            return Err(format!(
                "{} snapshots started, {} completed",
                sim.started().len(),
                sim.snapshots().len()
            ));
        }
        Ok(())
    })
}

fn one_way_ring(n: usize) -> Topology {
    Topology::from_edges(n, (0..n).map(|i| (i, (i + 1) % n)))
}

fn large() -> bool {
    std::env::var("EXHAUSTIVE_LARGE").is_ok_and(|v| v != "0")
}

/// Runs the check, prints its report (the counts the documentation of `sim::exhaustive` quotes) and
/// fails on a violation with the violation's own message (its replay line, its trace).
fn check(name: &str, mut checker: Exhaustive<Teller>) -> Report {
    match checker.run() {
        Ok(report) => {
            println!("{name}: {report}");
            assert!(report.is_exhaustive(), "{name}: {report}");
            report
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

// ---- The systems -------------------------------------------------------------------------------

/// Two processes, messages both ways, two overlapping snapshots from different initiators, the
/// starts scripted between the sends so that they interleave with the deliveries.
fn two_overlapping() -> Exhaustive<Teller> {
    tellers(Topology::complete(2), vec![10, 10], vec![None, None])
        .script(0, [pay(1, 3, 0), Step::start_snapshot(), pay(1, 2, 0)])
        .script(1, [pay(0, 4, 0), Step::start_snapshot(), pay(0, 1, 0)])
}

#[test]
fn two_processes_both_ways_two_overlapping_snapshots() {
    let report = check("two processes, two snapshots", two_overlapping());
    assert!(report.executions > 100, "{report}");
    assert!(report.snapshots == 2 * report.executions, "{report}");
}

/// Three processes on the complete graph, two overlapping snapshots: one scripted at 0, one
/// started by process 2 inside the callback that receives the amount 7.
fn three_complete() -> Exhaustive<Teller> {
    tellers(
        Topology::complete(3),
        vec![10, 10, 10],
        vec![None, None, Some(7)],
    )
    .script(0, [pay(2, 7, 0), Step::start_snapshot()])
    .script(1, [pay(0, 1, 1)])
}

#[test]
fn three_processes_complete_graph_snapshot_started_in_a_callback() {
    let report = check("three processes, complete graph", three_complete());
    assert!(report.snapshots == 2 * report.executions, "{report}");
}

/// A one-way ring of three: every process pays its successor (passed on once more) and starts a
/// snapshot.
fn ring_of_three() -> Exhaustive<Teller> {
    let mut checker = tellers(one_way_ring(3), vec![10, 10, 10], vec![None; 3]);
    for p in 0..3 {
        checker = checker.script(
            p,
            [pay((p + 1) % 3, p as u64 + 1, 1), Step::start_snapshot()],
        );
    }
    checker
}

#[test]
fn one_way_ring_of_three_sends_and_starts_everywhere() {
    let report = check("one-way ring of three", ring_of_three());
    assert!(report.snapshots == 3 * report.executions, "{report}");
}

/// A snapshot with money in flight, taken by a seeded simulation of three tellers.
fn snapshot_with_money_in_flight() -> GlobalSnapshot<Money, u64> {
    let topology = Topology::complete(3);
    let mut sim = Simulation::new(topology, (0..3).map(|_| Teller::new(10)), 7).unwrap();
    for (from, to, amount) in [(0, 1, 2), (1, 2, 3), (2, 0, 4), (0, 2, 1)] {
        sim.with_process(from, |t, ctx| t.pay(to, amount, 1, ctx))
            .unwrap();
    }
    sim.run_for(2);
    let id = sim.start_snapshot(1).unwrap();
    sim.run_until_snapshots_complete(1_000).unwrap();
    let snapshot = sim.completed_snapshot(id).unwrap();
    assert!(
        snapshot.in_flight().count() > 0,
        "the seed gives a snapshot with money in flight"
    );
    GlobalSnapshot::clone(snapshot)
}

/// A system restored from a snapshot (its in-flight money back in the channels), snapshotted
/// again while that money and new payments move.
fn restored() -> Exhaustive<Teller> {
    let snapshot = snapshot_with_money_in_flight();
    let money = total(&snapshot);
    assert_eq!(money, 30);
    Exhaustive::new(Topology::complete(3), move |sim| {
        sim.restore(&snapshot, |_, &balance| Teller::new(balance))
    })
    .script(2, [Step::start_snapshot()])
    .script(0, [pay(1, 1, 0)])
    .invariant(move |s| match total(s) {
        30 => Ok(()),
        t => Err(format!("{t} in the bank, not 30")),
    })
}

#[test]
fn restored_system_snapshotted_again() {
    let report = check("restored, snapshotted again", restored());
    assert!(report.snapshots == report.executions, "{report}");
}

// ---- The reduction -----------------------------------------------------------------------------

/// Two processes that each send one message and do nothing on receipt. By hand: the events are
/// `@0` and `1>0` at process 0, `@1` and `0>1` at process 1, with `0>1` after `@0` and `1>0` after
/// `@1`. A trace is fixed by the order at each process; both processes receiving first is a
/// cycle (`1>0 < @0 < 0>1 < @1 < 1>0`), so there are 3 traces, and 4! / (2 * 2) = 6 orders.
#[test]
fn trace_count_of_a_tiny_system_matches_the_hand_count() {
    let tiny = |reduction| {
        Exhaustive::new(Topology::complete(2), |sim| {
            sim.build([Teller::new(5), Teller::new(5)])
        })
        .script(0, [Step::send(1, (1, 0))])
        .script(1, [Step::send(0, (1, 0))])
        .reduction(reduction)
        .run()
        .unwrap()
    };
    let reduced = tiny(true);
    assert_eq!(reduced.executions, 3, "{reduced}");
    let every = tiny(false);
    assert_eq!((every.executions, every.pruned), (6, 0), "{every}");
}

/// What an execution ends with: final balances, and every snapshot's states and channels (ids
/// are the same in every order: each process draws its own).
fn outcome(sim: &Simulation<Teller>) -> String {
    let mut snapshots: Vec<String> = sim
        .snapshots()
        .iter()
        .map(|s| {
            let channels: Vec<_> = s
                .channels
                .iter()
                .map(|c| {
                    (
                        c.channel,
                        c.messages
                            .iter()
                            .map(|m| m.message.clone())
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            format!("{} by {}: {:?} {:?}", s.id, s.initiator, s.states, channels)
        })
        .collect();
    snapshots.sort();
    let balances: Vec<u64> = sim.processes().map(|t| t.balance).collect();
    format!("{balances:?} {snapshots:?}")
}

/// A system to check, built afresh for each mode.
type System = fn() -> Exhaustive<Teller>;

fn outcomes(checker: Exhaustive<Teller>, reduction: bool) -> (Report, BTreeSet<String>) {
    let seen = Rc::new(RefCell::new(BTreeSet::new()));
    let into = seen.clone();
    let report = checker
        .at_end(move |sim: &Simulation<Teller>| {
            into.borrow_mut().insert(outcome(sim));
            Ok::<(), String>(())
        })
        .reduction(reduction)
        .run()
        .unwrap();
    let seen = seen.borrow().clone();
    (report, seen)
}

#[test]
fn reduction_reaches_every_outcome_of_every_order() {
    let systems: [(&str, System); 2] = [
        ("one snapshot, messages both ways", || {
            tellers(Topology::complete(2), vec![10, 10], vec![None, None])
                .script(0, [pay(1, 3, 0), Step::start_snapshot()])
                .script(1, [pay(0, 4, 1)])
        }),
        ("snapshot started in a callback", || {
            tellers(Topology::complete(2), vec![10, 10], vec![None, Some(2)])
                .script(0, [pay(1, 2, 0), Step::start_snapshot()])
                .script(1, [pay(0, 1, 0)])
        }),
    ];
    for (name, system) in systems {
        let (reduced, with) = outcomes(system(), true);
        let (every, without) = outcomes(system(), false);
        println!("{name}: {reduced}\n{name}: {every}");
        assert!(with.len() > 1, "{name}: several outcomes");
        assert_eq!(with, without, "{name}: the reduction lost or made outcomes");
        assert!(every.executions > reduced.executions, "{name}");
        // One execution per trace: as many as there are outcomes at most, and never fewer
        // outcomes than executions would allow to be told apart.
        assert!(reduced.executions >= with.len() as u64, "{name}");
    }
}

/// Each process's own events, in order, as the trace shows them: two executions are reorderings
/// of one another (one trace) exactly when every process sees the same sequence.
fn local_histories(sim: &Simulation<Teller>) -> String {
    (0..sim.wiring().processes())
        .map(|p| {
            sim.trace()
                .iter()
                .filter(|e| e.process == p)
                .map(|e| format!("{:?} {:?} {:?} {:?}", e.kind, e.channel, e.seq, e.snapshot))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn reduction_explores_each_trace_exactly_once() {
    // Every order (reduction off) falls into some number of traces; with the reduction on, the
    // checker must run exactly one execution of each.
    let system = || {
        tellers(Topology::complete(2), vec![10, 10], vec![None, Some(2)])
            .script(0, [pay(1, 2, 1), Step::start_snapshot()])
            .script(1, [Step::start_snapshot(), pay(0, 1, 0)])
            .trace(true)
    };
    let histories = |reduction| {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let into = seen.clone();
        let report = system()
            .reduction(reduction)
            .at_end(move |sim: &Simulation<Teller>| {
                into.borrow_mut().push(local_histories(sim));
                Ok::<(), String>(())
            })
            .run()
            .unwrap();
        let seen = seen.borrow().clone();
        (report, seen)
    };
    let (every, all_orders) = histories(false);
    let traces: BTreeSet<String> = all_orders.iter().cloned().collect();
    let (reduced, explored) = histories(true);
    println!(
        "{} orders, {} traces: {reduced}",
        all_orders.len(),
        traces.len()
    );
    assert!(every.executions > traces.len() as u64 && traces.len() > 10);
    assert_eq!(
        reduced.executions,
        traces.len() as u64,
        "one execution per trace"
    );
    let distinct: BTreeSet<String> = explored.into_iter().collect();
    assert_eq!(distinct, traces, "no trace twice, none missed");
}

// ---- Faults ------------------------------------------------------------------------------------

#[test]
fn a_failure_at_every_point_fails_snapshots_cleanly() {
    // The money check at the end cannot hold once a process has failed (its balance is gone
    // with it), so only the snapshots are checked: each one completed verifies and conserves,
    // every other failed with ProcessFailed (the checker's own end check).
    let faulty = Exhaustive::new(Topology::complete(2), |sim| {
        sim.build([Teller::new(10), Teller::new(10)])
    })
    .script(0, [pay(1, 3, 0), Step::start_snapshot()])
    .script(1, [Step::start_snapshot(), pay(0, 4, 1)])
    .invariant(|s| match total(s) {
        20 => Ok(()),
        t => Err(format!("{t} in the bank, not 20")),
    })
    .at_end(|sim: &Simulation<Teller>| {
        let failed = sim.failed_snapshots().len();
        match sim.failures().len() {
            0 if failed == 0 => Ok(()),
            1 => Ok(()),
            n => Err(format!("{n} failures, {failed} failed snapshots")),
        }
    })
    .faults(true);
    let report = check("faults, two processes", faulty);
    let plain = check(
        "no faults, two processes",
        Exhaustive::new(Topology::complete(2), |sim| {
            sim.build([Teller::new(10), Teller::new(10)])
        })
        .script(0, [pay(1, 3, 0), Step::start_snapshot()])
        .script(1, [Step::start_snapshot(), pay(0, 4, 1)]),
    );
    assert!(report.executions > plain.executions, "{report} vs {plain}");
}

// ---- What a violation looks like ----------------------------------------------------------------

#[test]
fn a_violation_comes_with_an_interleaving_that_replays_it() {
    // Not a bug of the algorithm: an invariant that is false in some orders (a snapshot that
    // records money in flight), to see the checker find one and replay it.
    let system = || {
        Exhaustive::new(Topology::complete(2), |sim| {
            sim.build([Teller::new(10), Teller::new(10)])
        })
        .script(0, [Step::start_snapshot()])
        .script(1, [pay(0, 4, 0)])
        .invariant(
            |s: &GlobalSnapshot<Money, u64>| match s.in_flight().count() {
                0 => Ok(()),
                n => Err(format!("{n} messages in flight")),
            },
        )
    };
    let Err(CheckError::Violation(v)) = system().run() else {
        panic!("some order records the payment in flight");
    };
    assert!(v.message.contains("1 messages in flight"), "{}", v.message);
    // Such an order: 0 records, 1 pays, 1 receives 0's marker (records, sends its own after
    // the payment), 0 receives the payment (recorded in flight), then 1's marker: 5 events.
    assert_eq!(v.interleaving.len(), 5, "{v}");
    assert!(!v.trace.is_empty());
    // Each choice's events follow it, and together they are the whole trace.
    assert_eq!(
        v.happened.iter().map(|h| h.choice).collect::<Vec<_>>(),
        v.interleaving.choices()
    );
    assert_eq!(v.happened.last().map(|h| h.events.end), Some(v.trace.len()));
    assert!(v.happened[0].what.contains("Step::start_snapshot()"), "{v}");
    let line: Interleaving = v.interleaving.to_string().parse().unwrap();
    let Err(CheckError::Violation(again)) = system().replay(&line) else {
        panic!("the replay breaks the invariant again");
    };
    assert_eq!(again.message, v.message);
    assert_eq!(again.trace, v.trace);
    // A choice that is not possible there is refused, with its index.
    let Err(CheckError::NotEnabled { index, choice }) = system().replay(&"@0 1>0".parse().unwrap())
    else {
        panic!("nothing is in flight on 1 -> 0 after @0");
    };
    assert_eq!((index, choice), (1, Choice::Deliver(Channel::new(1, 0))));
}

#[test]
fn a_panic_after_a_failure_is_reported_with_where_it_happened_and_the_events_before_it() {
    // Written as the documentation's first example is, unwrapping its send: with faults on, a
    // payment to a teller that has failed panics. The checker's own injected failure leaves no
    // event in the trace and the refused send none either, yet the trace must show both.
    let system = || {
        Exhaustive::new(Topology::complete(2), |sim| {
            sim.build([Teller::new(10), Teller::new(10)])
        })
        .script(0, [Step::start_snapshot()])
        .script(
            1,
            [Step::call(|t: &mut Teller, ctx| {
                t.balance -= 4;
                ctx.send(0, (4, 0)).unwrap();
            })],
        )
        .faults(true)
    };
    let Err(CheckError::Violation(v)) = system().run() else {
        panic!("a payment to a failed teller panics");
    };
    assert!(
        v.message
            .starts_with("process 1 panicked at tests/exhaustive.rs:")
            && v.message.contains("Disconnected { from: 1, to: 0, .. }"),
        "{v}"
    );
    // The shortest such order: 0 fails, then 1 pays.
    assert_eq!(v.interleaving.to_string(), "!0 @1", "{v}");
    let said: Vec<&str> = v.happened.iter().map(|h| h.what.as_str()).collect();
    assert_eq!(said.len(), 2, "{v}");
    assert!(said[0].contains("process 0 fails"), "{v}");
    assert!(
        said[1].contains("Step::call(..)") && said[1].contains("process 1 panicked at"),
        "{v}"
    );
    let text = v.to_string();
    let trace = text.split_once("\ntrace").expect("a trace section").1;
    assert!(trace.lines().skip(1).any(|l| l.starts_with("!0: ")), "{v}");
    assert!(trace.lines().skip(1).any(|l| l.starts_with("@1: ")), "{v}");
    // The replay tells the same story.
    let Err(CheckError::Violation(again)) = system().replay(&v.interleaving) else {
        panic!("the replay panics again");
    };
    assert_eq!((again.message, again.happened), (v.message, v.happened));
}

#[test]
fn a_violation_that_its_replay_does_not_repeat_says_so() {
    // A check that holds state of its own across executions breaks the assumption that an
    // execution is a function of its choices: the first execution fails, its replay does not.
    // The violation must not pass the replay's trace off as the failing execution's.
    let mut calls = 0;
    let Err(CheckError::Violation(v)) = Exhaustive::new(Topology::complete(2), |sim| {
        sim.build([Teller::new(1), Teller::new(1)])
    })
    .script(0, [Step::start_snapshot()])
    .at_end(move |_: &Simulation<Teller>| {
        calls += 1;
        if calls == 1 {
            Err("only the first time")
        } else {
            Ok(())
        }
    })
    .run() else {
        panic!("the first execution fails");
    };
    assert!(
        v.message
            .starts_with("the check at the end failed: only the first time\n")
            && v.message
                .contains("its replay with the trace on broke nothing"),
        "{v}"
    );
}

#[test]
fn a_script_that_cannot_run_is_refused_before_anything_runs() {
    let mut checker = Exhaustive::new(one_way_ring(3), |sim| {
        sim.build((0..3).map(|_| Teller::new(1)))
    })
    .script(1, [Step::start_snapshot(), Step::send(0, (1, 0))]);
    let Err(CheckError::Script { process, step, .. }) = checker.run() else {
        panic!("there is no channel 1 -> 0 on a one-way ring");
    };
    assert_eq!((process, step), (1, 1));
}

#[test]
fn a_system_built_on_another_topology_is_refused() {
    let mut checker = Exhaustive::new(Topology::complete(2), |_| {
        Simulation::new(Topology::complete(3), (0..3).map(|_| Teller::new(1)), 0)
    });
    assert!(matches!(checker.run(), Err(CheckError::OtherTopology)));
}

#[test]
fn a_system_that_never_goes_quiet_is_cut_at_the_depth_bound_and_says_so() {
    // Money passed on (nearly) forever.
    let report = Exhaustive::new(Topology::complete(2), |sim| {
        sim.build([Teller::new(5), Teller::new(5)])
    })
    .script(0, [pay(1, 1, u32::MAX), Step::start_snapshot()])
    .max_depth(12)
    .run()
    .unwrap();
    assert!(report.bounded > 0 && !report.is_exhaustive(), "{report}");
    assert!(report.to_string().contains("NOT exhaustive"), "{report}");
}

// ---- Larger systems: EXHAUSTIVE_LARGE=1 ---------------------------------------------------------

#[test]
fn larger_systems() {
    if !large() {
        return;
    }
    // What the reduction saves, on the systems checked above.
    check(
        "large: two processes, two snapshots, every order (reduction off)",
        two_overlapping().reduction(false),
    );
    check(
        "large: restored, snapshotted again, every order (reduction off)",
        restored().reduction(false),
    );
    check(
        "large: three processes, complete graph, three snapshots",
        tellers(
            Topology::complete(3),
            vec![10, 10, 10],
            vec![None, Some(7), None],
        )
        .script(0, [pay(1, 7, 1), Step::start_snapshot()])
        .script(2, [pay(0, 2, 1), Step::start_snapshot()]),
    );
    check(
        "large: two processes, three snapshots each way",
        tellers(Topology::complete(2), vec![10, 10], vec![None, None])
            .script(
                0,
                [
                    pay(1, 3, 1),
                    Step::start_snapshot(),
                    pay(1, 2, 0),
                    Step::start_snapshot(),
                ],
            )
            .script(1, [pay(0, 4, 1), Step::start_snapshot(), pay(0, 1, 0)]),
    );
    check("large: one-way ring of four", {
        let mut checker = tellers(one_way_ring(4), vec![10; 4], vec![None; 4]);
        for p in 0..4 {
            checker = checker.script(
                p,
                [pay((p + 1) % 4, p as u64 + 1, 1), Step::start_snapshot()],
            );
        }
        checker
    });
}
