//! Runs a scripted scenario (the format of a widely used university assignment on this
//! algorithm) on the deterministic simulator and prints its snapshots the assignment's way.
//! Run: `cargo run --release --example scenario -- --topology FILE --events FILE [--seed S]`
//!
//! Stdout carries the snapshots only; the seed and the checks go to stderr. Exit status: 0 if
//! every snapshot conserves the tokens and is a consistent cut; 1 if one is not; 2 for a
//! malformed or impossible scenario (`FILE:LINE: message`).

use std::process::ExitCode;

use chandy_lamport::sim::scenario::{self, Delivery};
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
    let snapshots = match scenario::run(&topo, &events, &args.events, args.seed, delivery) {
        Ok(snapshots) => snapshots,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", scenario::format(&topo, &snapshots));
    let mut ok = true;
    for (number, snapshot) in snapshots.iter().enumerate() {
        let total = snapshot.total(|t| *t, |t| *t);
        if total != topo.total() {
            eprintln!("snapshot {number}: {total} tokens, not {}", topo.total());
            ok = false;
        }
        if let Err(e) = snapshot.verify() {
            eprintln!("snapshot {number}: not a consistent cut: {e}");
            ok = false;
        }
    }
    eprintln!(
        "scenario: {} snapshots, {}",
        snapshots.len(),
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
