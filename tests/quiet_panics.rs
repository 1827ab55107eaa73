//! The exhaustive checker reports a panic in a process once, in its violation, and prints
//! nothing while it explores; every other panic prints as before (`sim::exhaustive`, "A
//! violation").
//!
//! What prints a panic is the panic hook, so this test installs its own hook first, one that
//! counts the panics it is given before printing them: the checker's filter chains to it, and
//! every panic the filter lets through is counted. Alone in its test binary, as the tests of one binary share one hook
//! and another test's hook (or none) would change the count.

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use chandy_lamport::sim::exhaustive::{CheckError, Exhaustive, Step};
use chandy_lamport::{Context, Process, ProcessId, Topology};

/// Panics that reached the hook installed here: those that would have been printed.
static PRINTED: AtomicUsize = AtomicUsize::new(0);

fn printed() -> usize {
    PRINTED.load(SeqCst)
}

/// A bank branch written as the documentation's first example is: it unwraps its sends, so it
/// panics when it pays a branch that has failed.
struct Branch(u64);

impl Branch {
    fn pay(&mut self, to: ProcessId, amount: u64, ctx: &mut Context<'_, u64>) {
        self.0 -= amount;
        ctx.send(to, amount).unwrap();
    }
}

impl Process for Branch {
    type Message = u64;
    type State = u64;
    fn on_message(&mut self, _: ProcessId, amount: u64, _: &mut Context<'_, u64>) {
        self.0 += amount;
    }
    fn record(&self) -> u64 {
        self.0
    }
}

fn unwrapping() -> Exhaustive<Branch> {
    let pay = |to, amount| Step::call(move |b: &mut Branch, ctx| b.pay(to, amount, ctx));
    Exhaustive::new(Topology::complete(2), |sim| {
        sim.build([Branch(10), Branch(10)])
    })
    .script(0, [pay(1, 3), Step::start_snapshot(), pay(1, 1)])
    .script(1, [pay(0, 4), Step::start_snapshot()])
    .faults(true)
}

#[test]
fn the_checker_prints_none_of_the_panics_it_reports_and_every_other_one() {
    let print = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        PRINTED.fetch_add(1, SeqCst);
        print(info);
    }));

    // A failure injected before a payment makes the payer panic, in many orders; the checker
    // explores them all (it keeps looking for a shorter one) and reports the shortest.
    let Err(CheckError::Violation(v)) = unwrapping().run() else {
        panic!("a payment to a failed branch panics");
    };
    assert!(
        v.message.contains("panicked at tests/quiet_panics.rs:")
            && v.message.contains("Disconnected"),
        "{v}"
    );
    assert!(v.report.executions > 1, "{v}");
    assert_eq!(printed(), 0, "panics printed while the checker ran");

    // After the checker, on the same thread: printed.
    let _ = panic::catch_unwind(|| panic!("after the checker"));
    assert_eq!(printed(), 1);

    // A panic in the user's own check is not the checker's to report: it leaves the checker,
    // printed on its way.
    let escaped = panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = Exhaustive::new(Topology::complete(2), |sim| {
            sim.build([Branch(10), Branch(10)])
        })
        .script(0, [Step::start_snapshot()])
        .invariant(|_| -> Result<(), String> { panic!("the invariant's own bug") })
        .run();
    }));
    assert!(escaped.is_err());
    assert_eq!(printed(), 2);

    // So is a panic in the closure that builds the system (outside any process): printed once,
    // on its way out, saying where it happened.
    let escaped = panic::catch_unwind(AssertUnwindSafe(|| {
        let _ = Exhaustive::new(Topology::complete(2), |_| -> Result<_, _> {
            panic!("the builder's own bug")
        })
        .script(0, [Step::<Branch>::start_snapshot()])
        .run();
    }));
    let payload = escaped.expect_err("the panic goes on");
    let message = payload
        .downcast_ref::<String>()
        .expect("a formatted message");
    assert!(
        message.contains("the builder's own bug") && message.contains("tests/quiet_panics.rs:"),
        "{message}"
    );
    assert_eq!(printed(), 3);

    // Checkers on two threads at once, while a third thread panics: each of the third's panics
    // is printed, none of the checkers'. (A filter for the whole program instead of per thread
    // would hide the third's; one removed when the first checker ends would let the second's
    // through.)
    const ELSEWHERE: usize = 40;
    let stop = AtomicBool::new(false);
    let start = Barrier::new(3);
    let runs = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                start.wait();
                while !stop.load(SeqCst) {
                    assert!(matches!(unwrapping().run(), Err(CheckError::Violation(_))));
                    runs.fetch_add(1, SeqCst);
                }
            });
        }
        s.spawn(|| {
            start.wait();
            for k in 0..ELSEWHERE {
                let _ = panic::catch_unwind(|| panic!("elsewhere {k}"));
                thread::sleep(Duration::from_millis(2));
            }
            stop.store(true, SeqCst);
        });
    });
    assert!(
        runs.load(SeqCst) >= 2,
        "the checkers ran while the third thread panicked"
    );
    assert_eq!(printed(), 3 + ELSEWHERE);
}
