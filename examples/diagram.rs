//! Draws a trace file as a space-time diagram (SVG), and optionally writes it for ShiViz.
//! Run: `cargo run --release --example diagram -- TRACE [--out FILE] [--from S] [--to S]
//! [--linear] [--shiviz FILE]`
//!
//! The trace is JSON Lines in the format of `chandy_lamport::trace`, from the simulator
//! (`Simulation::write_trace`) or from a runtime (`bank --trace FILE`). Its header line says
//! what its time counts (the axis is labelled so unless `--unit` says otherwise) and what it
//! left out; a trace from before the header is still read. The diagram goes to `--out`, or to
//! stdout; what was left out of it (by the trace itself, or by the window a long trace is drawn
//! in) is said on stderr and in the diagram. Exit status: 0; 2 for a file that cannot be read or
//! written, or a line that is not part of a trace (`FILE:LINE: message`).

use std::io::Write as _;
use std::process::ExitCode;

use chandy_lamport::trace::{self, shiviz, svg};
use clap::Parser;

/// Draws a trace as a space-time diagram.
#[derive(Parser, Debug)]
#[command(name = "diagram")]
struct Args {
    /// The trace file (JSON Lines).
    trace: String,
    /// Write the SVG here instead of to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<String>,
    /// Draw from this step on (in a runtime's trace, steps are microseconds).
    #[arg(long, value_name = "STEP")]
    from: Option<u64>,
    /// Draw up to this step.
    #[arg(long, value_name = "STEP")]
    to: Option<u64>,
    /// Draw at most this many events.
    #[arg(long, default_value_t = 400)]
    max_events: usize,
    /// What the trace's steps count, for the axis and the legend (default: what the trace's
    /// header says; `steps` for a trace without one).
    #[arg(long)]
    unit: Option<String>,
    /// Draw time to scale (x proportional to time) instead of compressed (quiet gaps
    /// shortened, every event spread out).
    #[arg(long)]
    linear: bool,
    /// The diagram's title (default: the trace file's name).
    #[arg(long)]
    title: Option<String>,
    /// Also write the trace's log for ShiViz (https://bestchai.bitbucket.io/shiviz/) here.
    #[arg(long, value_name = "FILE")]
    shiviz: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let path = &args.trace;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    let trace::TraceFile { header, events } =
        trace::parse(&text).map_err(|(line, e)| format!("{path}:{line}: {e}"))?;
    if header.is_none() {
        eprintln!(
            "diagram: {path} has no header line (written before trace format {}): what it left \
             out is unknown{}",
            trace::FORMAT_VERSION,
            if args.unit.is_none() {
                ", and its time is taken as steps (--unit to say otherwise)"
            } else {
                ""
            }
        );
    }
    let options = svg::SvgOptions {
        from: args.from,
        to: args.to,
        max_events: args.max_events,
        title: Some(args.title.clone().unwrap_or_else(|| path.clone())),
        unit: args.unit.clone(),
        header,
        time: if args.linear {
            svg::TimeAxis::Linear
        } else {
            svg::TimeAxis::Compressed
        },
        ..svg::SvgOptions::default()
    };
    let diagram = svg::render(&events, &options);
    if let Some(note) = &diagram.note {
        eprintln!("diagram: {note}");
    }
    match &args.out {
        Some(out) => {
            std::fs::write(out, &diagram.text).map_err(|e| format!("{out}: cannot write: {e}"))?
        }
        None => std::io::stdout()
            .write_all(diagram.text.as_bytes())
            .map_err(|e| format!("stdout: cannot write: {e}"))?,
    }
    if let Some(out) = &args.shiviz {
        std::fs::write(out, shiviz::shiviz(&events))
            .map_err(|e| format!("{out}: cannot write: {e}"))?;
    }
    Ok(())
}
