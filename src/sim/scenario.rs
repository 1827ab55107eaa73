//! Scripted scenarios in the format of a widely used university assignment on this algorithm,
//! run on the simulator.
//!
//! Topology file: the number of processes; then one line `NAME TOKENS` per process (its
//! starting balance); then one line `SRC DST` per directed channel. Events file, one per line:
//! `send SRC DST N` (SRC sends N tokens to DST now), `snapshot NAME` (NAME starts a snapshot
//! now; snapshots are numbered 0, 1, 2... in the order they start), `tick` or `tick K` (advance
//! time by 1 or K steps, delivering whatever falls due). Lines starting with `#` and blank lines
//! are ignored in both. Processes never send on their own. After the last event, time advances
//! until every snapshot has completed and nothing is in flight.
//!
//! [`format()`] prints the snapshots the assignment's way: for each, in start order, its number,
//! one line `NAME TOKENS` per process in the topology file's order, then one line
//! `SRC DST token(N)` per recorded in-flight message, channel by channel in the file's edge
//! order, in arrival order; a blank line between snapshots.

use std::fmt;

use crate::error::plural;
use crate::process::{Context, Process};
use crate::sim::Simulation;
use crate::snapshot::GlobalSnapshot;
use crate::topology::{ProcessId, Topology};
use crate::trace::TraceEvent;

/// A mistake in a scenario file, or an event that cannot happen, at `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file, as named by the caller.
    pub file: String,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for ScenarioError {}

/// The processes and channels of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioTopology {
    /// Process names, in file order (process `i` is `names[i]`).
    pub names: Vec<String>,
    /// Starting tokens, by process.
    pub tokens: Vec<u64>,
    /// Channels, in file order, as process indices.
    pub edges: Vec<(ProcessId, ProcessId)>,
}

impl ScenarioTopology {
    /// The topology, for the simulator.
    pub fn topology(&self) -> Topology {
        Topology::from_edges(self.names.len(), self.edges.iter().copied())
    }

    /// Tokens in the whole system.
    pub fn total(&self) -> u64 {
        self.tokens.iter().sum()
    }

    fn index(&self, name: &str) -> Option<ProcessId> {
        self.names.iter().position(|n| n == name)
    }
}

/// One scripted event, with its line in the events file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScenarioEvent {
    /// `from` sends `tokens` to `to` now.
    Send {
        /// Sender.
        from: ProcessId,
        /// Receiver.
        to: ProcessId,
        /// Tokens sent.
        tokens: u64,
        /// Line in the events file.
        line: usize,
    },
    /// `process` starts a snapshot now.
    Snapshot {
        /// Initiator.
        process: ProcessId,
        /// Line in the events file.
        line: usize,
    },
    /// Time advances by `steps`.
    Tick {
        /// Steps.
        steps: u64,
        /// Line in the events file.
        line: usize,
    },
}

/// A token holder: the process of every scenario. It sends only when an event says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenHolder {
    /// Tokens it holds.
    pub tokens: u64,
}

impl Process for TokenHolder {
    type Message = u64;
    type State = u64;

    fn on_message(&mut self, _from: ProcessId, tokens: u64, _ctx: &mut Context<'_, u64>) {
        self.tokens += tokens;
    }

    fn record(&self) -> u64 {
        self.tokens
    }
}

/// The meaningful lines of a file: (line number from 1, fields).
fn lines(text: &str) -> impl Iterator<Item = (usize, Vec<&str>)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| (i, l.split_whitespace().collect()))
}

/// Parses a topology file (`file` names it in errors).
pub fn parse_topology(file: &str, text: &str) -> Result<ScenarioTopology, ScenarioError> {
    let err = |line: usize, message: String| ScenarioError {
        file: file.to_string(),
        line,
        message,
    };
    let mut it = lines(text);
    let (count_line, fields) = it.next().ok_or_else(|| err(1, "empty topology".into()))?;
    let n: usize = match fields.as_slice() {
        [n] => n.parse().map_err(|_| {
            err(
                count_line,
                format!("expected the number of processes, got {n:?}"),
            )
        })?,
        _ => {
            return Err(err(
                count_line,
                "expected the number of processes alone".into(),
            ))
        }
    };
    if n == 0 {
        return Err(err(
            count_line,
            "a topology needs at least one process".into(),
        ));
    }
    let mut topo = ScenarioTopology {
        names: Vec::new(),
        tokens: Vec::new(),
        edges: Vec::new(),
    };
    let mut edge_lines = Vec::new();
    for (line, fields) in it {
        let [a, b] = fields.as_slice() else {
            let what = if topo.names.len() < n {
                "NAME TOKENS"
            } else {
                "SRC DST"
            };
            return Err(err(line, format!("expected `{what}`")));
        };
        if topo.names.len() < n {
            if topo.index(a).is_some() {
                return Err(err(line, format!("process {a} is declared twice")));
            }
            let tokens = b
                .parse()
                .map_err(|_| err(line, format!("tokens of {a} must be a number, got {b:?}")))?;
            topo.names.push(a.to_string());
            topo.tokens.push(tokens);
        } else {
            let from = topo
                .index(a)
                .ok_or_else(|| err(line, format!("unknown process {a}")))?;
            let to = topo
                .index(b)
                .ok_or_else(|| err(line, format!("unknown process {b}")))?;
            if from == to {
                return Err(err(line, format!("channel {a} -> {b} is a self-loop")));
            }
            if topo.edges.contains(&(from, to)) {
                return Err(err(line, format!("channel {a} -> {b} is listed twice")));
            }
            topo.edges.push((from, to));
            edge_lines.push(line);
        }
    }
    if topo.names.len() < n {
        return Err(err(
            count_line,
            format!(
                "{} announced, {} declared",
                plural(n, "process"),
                topo.names.len()
            ),
        ));
    }
    if let Err(e) = topo.topology().validate() {
        let message = match e {
            crate::TopologyError::NotStronglyConnected { from, to } => format!(
                "not strongly connected: no path from {} to {}",
                topo.names[from], topo.names[to]
            ),
            other => other.to_string(),
        };
        return Err(err(count_line, message));
    }
    Ok(topo)
}

/// Parses an events file against its topology.
pub fn parse_events(
    file: &str,
    text: &str,
    topo: &ScenarioTopology,
) -> Result<Vec<ScenarioEvent>, ScenarioError> {
    let err = |line: usize, message: String| ScenarioError {
        file: file.to_string(),
        line,
        message,
    };
    let process = |line: usize, name: &str| {
        topo.index(name)
            .ok_or_else(|| err(line, format!("unknown process {name}")))
    };
    let number = |line: usize, what: &str, s: &str| {
        s.parse::<u64>()
            .map_err(|_| err(line, format!("{what} must be a number, got {s:?}")))
    };
    lines(text)
        .map(|(line, fields)| match fields.as_slice() {
            ["send", a, b, n] => {
                let (from, to) = (process(line, a)?, process(line, b)?);
                if !topo.edges.contains(&(from, to)) {
                    return Err(err(line, format!("there is no channel {a} -> {b}")));
                }
                Ok(ScenarioEvent::Send {
                    from,
                    to,
                    tokens: number(line, "tokens", n)?,
                    line,
                })
            }
            ["snapshot", a] => Ok(ScenarioEvent::Snapshot {
                process: process(line, a)?,
                line,
            }),
            ["tick"] => Ok(ScenarioEvent::Tick { steps: 1, line }),
            ["tick", k] => Ok(ScenarioEvent::Tick {
                steps: number(line, "steps", k)?,
                line,
            }),
            _ => Err(err(
                line,
                format!(
                    "expected `send SRC DST N`, `snapshot NAME` or `tick [K]`, got {:?}",
                    fields.join(" ")
                ),
            )),
        })
        .collect()
}

/// How long a scenario may run after its last event before it counts as stuck.
const SETTLE_STEPS: u64 = 1_000_000;

/// How a scenario's messages are delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// FIFO per channel and causal order (the default): a token sent before a snapshot starts at
    /// its sender is inside that snapshot at its receiver, whatever path the markers take, as the
    /// assignment expects of its scripted sends.
    Causal,
    /// FIFO per channel only: a marker that took a faster path may overtake a token, which then
    /// shows up as in flight instead. Still consistent; more interleavings.
    Fifo,
}

/// Runs a scenario on the simulator with `seed`. Returns the snapshots in start order.
/// `events_file` names the events file in errors (a send larger than the sender's balance).
pub fn run(
    topo: &ScenarioTopology,
    events: &[ScenarioEvent],
    events_file: &str,
    seed: u64,
    delivery: Delivery,
) -> Result<Vec<GlobalSnapshot<u64, u64>>, ScenarioError> {
    simulate(topo, events, events_file, seed, delivery, false).map(|sim| snapshots(&sim))
}

/// Runs a scenario as [`run`] does, keeping the simulator's event trace too (for a space-time
/// diagram, [`trace::svg`](crate::trace::svg), or a ShiViz log,
/// [`trace::shiviz`](crate::trace::shiviz)). The snapshots are the same as [`run`]'s: tracing
/// changes no random choice.
pub fn run_traced(
    topo: &ScenarioTopology,
    events: &[ScenarioEvent],
    events_file: &str,
    seed: u64,
    delivery: Delivery,
) -> Result<TracedRun, ScenarioError> {
    simulate(topo, events, events_file, seed, delivery, true).map(|sim| TracedRun {
        snapshots: snapshots(&sim),
        trace: sim.trace().to_vec(),
    })
}

/// A scenario's run with its trace (see [`run_traced`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedRun {
    /// The snapshots in start order, as [`run`] returns them.
    pub snapshots: Vec<GlobalSnapshot<u64, u64>>,
    /// The simulator's event trace of the run.
    pub trace: Vec<TraceEvent>,
}

/// The completed snapshots of a finished scenario, in start order.
fn snapshots(sim: &Simulation<TokenHolder>) -> Vec<GlobalSnapshot<u64, u64>> {
    sim.started()
        .iter()
        .map(|id| {
            (**sim
                .completed_snapshot(*id)
                .expect("every snapshot completed"))
            .clone()
        })
        .collect()
}

/// Plays a scenario to the end: the one body of [`run`] and [`run_traced`].
fn simulate(
    topo: &ScenarioTopology,
    events: &[ScenarioEvent],
    events_file: &str,
    seed: u64,
    delivery: Delivery,
    trace: bool,
) -> Result<Simulation<TokenHolder>, ScenarioError> {
    let holders = topo.tokens.iter().map(|&tokens| TokenHolder { tokens });
    let built = Simulation::builder(topo.topology())
        .seed(seed)
        .causal(delivery == Delivery::Causal)
        .trace(trace)
        .build(holders);
    let mut sim = built.map_err(|e| ScenarioError {
        file: events_file.to_string(),
        line: 0,
        message: e.to_string(),
    })?;
    for event in events {
        match *event {
            ScenarioEvent::Send {
                from,
                to,
                tokens,
                line,
            } => {
                let sent = sim
                    .with_process(from, |holder, ctx| {
                        if holder.tokens < tokens {
                            return Err(holder.tokens);
                        }
                        holder.tokens -= tokens;
                        ctx.send(to, tokens)
                            .expect("the events file only names channels");
                        Ok(())
                    })
                    .expect("the events file only names processes");
                if let Err(held) = sent {
                    return Err(ScenarioError {
                        file: events_file.to_string(),
                        line,
                        message: format!(
                            "{} sends {} but holds {held}",
                            topo.names[from],
                            plural(tokens, "token")
                        ),
                    });
                }
            }
            ScenarioEvent::Snapshot { process, .. } => {
                sim.start_snapshot(process)
                    .expect("the events file only names processes");
            }
            ScenarioEvent::Tick { steps, .. } => sim.run_for(steps),
        }
    }
    sim.run_until_quiet(SETTLE_STEPS)
        .map_err(|_| ScenarioError {
            file: events_file.to_string(),
            line: 0,
            message: format!("snapshots still running after {SETTLE_STEPS} steps"),
        })?;
    Ok(sim)
}

/// The snapshots in the assignment's output format (see the module documentation).
pub fn format(topo: &ScenarioTopology, snapshots: &[GlobalSnapshot<u64, u64>]) -> String {
    let mut out = String::new();
    for (number, snapshot) in snapshots.iter().enumerate() {
        if number > 0 {
            out.push('\n');
        }
        out.push_str(&format!("{number}\n"));
        for (name, tokens) in topo.names.iter().zip(&snapshot.states) {
            out.push_str(&format!("{name} {tokens}\n"));
        }
        // The simulator lists channels in the topology's order, which is the file's.
        for channel in &snapshot.channels {
            for m in &channel.messages {
                out.push_str(&format!(
                    "{} {} token({})\n",
                    topo.names[channel.channel.from], topo.names[channel.channel.to], m.message
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const XYZ: &str = "3\nX 5\nY 5\nZ 5\nX Y\nX Z\nY X\nY Z\nZ X\nZ Y\n";

    #[test]
    fn the_token_ahead_of_the_marker_is_in_y_under_every_seed() {
        let topo = parse_topology("t", XYZ).unwrap();
        let events = parse_events("e", "send X Y 1\nsnapshot X\ntick\n", &topo).unwrap();
        for seed in 0..200 {
            let snaps = run(&topo, &events, "e", seed, Delivery::Causal).unwrap();
            assert_eq!(format(&topo, &snaps), "0\nX 4\nY 6\nZ 5\n", "seed {seed}");
        }
    }

    #[test]
    fn with_fifo_only_the_token_may_be_overtaken_but_is_never_lost() {
        let topo = parse_topology("t", XYZ).unwrap();
        let events = parse_events("e", "send X Y 1\nsnapshot X\ntick\n", &topo).unwrap();
        let outputs: std::collections::HashSet<String> = (0..200)
            .map(|seed| {
                format(
                    &topo,
                    &run(&topo, &events, "e", seed, Delivery::Fifo).unwrap(),
                )
            })
            .collect();
        let expected: std::collections::HashSet<String> = [
            "0\nX 4\nY 6\nZ 5\n".to_string(),
            "0\nX 4\nY 5\nZ 5\nX Y token(1)\n".to_string(),
        ]
        .into();
        assert_eq!(outputs, expected, "both cuts occur, and only these");
    }

    #[test]
    fn a_traced_run_finds_the_same_snapshots_and_traces_them() {
        let topo = parse_topology("t", XYZ).unwrap();
        let events = parse_events("e", "send X Y 1\nsnapshot X\ntick\n", &topo).unwrap();
        for delivery in [Delivery::Causal, Delivery::Fifo] {
            for seed in 0..20 {
                let plain = run(&topo, &events, "e", seed, delivery).unwrap();
                let traced = run_traced(&topo, &events, "e", seed, delivery).unwrap();
                assert_eq!(plain, traced.snapshots, "seed {seed}");
                let records = traced
                    .trace
                    .iter()
                    .filter(|e| e.kind == crate::trace::TraceKind::Record)
                    .count();
                assert_eq!(records, 3, "one record per process, seed {seed}");
            }
        }
    }

    #[test]
    fn comments_and_blank_lines_anywhere() {
        let topo =
            parse_topology("t", "# two\n\n2\n# names\nA 1\n\nB 2\nA B\n# back\nB A\n").unwrap();
        assert_eq!(topo.names, ["A", "B"]);
        assert_eq!(topo.edges, [(0, 1), (1, 0)]);
        let events = parse_events("e", "\n# go\ntick 3\n\nsend B A 2 \n", &topo).unwrap();
        assert_eq!(events.len(), 2);
    }

    #[test]
    fn mistakes_are_named_by_file_and_line() {
        let bad = |t: &str| parse_topology("top.txt", t).unwrap_err().to_string();
        assert_eq!(
            bad("x\n"),
            "top.txt:1: expected the number of processes, got \"x\""
        );
        assert_eq!(
            bad("2\nA 1\nB q\n"),
            "top.txt:3: tokens of B must be a number, got \"q\""
        );
        assert_eq!(bad("2\nA 1\nB 1\nA C\n"), "top.txt:4: unknown process C");
        assert_eq!(
            bad("2\nA 1\nB 1\nA B\n"),
            "top.txt:1: not strongly connected: no path from B to A"
        );
        assert_eq!(
            bad("2\nA 1\nB 1\nA A\n"),
            "top.txt:4: channel A -> A is a self-loop"
        );
        let topo = parse_topology("t", "2\nA 1\nB 1\nA B\nB A\n").unwrap();
        let ev = |e: &str| parse_events("ev.txt", e, &topo).unwrap_err().to_string();
        assert_eq!(ev("tick\nsend A C 1\n"), "ev.txt:2: unknown process C");
        assert_eq!(
            ev("fly A\n"),
            "ev.txt:1: expected `send SRC DST N`, `snapshot NAME` or `tick [K]`, got \"fly A\""
        );
        let events = parse_events("ev.txt", "send A B 1\nsend A B 1\n", &topo).unwrap();
        assert_eq!(
            run(&topo, &events, "ev.txt", 0, Delivery::Causal)
                .unwrap_err()
                .to_string(),
            "ev.txt:2: A sends 1 token but holds 0"
        );
        let one_way = parse_topology("t", "3\nA 1\nB 1\nC 1\nA B\nB C\nC A\n").unwrap();
        assert_eq!(
            parse_events("ev.txt", "send B A 1\n", &one_way)
                .unwrap_err()
                .to_string(),
            "ev.txt:1: there is no channel B -> A"
        );
    }
}
