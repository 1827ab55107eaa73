//! Runs a scripted scenario (the format of a widely used university assignment on this
//! algorithm) on the deterministic simulator and prints its snapshots the assignment's way.
//! Run: `cargo run --release --example scenario -- --topology FILE --events FILE [--seed S]`
//!
//! `--svg FILE` also writes the run's space-time diagram (`--from`/`--to`: only those steps),
//! `--shiviz FILE` its log for ShiViz. The README's picture is made by
//! `cargo run --release --example scenario -- --topology tests/scenarios/xyz.top --events
//! tests/scenarios/xyz.events --seed 0 --svg docs/space-time.svg`.
//!
//! Stdout carries the snapshots only; the seed and the checks go to stderr. Exit status: 0 if
//! every snapshot conserves the tokens and is a consistent cut; 1 if one is not; 2 for a
//! malformed or impossible scenario (`FILE:LINE: message`), or an output file that cannot be
//! written.

use std::process::ExitCode;

use chandy_lamport::sim::scenario::{self, Delivery};
use chandy_lamport::trace::{shiviz, svg};
use clap::Parser;

/// Runs a scenario on the simulator.
#[derive(Parser, Debug)]
#[command(name = "scenario")]
struct Args {
    /// The topology file: process count, `NAME TOKENS` lines, `SRC DST` lines.
    #[arg(long)]
    topology: String,
    /// The events file: `send SRC DST N`, `snapshot NAME`, `tick [K]` lines.
    #[arg(long)]
    events: String,
    /// Seed of the simulator's delays and ordering.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Keep only FIFO per channel (by default delivery is also causal, so a scripted send that
    /// precedes a snapshot is always inside it).
    #[arg(long)]
    fifo_only: bool,
    /// Also write the run's space-time diagram (SVG) to this file.
    #[arg(long, value_name = "FILE")]
    svg: Option<String>,
    /// Also write the run's log for ShiViz (https://bestchai.bitbucket.io/shiviz/) to this file.
    #[arg(long, value_name = "FILE")]
    shiviz: Option<String>,
    /// Draw the diagram from this step on.
    #[arg(long, value_name = "STEP")]
    from: Option<u64>,
    /// Draw the diagram up to this step.
    #[arg(long, value_name = "STEP")]
    to: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    eprintln!("scenario: seed {}", args.seed);
    let read =
        |path: &str| std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"));
    let parsed = read(&args.topology).and_then(|top| {
        let topo = scenario::parse_topology(&args.topology, &top).map_err(|e| e.to_string())?;
        let events = read(&args.events)?;
        let events =
            scenario::parse_events(&args.events, &events, &topo).map_err(|e| e.to_string())?;
        Ok((topo, events))
    });
    let (topo, events) = match parsed {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let delivery = if args.fifo_only {
        Delivery::Fifo
    } else {
        Delivery::Causal
    };
    // Tracing changes no random choice: the snapshots are those of an untraced run.
    let scenario::TracedRun { snapshots, trace } =
        match scenario::run_traced(&topo, &events, &args.events, args.seed, delivery) {
            Ok(run) => run,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        };
    if let Some(path) = &args.svg {
        let options = svg::SvgOptions {
            from: args.from,
            to: args.to,
            title: Some(format!(
                "scenario {} / {}, seed {}",
                args.topology, args.events, args.seed
            )),
            names: topo.names.clone(),
            ..svg::SvgOptions::default()
        };
        let diagram = svg::render(&trace, &options);
        if let Some(note) = &diagram.note {
            eprintln!("scenario: diagram: {note}");
        }
        if let Err(e) = std::fs::write(path, diagram.text) {
            eprintln!("{path}: cannot write: {e}");
            return ExitCode::from(2);
        }
    }
    if let Some(path) = &args.shiviz {
        if let Err(e) = std::fs::write(path, shiviz::shiviz(&trace)) {
            eprintln!("{path}: cannot write: {e}");
            return ExitCode::from(2);
        }
    }
    print!("{}", scenario::format(&topo, &snapshots));
    let mut ok = true;
    for (number, snapshot) in snapshots.iter().enumerate() {
        let total = snapshot.total(|t| *t, |t| *t);
        if total != topo.total() {
            eprintln!(
                "snapshot {number}: {}, not {}",
                count(total, "token", "tokens"),
                topo.total()
            );
            ok = false;
        }
        if let Err(e) = snapshot.verify() {
            eprintln!("snapshot {number}: not a consistent cut: {e}");
            ok = false;
        }
    }
    eprintln!(
        "scenario: {}, {}",
        count(snapshots.len(), "snapshot", "snapshots"),
        if ok {
            "all conserve the tokens and pass the cut check"
        } else {
            "CHECK FAILED"
        }
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// `n` things, in words: `1 branch`, `2 branches`.
fn count(n: impl std::fmt::Display, one: &str, many: &str) -> String {
    match n.to_string() {
        n if n == "1" => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}
