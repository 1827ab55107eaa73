//! The rules that fire, in the log: with debug logging on, each marker rule a process applies
//! is one line in the words of the algorithm; with it off, nothing reaches the logger.

use std::sync::{Mutex, MutexGuard};

use chandy_lamport::sim::Simulation;
use chandy_lamport::{Context, Process, ProcessId, Topology};
use log::{LevelFilter, Log, Metadata, Record};

/// Keeps the debug lines of the crate.
struct Capture(Mutex<Vec<String>>);

impl Log for Capture {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.target().starts_with("chandy_lamport")
    }
    fn log(&self, r: &Record<'_>) {
        if self.enabled(r.metadata()) && r.level() == log::Level::Debug {
            self.0.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Capture = Capture(Mutex::new(Vec::new()));
/// The logger and the max level are global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn lines() -> MutexGuard<'static, Vec<String>> {
    LOGGER.0.lock().unwrap()
}

struct Ping;
impl Process for Ping {
    type Message = u8;
    type State = ();
    fn on_message(&mut self, _: ProcessId, _: u8, _: &mut Context<'_, u8>) {}
    fn record(&self) {}
}

/// Three processes on the complete graph; 1 sends two messages to 0 just after 0 starts a
/// snapshot, so 0 records them on channel 1->0.
fn run() -> Simulation<Ping> {
    let _ = log::set_logger(&LOGGER);
    let mut sim = Simulation::builder(Topology::complete(3))
        .delay(1..=1)
        .build((0..3).map(|_| Ping))
        .unwrap();
    sim.start_snapshot(0).unwrap();
    sim.with_process(1, |_, ctx| {
        ctx.send(0, 1).unwrap();
        ctx.send(0, 2).unwrap();
    })
    .unwrap();
    sim.run_until_snapshots_complete(100).unwrap();
    sim
}

#[test]
fn each_rule_that_fires_is_logged_in_words() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    log::set_max_level(LevelFilter::Debug);
    lines().clear();
    run();
    let log = lines().clone();
    let has = |words: &[&str]| log.iter().any(|l| words.iter().all(|w| l.contains(w)));
    assert!(
        has(&[
            "process 0, snapshot",
            "starts it: records its state",
            "starts recording channels 1->0, 2->0"
        ]),
        "{log:#?}"
    );
    assert!(
        has(&[
            "process 1, snapshot",
            "first marker on channel 0->1: channel 0->1 is empty",
            "starts recording channels 2->1"
        ]),
        "{log:#?}"
    );
    assert!(
        has(&["process 0, snapshot", "closes channel 1->0 with 2 messages"]),
        "{log:#?}"
    );
    assert!(
        has(&["process 0, snapshot", "closes channel 2->0 with 0 messages"]),
        "{log:#?}"
    );
    for p in 0..3 {
        assert!(
            has(&[&format!("process {p}, snapshot"), "its part is complete"]),
            "{log:#?}"
        );
    }
    assert!(has(&["complete (initiator 0"]), "{log:#?}");
}

#[test]
fn with_debug_off_nothing_reaches_the_logger() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    log::set_max_level(LevelFilter::Info);
    lines().clear();
    run();
    assert!(lines().is_empty(), "{:#?}", lines());
}
