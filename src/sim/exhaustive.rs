//! Checking every interleaving of a small system, on the code that ships.
//!
//! Seeds, property tests and stress runs sample the orders in which a concurrent system's events
//! can happen; a sample can miss the one order that breaks it. [`Exhaustive`] does not sample:
//! it runs a small system again and again from scratch, each time in another order, until it has
//! seen every order the FIFO channels allow, up to equivalence (below). Every process runs the
//! same per-process code as in the threaded [`Runtime`](crate::Runtime) (sending, marker rules,
//! recording: `host.rs`), and every delivery goes through the simulator's own delivery code, so
//! what the checker proves is proved of that code, not of a model of it.
//!
//! # What is explored
//!
//! A *system* is a topology, its processes (built fresh for every execution by a closure you
//! give, which may also restore them from a snapshot), and a *script*: for each process, a list
//! of [`Step`]s it takes on its own initiative (send a message, start a snapshot, tick, or any
//! call into the process). At each point of an execution the checker chooses the next event
//! among those enabled:
//!
//! - `a>b`: the message or marker at the head of channel `a -> b` is delivered to `b`;
//! - `@p`: process `p` takes the next step of its script;
//! - `!p`: process `p` fails, as if its code had panicked (only with [`Exhaustive::faults`]:
//!   then at most one failure per execution, at any point where something else could happen).
//!
//! So a scripted snapshot start can fall before, between or after the deliveries at its process,
//! and a snapshot started inside a callback (by [`Context::start_snapshot`]) starts wherever that
//! callback's delivery falls. An execution ends when nothing is enabled: every channel is empty
//! and every script is done. Then the checker checks:
//!
//! 1. every snapshot started has completed (or, after an injected failure, failed with
//!    [`Error::ProcessFailed`](crate::Error::ProcessFailed)): no order leaves one open;
//! 2. every completed snapshot passes [`GlobalSnapshot::verify`] (the exact cut check);
//! 3. your invariant ([`Exhaustive::invariant`]) holds on every completed snapshot;
//! 4. your check of the final state ([`Exhaustive::at_end`]), if any, passes;
//!
//! and, after every event, that no process panicked (a marker-rule error panics inside the core,
//! so it is caught here too) other than by an injected failure.
//!
//! # The reduction, and what it assumes
//!
//! Two events at different processes *commute*: doing them in either order leads to the same
//! state. That holds because a process's event touches only that process's state, the tail of
//! its outgoing channels (sends append) and the head of one incoming channel (a delivery takes
//! it); and a process's snapshot ids come from its own generator, not from one shared by all
//! (see the simulator's `network.rs`). An injected failure touches every process (every running
//! snapshot fails), so it commutes with nothing. Orders that differ only by swapping commuting
//! neighbours are equivalent (one Mazurkiewicz trace) and end in the same state, so checking one
//! of them suffices. The checker uses sleep sets (Godefroid, 1996): when it has explored event
//! `e` from some point, it puts `e` to sleep in the other branches from that point until an event
//! that does not commute with `e` happens; a branch where everything enabled is asleep is
//! *pruned*, as an equivalent execution was already explored. Sleep sets explore exactly one
//! execution of each trace that ends; [`Report::executions`] is therefore the number of distinct
//! outcomes-up-to-reordering, and [`Report::pruned`] counts the branches cut.
//!
//! **The assumption**: processes share no state outside messages. A `Process` that reaches
//! another through a global, a `static`, an `Arc<Mutex<..>>` or the clock breaks the
//! commutation argument, and the reduction may then miss orders. For such a system, or to
//! cross-check, turn the reduction off ([`Exhaustive::reduction`]`(false)`): every permutation
//! is then explored, which costs far more and finds the same outcomes when the assumption holds
//! (a test in `tests/exhaustive.rs` shows both modes reach the same set on small systems).
//!
//! # How far it scales
//!
//! The number of traces grows exponentially with the number of events that do not commute
//! (events at one process, in the orders their senders allow), and every execution is a run from
//! scratch: about 180,000 to 400,000 runs per second in a release build on one core, for systems
//! of 10 to 30 events. Measured on a 2-core Xeon (2026-11-26) with `EXHAUSTIVE_LARGE=1 cargo test
//! --release --test exhaustive -- --nocapture`, which prints each system's report (the systems
//! are in `tests/exhaustive.rs`; money moves between tellers and every snapshot must conserve
//! it):
//!
//! | system | events (longest) | traces (executions) | pruned | every order | time (release) |
//! |---|---|---|---|---|---|
//! | 2 processes, each: pay, start, pay | 14 | 363 | 730 | 119,478 | 0.004 s |
//! | restored from a snapshot, 1 start, 1 payment | 15 | 836 | 6,152 | 17,714,097 | 0.03 s (66 s every order) |
//! | one-way ring of 3, each: pay (passed on), start | 21 | 1,323 | 10,281 | | 0.05 s |
//! | complete graph of 3, 2 snapshots, one started in a callback | 18 | 7,018 | 48,031 | | 0.23 s |
//! | 2 processes, 3 snapshots, money passed on | 19 | 3,651 | 9,977 | | 0.04 s |
//! | one-way ring of 4, each: pay (passed on), start | 32 | 52,697 | 907,846 | | 5.4 s |
//! | complete graph of 3, 3 snapshots, money passed on | 26 | 2,235,637 | 18,424,613 | | 111 s |
//!
//! So: a few processes, a few messages and two or three snapshots are checked in well under a
//! second; a fourth process or a third snapshot on three processes takes seconds to minutes. The
//! first four rows run in `cargo test` (all the exhaustive tests take about 3 s in a debug
//! build). *Pruned* branches (where everything enabled is asleep) cost a run each: sleep sets
//! alone never explore a trace twice, but can reach such dead ends; a dynamic partial-order
//! reduction with source sets would avoid most of them.
//!
//! A system that does not go quiet by itself (processes that answer every message with a new
//! one) needs a depth bound ([`Exhaustive::max_depth`]): executions cut there are counted in
//! [`Report::bounded`] and the report says it is not exhaustive. A budget of executions
//! ([`Exhaustive::max_executions`]) bounds how long a check can take.
//!
//! # A violation
//!
//! The checker keeps looking after the first violation, for a shorter one (only shorter
//! executions are explored from then on), and returns the shortest it found as a
//! [`Violation`]: what broke, the [`Interleaving`] that breaks it (printed as one line, such as
//! `"@0 0>1 @1 1>0"`, that [`Exhaustive::replay`] runs again exactly) and its trace: each
//! choice in words ([`Violation::happened`]: what was delivered or dropped, which script step
//! ran, which snapshot started or failed, which process panicked) followed by the events it
//! caused (see [`TraceEvent`]).
//!
//! A panic in a process is a violation (unless it is an injected failure), reported with its
//! message and where it happened. The checker prints nothing itself: while it runs a process's
//! code on a thread, that thread's panics are kept off stderr (a panic hook, installed once,
//! that passes on every panic of any other thread, or of this one outside the checker), so a
//! panic met in a thousand orders does not print a thousand messages before the one report.
//!
//! # Example: checking your own `Process` from an integration test
//!
//! ```
//! use chandy_lamport::sim::exhaustive::{Exhaustive, Step};
//! use chandy_lamport::{Context, Process, ProcessId, Topology};
//!
//! /// A bank branch: money moves between branches, and no snapshot may lose or make any.
//! struct Branch(u64);
//! impl Branch {
//!     fn pay(&mut self, to: ProcessId, amount: u64, ctx: &mut Context<'_, u64>) {
//!         self.0 -= amount;
//!         ctx.send(to, amount).unwrap();
//!     }
//! }
//! impl Process for Branch {
//!     type Message = u64;
//!     type State = u64;
//!     fn on_message(&mut self, _: ProcessId, amount: u64, _: &mut Context<'_, u64>) {
//!         self.0 += amount;
//!     }
//!     fn record(&self) -> u64 { self.0 }
//! }
//!
//! let report = Exhaustive::new(Topology::complete(2), |sim| sim.build([Branch(10), Branch(10)]))
//!     .script(0, [Step::call(|b: &mut Branch, ctx| b.pay(1, 3, ctx)), Step::start_snapshot()])
//!     .script(1, [Step::call(|b: &mut Branch, ctx| b.pay(0, 4, ctx)), Step::start_snapshot()])
//!     .invariant(|snapshot| {
//!         let total = snapshot.total(|balance| *balance, |amount| *amount);
//!         if total == 20 { Ok(()) } else { Err(format!("{total} in the bank, not 20")) }
//!     })
//!     .run()?;
//! assert!(report.is_exhaustive());
//! assert!(report.executions > 1);
//! # Ok::<(), chandy_lamport::sim::exhaustive::CheckError>(())
//! ```
//!
//! # Faults: a send to a process that has failed
//!
//! With [`Exhaustive::faults`] on, a process can fail at any point, and from then on a send to
//! it fails with [`SendError::Disconnected`], handing the message back, as in the threaded
//! runtime when a process has panicked. A process that `unwrap()`s that error (as the example
//! above does, fine without faults) panics in turn, and the checker reports that second
//! failure as a violation ("process 1 panicked at src/..: called `Result::unwrap()` on an
//! `Err` value: Disconnected { .. }"), since only the injected failure is expected. A process meant to
//! survive a neighbour's failure decides what a refused send means for its own state: here the
//! branch keeps the money it could not send, so that what it holds stays right.
//!
//! ```
//! use chandy_lamport::sim::exhaustive::{Exhaustive, Step};
//! use chandy_lamport::{Context, Process, ProcessId, SendError, Topology};
//!
//! struct Branch(u64);
//! impl Branch {
//!     fn pay(&mut self, to: ProcessId, amount: u64, ctx: &mut Context<'_, u64>) {
//!         self.0 -= amount;
//!         match ctx.send(to, amount) {
//!             Ok(()) => {}
//!             // `to` has failed: the message is handed back and the money stays here.
//!             Err(SendError::Disconnected { message, .. }) => self.0 += message,
//!             Err(e) => panic!("{e}"), // no channel to `to`: a bug in this program
//!         }
//!     }
//! }
//! impl Process for Branch {
//!     type Message = u64;
//!     type State = u64;
//!     fn on_message(&mut self, _: ProcessId, amount: u64, _: &mut Context<'_, u64>) {
//!         self.0 += amount;
//!     }
//!     fn record(&self) -> u64 { self.0 }
//! }
//!
//! let report = Exhaustive::new(Topology::complete(2), |sim| sim.build([Branch(10), Branch(10)]))
//!     .script(0, [Step::call(|b: &mut Branch, ctx| b.pay(1, 3, ctx)), Step::start_snapshot()])
//!     .script(1, [Step::call(|b: &mut Branch, ctx| b.pay(0, 4, ctx)), Step::start_snapshot()])
//!     .invariant(|snapshot| {
//!         // Every snapshot that completes conserves the money; those that a failure cut short
//!         // fail with `Error::ProcessFailed`, which the checker expects.
//!         let total = snapshot.total(|balance| *balance, |amount| *amount);
//!         if total == 20 { Ok(()) } else { Err(format!("{total} in the bank, not 20")) }
//!     })
//!     .faults(true)
//!     .run()?;
//! assert!(report.faults && report.is_exhaustive());
//! # Ok::<(), chandy_lamport::sim::exhaustive::CheckError>(())
//! ```

use std::fmt;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::builder::SimBuilder;
use super::quiet::{take_kept, Kept, Quiet};
use super::Simulation;
use crate::envelope::Envelope;
use crate::error::{plural, BuildError, SendError};
use crate::process::{panic_message, Context, Process};
use crate::snapshot::GlobalSnapshot;
use crate::topology::{Channel, ProcessId, Topology};
use crate::trace::TraceEvent;

/// One step of a process's script: something it does on its own initiative, at a point of the
/// execution the checker chooses.
pub struct Step<P: Process> {
    action: Action<P>,
}

type Call<P> = Arc<dyn Fn(&mut P, &mut Context<'_, <P as Process>::Message>) + Send + Sync>;

enum Action<P: Process> {
    Send(ProcessId, P::Message),
    StartSnapshot,
    Tick,
    Call(Call<P>),
}

impl<P: Process> Step<P> {
    /// Sends `message` to neighbour `to` (as [`Context::send`], without the process's own code:
    /// use [`call`](Step::call) when the process must account for what it sends).
    pub fn send(to: ProcessId, message: P::Message) -> Self {
        Step {
            action: Action::Send(to, message),
        }
    }

    /// Starts a snapshot at the process, as [`Simulation::start_snapshot`] does.
    pub fn start_snapshot() -> Self {
        Step {
            action: Action::StartSnapshot,
        }
    }

    /// Calls the process's [`Process::on_tick`].
    pub fn tick() -> Self {
        Step {
            action: Action::Tick,
        }
    }

    /// Runs `f` on the process as a callback: it can send and start snapshots.
    pub fn call(f: impl Fn(&mut P, &mut Context<'_, P::Message>) + Send + Sync + 'static) -> Self {
        Step {
            action: Action::Call(Arc::new(f)),
        }
    }
}

impl<P: Process> fmt::Debug for Step<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.action {
            Action::Send(to, _) => write!(f, "Step::send({to}, ..)"),
            Action::StartSnapshot => write!(f, "Step::start_snapshot()"),
            Action::Tick => write!(f, "Step::tick()"),
            Action::Call(_) => write!(f, "Step::call(..)"),
        }
    }
}

/// One choice of an execution: which event happens next.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Choice {
    /// The head of this channel is delivered (written `from>to`).
    Deliver(Channel),
    /// The process takes the next step of its script (written `@p`).
    Step(ProcessId),
    /// The process fails, as if its code had panicked (written `!p`).
    Fail(ProcessId),
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Deliver(c) => write!(f, "{}>{}", c.from, c.to),
            Choice::Step(p) => write!(f, "@{p}"),
            Choice::Fail(p) => write!(f, "!{p}"),
        }
    }
}

impl FromStr for Choice {
    type Err = ParseChoiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseChoiceError(s.to_string());
        let number = |t: &str| t.parse::<ProcessId>().map_err(|_| bad());
        if let Some(p) = s.strip_prefix('@') {
            Ok(Choice::Step(number(p)?))
        } else if let Some(p) = s.strip_prefix('!') {
            Ok(Choice::Fail(number(p)?))
        } else if let Some((from, to)) = s.split_once('>') {
            Ok(Choice::Deliver(Channel::new(number(from)?, number(to)?)))
        } else {
            Err(bad())
        }
    }
}

/// A word of an [`Interleaving`] that is not `a>b`, `@p` or `!p`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseChoiceError(String);

impl fmt::Display for ParseChoiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a choice (a>b delivers on channel a -> b, @p runs p's next scripted \
             step, !p makes p fail)",
            self.0
        )
    }
}

impl std::error::Error for ParseChoiceError {}

/// An execution, as the sequence of its choices: prints as one line (`"@0 0>1 1>0"`) that parses
/// back, so a failing order can be pasted into a test and run again with
/// [`Exhaustive::replay`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Interleaving(pub Vec<Choice>);

impl Interleaving {
    /// Its choices, in order.
    pub fn choices(&self) -> &[Choice] {
        &self.0
    }

    /// How many choices.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether it makes no choice.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Interleaving {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, choice) in self.0.iter().enumerate() {
            if k > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{choice}")?;
        }
        Ok(())
    }
}

impl FromStr for Interleaving {
    type Err = ParseChoiceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(Interleaving)
    }
}

/// What a check explored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Executions run to their end and checked. With the reduction, one per trace: the number
    /// of orders that are not reorderings of one another.
    pub executions: u64,
    /// Branches cut by the reduction, as equivalent to an execution already explored.
    pub pruned: u64,
    /// Executions cut at the depth bound, unchecked (then the check is not exhaustive).
    pub bounded: u64,
    /// Whether the budget of executions ran out first (then the check is not exhaustive).
    pub out_of_budget: bool,
    /// The most events in one execution.
    pub longest: usize,
    /// Completed snapshots checked (verified, and against the invariant), over all executions.
    pub snapshots: u64,
    /// Whether the reduction was on.
    pub reduction: bool,
    /// Whether a failure was tried at every point.
    pub faults: bool,
    /// Time the check took.
    pub elapsed: Duration,
}

impl Report {
    /// Whether every execution was explored to its end: no depth bound hit, budget not spent.
    pub fn is_exhaustive(&self) -> bool {
        self.bounded == 0 && !self.out_of_budget
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs = self.executions + self.pruned + self.bounded;
        write!(
            f,
            "{} checked ({}), {} pruned by the reduction, up to {} each, {} checked, in \
             {:.2} s ({:.0} runs/s){}",
            plural(self.executions, "execution"),
            if self.reduction {
                "one per trace"
            } else {
                "every order: reduction off"
            },
            self.pruned,
            plural(self.longest, "event"),
            plural(self.snapshots, "snapshot"),
            self.elapsed.as_secs_f64(),
            runs as f64 / self.elapsed.as_secs_f64().max(1e-9),
            if self.faults {
                ", a failure tried at every point"
            } else {
                ""
            }
        )?;
        if self.bounded > 0 {
            write!(
                f,
                "; NOT exhaustive: {} cut at the depth bound",
                plural(self.bounded, "execution")
            )?;
        }
        if self.out_of_budget {
            write!(f, "; NOT exhaustive: the budget of executions ran out")?;
        }
        Ok(())
    }
}

/// A property broken in some execution: the shortest such execution the checker found.
///
/// Its `Debug` output is its `Display` output, so that a test's `.unwrap()` prints the
/// violation, its replay line and its trace as they read best.
#[derive(Clone)]
pub struct Violation {
    /// What broke.
    pub message: String,
    /// The execution that breaks it: [`Exhaustive::replay`] runs it again.
    pub interleaving: Interleaving,
    /// What each of its choices did, in words, and which events of `trace` it caused: a
    /// failure or a send refused leaves no event in `trace`, yet may be what broke.
    pub happened: Vec<Happened>,
    /// The event trace of that execution (see [`TraceEvent`]); events before the first
    /// choice's are those of the processes' `on_start`.
    pub trace: Vec<TraceEvent>,
    /// What the check had explored when it stopped.
    pub report: Report,
}

/// One choice of a [`Violation`]'s execution, and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Happened {
    /// The choice.
    pub choice: Choice,
    /// What it did, in words: the message or marker delivered (or dropped), the script step
    /// run, the snapshots started and failed, the process that failed and its panic message.
    pub what: String,
    /// The events it caused: their indices in [`Violation::trace`].
    pub events: Range<usize>,
}

impl fmt::Debug for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\n{self}")
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.message)?;
        writeln!(
            f,
            "after {}; replay it with:\n    checker.replay(&\"{}\".parse().unwrap())",
            plural(self.interleaving.len(), "choice"),
            self.interleaving
        )?;
        writeln!(f, "explored: {}", self.report)?;
        writeln!(
            f,
            "trace (each choice and what it did, then the events it caused):"
        )?;
        let events = |f: &mut fmt::Formatter<'_>, range: Range<usize>| -> fmt::Result {
            for event in self.trace.get(range).unwrap_or_default() {
                writeln!(f, "    {event}")?;
            }
            Ok(())
        };
        let first = self
            .happened
            .first()
            .map_or(self.trace.len(), |h| h.events.start);
        if first > 0 {
            writeln!(f, "before the first choice (on_start):")?;
            events(f, 0..first)?;
        }
        for happened in &self.happened {
            writeln!(f, "{}: {}", happened.choice, happened.what)?;
            events(f, happened.events.clone())?;
        }
        if self.trace.is_empty() && self.happened.is_empty() {
            writeln!(f, "    (nothing happened before it broke)")?;
        }
        Ok(())
    }
}

/// Why a check did not pass.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CheckError {
    /// The system could not be built.
    Build(BuildError),
    /// A script cannot run on this topology.
    Script {
        /// The process whose script it is.
        process: ProcessId,
        /// Which of its steps (from 0).
        step: usize,
        /// What is wrong.
        message: String,
    },
    /// The closure given to [`Exhaustive::new`] built a simulation of another topology than the
    /// checker's (it must use the builder it is given).
    OtherTopology,
    /// A replayed choice was not possible at that point (nothing in flight on that channel, no
    /// script step left, the process has failed).
    NotEnabled {
        /// Which choice (from 0).
        index: usize,
        /// The choice.
        choice: Choice,
    },
    /// A property broke.
    Violation(Box<Violation>),
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckError::Build(e) => write!(f, "the system could not be built: {e}"),
            CheckError::Script {
                process,
                step,
                message,
            } => write!(f, "step {step} of process {process}'s script: {message}"),
            CheckError::OtherTopology => write!(
                f,
                "the system was built on another topology than the checker's: build it with the \
                 builder the closure is given"
            ),
            CheckError::NotEnabled { index, choice } => write!(
                f,
                "choice {index} ({choice}) is not possible at that point of the execution"
            ),
            CheckError::Violation(v) => write!(f, "{v}"),
        }
    }
}

impl std::error::Error for CheckError {}

impl From<BuildError> for CheckError {
    fn from(e: BuildError) -> Self {
        CheckError::Build(e)
    }
}

type Start<P> = Box<dyn FnMut(SimBuilder<P>) -> Result<Simulation<P>, BuildError>>;
type SnapshotCheck<P> = Box<
    dyn FnMut(
        &GlobalSnapshot<<P as Process>::Message, <P as Process>::State>,
    ) -> Result<(), String>,
>;
type EndCheck<P> = Box<dyn FnMut(&Simulation<P>) -> Result<(), String>>;

/// The exhaustive checker (see the [module documentation](self)).
pub struct Exhaustive<P: Process> {
    topology: Topology,
    start: Start<P>,
    script: Vec<Vec<Step<P>>>,
    invariant: Option<SnapshotCheck<P>>,
    at_end: Option<EndCheck<P>>,
    reduction: bool,
    faults: bool,
    trace: bool,
    max_depth: usize,
    max_executions: u64,
    /// Completed snapshots checked in the current run.
    snapshots_checked: u64,
}

/// An event, by channel index rather than channel: what the search handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Deliver(usize),
    Step(ProcessId),
    Fail(ProcessId),
}

/// One point of the current execution: what was enabled there, asleep, already explored, and
/// chosen.
struct Frame {
    enabled: Vec<Event>,
    sleep: Vec<Event>,
    done: Vec<Event>,
    chosen: Event,
}

/// How one execution ended.
enum End {
    Checked,
    Pruned,
    Bounded,
    /// Cut because it is already as long as the shortest violation found.
    Long,
    Violated(String),
}

/// One execution in progress: the simulation, and where each script is.
struct Execution<P: Process> {
    sim: Simulation<P>,
    next_step: Vec<usize>,
    failed: bool,
    /// A panic that escaped the simulation (not one in a process: those are failures).
    escaped: Option<String>,
    /// The panics of this execution, kept off stderr: where each happened.
    kept: Vec<Kept>,
}

/// What a replay with the trace on saw: the simulation at its end, what each choice did, and
/// the first property broken, with how many choices had been made when it was seen.
struct Retraced<P: Process> {
    sim: Simulation<P>,
    happened: Vec<Happened>,
    broke: Option<(String, usize)>,
}

/// Messages of injected failures.
const INJECTED: &str = "failure injected by the exhaustive checker";

impl<P: Process> Exhaustive<P> {
    /// A checker for systems on `topology`, built fresh for every execution by `start`, which
    /// gets a [`SimBuilder`] for `topology` and returns the simulation: `|sim|
    /// sim.build(processes)`, or `|sim| sim.restore(&snapshot, rebuild)`. What `on_start` sends
    /// is in flight at the first choice.
    pub fn new(
        topology: Topology,
        start: impl FnMut(SimBuilder<P>) -> Result<Simulation<P>, BuildError> + 'static,
    ) -> Self {
        let processes = topology.processes();
        Exhaustive {
            topology,
            start: Box::new(start),
            script: (0..processes).map(|_| Vec::new()).collect(),
            invariant: None,
            at_end: None,
            reduction: true,
            faults: false,
            trace: false,
            max_depth: 10_000,
            max_executions: u64::MAX,
            snapshots_checked: 0,
        }
    }

    /// Appends `steps` to process `process`'s script.
    pub fn script(mut self, process: ProcessId, steps: impl IntoIterator<Item = Step<P>>) -> Self {
        if process >= self.script.len() {
            self.script.resize_with(process + 1, Vec::new);
        }
        self.script[process].extend(steps);
        self
    }

    /// A property every completed snapshot must have (beyond [`GlobalSnapshot::verify`], always
    /// checked): `Err` says what is wrong.
    pub fn invariant<E: fmt::Display>(
        mut self,
        mut check: impl FnMut(&GlobalSnapshot<P::Message, P::State>) -> Result<(), E> + 'static,
    ) -> Self {
        self.invariant = Some(Box::new(move |s| check(s).map_err(|e| e.to_string())));
        self
    }

    /// A check of the simulation at the end of every execution (final states, what completed):
    /// `Err` says what is wrong.
    pub fn at_end<E: fmt::Display>(
        mut self,
        mut check: impl FnMut(&Simulation<P>) -> Result<(), E> + 'static,
    ) -> Self {
        self.at_end = Some(Box::new(move |s| check(s).map_err(|e| e.to_string())));
        self
    }

    /// Whether to use the reduction (on by default). Off, every order is explored: for systems
    /// whose processes share state outside messages, or to cross-check.
    pub fn reduction(mut self, on: bool) -> Self {
        self.reduction = on;
        self
    }

    /// Also tries a failure of every process at every point of every execution (off by
    /// default): each execution then has at most one failure, and every snapshot must either
    /// verify or fail with [`Error::ProcessFailed`](crate::Error::ProcessFailed).
    pub fn faults(mut self, on: bool) -> Self {
        self.faults = on;
        self
    }

    /// Keeps every execution's event trace, for [`at_end`](Exhaustive::at_end) to read
    /// ([`Simulation::trace`]); off by default, as it costs a vector clock per event. (A
    /// violation's trace is always kept: its execution is replayed with the trace on.)
    pub fn trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// The most events one execution may have (default 10,000); executions cut there are
    /// counted in [`Report::bounded`].
    pub fn max_depth(mut self, events: usize) -> Self {
        self.max_depth = events;
        self
    }

    /// The most executions to explore (default: no limit); when spent, the report says so.
    pub fn max_executions(mut self, executions: u64) -> Self {
        self.max_executions = executions;
        self
    }

    /// Explores every execution (up to equivalence, with the reduction) and checks each.
    pub fn run(&mut self) -> Result<Report, CheckError> {
        self.check_script()?;
        let began = Instant::now();
        let mut report = Report {
            reduction: self.reduction,
            faults: self.faults,
            ..Report::default()
        };
        self.snapshots_checked = 0;
        let mut path: Vec<Frame> = Vec::new();
        let mut shortest: Option<(Vec<Event>, String)> = None;
        loop {
            let end = self.execute(&mut path, shortest.as_ref().map(|s| s.0.len()))?;
            report.longest = report.longest.max(path.len());
            match end {
                End::Checked => report.executions += 1,
                End::Pruned => report.pruned += 1,
                End::Bounded => report.bounded += 1,
                End::Long => {}
                End::Violated(message) => {
                    report.executions += 1;
                    if shortest.as_ref().is_none_or(|s| path.len() < s.0.len()) {
                        shortest = Some((path.iter().map(|f| f.chosen).collect(), message));
                    }
                }
            }
            if report.executions + report.pruned + report.bounded >= self.max_executions {
                report.out_of_budget = next_branch(&mut path);
                break;
            }
            if !next_branch(&mut path) {
                break;
            }
        }
        report.elapsed = began.elapsed();
        report.snapshots = self.snapshots_checked;
        let Some((events, message)) = shortest else {
            return Ok(report);
        };
        let interleaving = Interleaving(events.iter().map(|&e| self.choice(e)).collect());
        // The same execution again, with its trace on (exploring keeps none, to go faster). It
        // breaks again the same way unless the system is not a function of its choices (the
        // reduction's assumption broken): then say so rather than show another execution's
        // trace as this one's.
        let mut violation = Violation {
            message,
            interleaving,
            happened: Vec::new(),
            trace: Vec::new(),
            report,
        };
        let replayed = self.retrace(&violation.interleaving);
        let differs = match &replayed {
            Ok(r) => match &r.broke {
                Some((m, made))
                    if *m == violation.message && *made == violation.interleaving.len() =>
                {
                    None
                }
                Some((m, _)) => Some(format!("broke another way: {m}")),
                None => Some("broke nothing".to_string()),
            },
            Err(e) => Some(format!("could not run: {e}")),
        };
        if let Some(differs) = differs {
            violation.message = format!(
                "{}\n(its replay with the trace on {differs}: do the processes share state \
                 outside messages? See the reduction's assumption in the documentation of \
                 sim::exhaustive)",
                violation.message
            );
        }
        if let Ok(r) = replayed {
            violation.happened = r.happened;
            violation.trace = r.sim.trace().to_vec();
        }
        Err(CheckError::Violation(Box::new(violation)))
    }

    /// Runs `interleaving` from scratch, checking as [`run`](Exhaustive::run) does after every
    /// event and, if nothing is left enabled at its end, at the end. Returns the simulation
    /// (with its trace on) for a closer look.
    pub fn replay(&mut self, interleaving: &Interleaving) -> Result<Simulation<P>, CheckError> {
        self.check_script()?;
        let replayed = self.retrace(interleaving)?;
        match replayed.broke {
            None => Ok(replayed.sim),
            Some((message, made)) => Err(CheckError::Violation(Box::new(Violation {
                message,
                interleaving: Interleaving(interleaving.0[..made].to_vec()),
                happened: replayed.happened,
                trace: replayed.sim.trace().to_vec(),
                report: Report::default(),
            }))),
        }
    }

    /// Runs `interleaving` with the trace on, noting what each choice did, up to the first
    /// property broken.
    fn retrace(&mut self, interleaving: &Interleaving) -> Result<Retraced<P>, CheckError> {
        let mut run = self.fresh(true)?;
        let mut happened = Vec::with_capacity(interleaving.len());
        for (index, &choice) in interleaving.0.iter().enumerate() {
            if let Err(message) = run.unplanned_failure() {
                return Ok(Retraced {
                    sim: run.sim,
                    happened,
                    broke: Some((message, index)),
                });
            }
            let event = match self.event(choice) {
                Some(e) if self.enabled(&run).contains(&e) => e,
                _ => return Err(CheckError::NotEnabled { index, choice }),
            };
            let what = self.what_happens(&run, event);
            let before = Before::of(&run);
            self.apply(&mut run, event)?;
            happened.push(Happened {
                choice,
                what: what + &before.what_followed(&run),
                events: before.events..run.sim.trace().len(),
            });
        }
        let broke = match run.unplanned_failure() {
            Err(message) => Some(message),
            Ok(()) if self.enabled(&run).is_empty() => self.check_end(&run).err(),
            Ok(()) => None,
        };
        Ok(Retraced {
            sim: run.sim,
            happened,
            broke: broke.map(|message| (message, interleaving.len())),
        })
    }

    /// What `event` is about to do, in words (for a violation's trace).
    fn what_happens(&self, run: &Execution<P>, event: Event) -> String {
        let sim = &run.sim;
        match event {
            Event::Deliver(c) => {
                let channel = self.topology_channel(c);
                let item = match sim.net.lanes[c].queue.front().map(|i| &i.envelope) {
                    Some(Envelope::Message { seq, .. }) => format!("message {seq}"),
                    Some(Envelope::Marker(id)) => format!("the marker of snapshot {id}"),
                    None => "nothing".to_string(),
                };
                if sim.net.collector.failure_of(channel.to).is_some() {
                    format!(
                        "{item} on channel {channel} is dropped: process {} has failed",
                        channel.to
                    )
                } else {
                    format!("{item} on channel {channel} is delivered")
                }
            }
            Event::Step(p) => {
                let step = run.next_step[p];
                format!(
                    "process {p} takes step {step} of its script, {:?}",
                    self.script[p][step]
                )
            }
            Event::Fail(p) => {
                format!("process {p} fails, as if its code had panicked (an injected failure)")
            }
        }
    }

    /// Every script step can run on this topology (a send goes to a neighbour).
    fn check_script(&self) -> Result<(), CheckError> {
        let n = self.topology.processes();
        for (process, steps) in self.script.iter().enumerate() {
            for (step, s) in steps.iter().enumerate() {
                let wrong = |message: String| CheckError::Script {
                    process,
                    step,
                    message,
                };
                if process >= n {
                    return Err(wrong(format!("the topology has {}", plural(n, "process"))));
                }
                if let Action::Send(to, _) = s.action {
                    if !self
                        .topology
                        .channels()
                        .contains(&Channel::new(process, to))
                    {
                        return Err(wrong(format!("no channel {process} -> {to}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// A fresh system, its scripts at their start.
    fn fresh(&mut self, trace: bool) -> Result<Execution<P>, CheckError> {
        let builder = Simulation::builder(self.topology.clone()).trace(trace);
        // Quiet, for the processes' `on_start`: the simulation catches a panic there, and the
        // checker reports it.
        let built = {
            let _quiet = Quiet::new();
            panic::catch_unwind(AssertUnwindSafe(|| (self.start)(builder)))
        };
        let kept = take_kept();
        let sim = match built {
            Ok(sim) => sim?,
            Err(payload) => {
                // A panic of the closure itself, outside any process: not the checker's to
                // report, so on its way, loud again, with where it happened (kept above).
                let message = panic_message(&*payload);
                panic!(
                    "the closure given to Exhaustive::new, which builds the system, panicked{}: \
                     {message}",
                    at(&kept, &message)
                );
            }
        };
        // Channels are events by their index in the checker's topology.
        if sim.wiring().channels() != self.topology.channels() {
            return Err(CheckError::OtherTopology);
        }
        Ok(Execution {
            next_step: vec![0; sim.hosts.len()],
            sim,
            failed: false,
            escaped: None,
            kept,
        })
    }

    /// Replays `path` on a fresh system, then extends it, choosing the first enabled event not
    /// asleep at every point, until the execution ends.
    fn execute(
        &mut self,
        path: &mut Vec<Frame>,
        shortest: Option<usize>,
    ) -> Result<End, CheckError> {
        let mut run = self.fresh(self.trace)?;
        for frame in path.iter() {
            self.apply(&mut run, frame.chosen)?;
        }
        let mut sleep = path.last().map_or_else(Vec::new, |f| self.asleep_after(f));
        loop {
            if let Err(message) = run.unplanned_failure() {
                return Ok(End::Violated(message));
            }
            let enabled = self.enabled(&run);
            if enabled.is_empty() {
                return Ok(match self.check_end(&run) {
                    Ok(()) => End::Checked,
                    Err(message) => End::Violated(message),
                });
            }
            if shortest.is_some_and(|s| path.len() + 1 >= s) {
                return Ok(End::Long);
            }
            if path.len() >= self.max_depth {
                return Ok(End::Bounded);
            }
            let Some(&chosen) = enabled.iter().find(|e| !sleep.contains(e)) else {
                return Ok(End::Pruned);
            };
            self.apply(&mut run, chosen)?;
            path.push(Frame {
                enabled,
                sleep,
                done: Vec::new(),
                chosen,
            });
            sleep = self.asleep_after(path.last().expect("just pushed"));
        }
    }

    /// The sleep set after `frame`'s choice: what was asleep or already explored at that point
    /// and commutes with the choice stays asleep.
    fn asleep_after(&self, frame: &Frame) -> Vec<Event> {
        if !self.reduction {
            return Vec::new();
        }
        frame
            .sleep
            .iter()
            .chain(&frame.done)
            .filter(|&&e| self.commute(e, frame.chosen))
            .copied()
            .collect()
    }

    /// Whether two events commute: they happen at different processes and neither is a
    /// failure (which touches every process).
    fn commute(&self, a: Event, b: Event) -> bool {
        match (self.at(a), self.at(b)) {
            (Some(p), Some(q)) => p != q,
            _ => false,
        }
    }

    /// The process an event happens at; `None` for a failure.
    fn at(&self, e: Event) -> Option<ProcessId> {
        match e {
            Event::Deliver(c) => Some(self.topology_channel(c).to),
            Event::Step(p) => Some(p),
            Event::Fail(_) => None,
        }
    }

    fn topology_channel(&self, c: usize) -> Channel {
        self.topology.channels()[c]
    }

    /// Events enabled now, in a fixed order: deliveries by channel, then script steps, then
    /// failures (only while something else is enabled, and only if none has happened).
    fn enabled(&self, run: &Execution<P>) -> Vec<Event> {
        let sim = &run.sim;
        let mut enabled: Vec<Event> = (0..sim.net.lanes.len())
            .filter(|&c| !sim.net.lanes[c].queue.is_empty())
            .map(Event::Deliver)
            .collect();
        let alive = |p: ProcessId| sim.net.collector.failure_of(p).is_none();
        for (p, steps) in self.script.iter().enumerate() {
            if run.next_step[p] < steps.len() && alive(p) {
                enabled.push(Event::Step(p));
            }
        }
        if self.faults && !run.failed && !enabled.is_empty() {
            enabled.extend((0..sim.hosts.len()).filter(|&p| alive(p)).map(Event::Fail));
        }
        enabled
    }

    /// Makes `event` happen. A panic that escapes the simulation (a bug in the core outside
    /// any process's callback, say while processes drop their snapshots after a failure) ends
    /// the execution as a violation rather than the check. Every panic here is caught and
    /// reported, so none is printed (see `quiet.rs`).
    fn apply(&self, run: &mut Execution<P>, event: Event) -> Result<(), CheckError> {
        let result = {
            let _quiet = Quiet::new();
            panic::catch_unwind(AssertUnwindSafe(|| self.apply_unguarded(run, event)))
        };
        run.kept.extend(take_kept());
        match result {
            Ok(result) => result,
            Err(payload) => {
                run.escaped = Some(panic_message(&*payload));
                Ok(())
            }
        }
    }

    fn apply_unguarded(&self, run: &mut Execution<P>, event: Event) -> Result<(), CheckError> {
        let sim = &mut run.sim;
        match event {
            Event::Deliver(c) => sim.deliver(c),
            Event::Fail(p) => {
                // Through the same unwinding path as a panic in application code.
                let _ = sim.fail_process(p, INJECTED);
                run.failed = true;
            }
            Event::Step(p) => {
                let step = run.next_step[p];
                run.next_step[p] += 1;
                // Errors here are a failed process (then the step does nothing, as in the
                // runtime) or a send to it (handed back): both expected after an injected
                // failure, and any other failure is caught after the event.
                match &self.script[p][step].action {
                    Action::Send(to, message) => {
                        let sent = sim.with_process(p, |_, ctx| ctx.send(*to, message.clone()));
                        if let Ok(Err(SendError::NotNeighbour { .. })) = sent {
                            return Err(CheckError::Script {
                                process: p,
                                step,
                                message: format!("no channel {p} -> {to}"),
                            });
                        }
                    }
                    Action::StartSnapshot => {
                        let _ = sim.start_snapshot(p);
                    }
                    Action::Tick => {
                        let _ = sim.with_process(p, |app, ctx| app.on_tick(ctx));
                    }
                    Action::Call(f) => {
                        let _ = sim.with_process(p, |app, ctx| f(app, ctx));
                    }
                }
            }
        }
        // One simulated step per event, so that a trace's `step` numbers its events.
        sim.net.now += 1;
        Ok(())
    }

    /// The checks at the end of an execution (see the module documentation).
    fn check_end(&mut self, run: &Execution<P>) -> Result<(), String> {
        let sim = &run.sim;
        if sim.running_snapshots() > 0 {
            let open: Vec<String> = sim
                .started()
                .iter()
                .filter(|id| sim.net.collector.is_pending(**id))
                .map(|id| {
                    let initiator = sim.net.collector.initiator(*id).unwrap_or_default();
                    format!("{} (started by process {initiator})", id)
                })
                .collect();
            return Err(format!(
                "nothing is in flight, yet {} never completed",
                open.join(", ")
            ));
        }
        if let Some(f) = sim
            .failed_snapshots()
            .iter()
            .find(|f| !matches!(f.error, crate::Error::ProcessFailed { .. }))
        {
            return Err(format!("snapshot {} failed with {}", f.id, f.error));
        }
        if !run.failed {
            if let Some(f) = sim.failed_snapshots().first() {
                return Err(format!(
                    "snapshot {} failed with no failure injected: {}",
                    f.id, f.error
                ));
            }
        }
        for snapshot in sim.snapshots() {
            self.snapshots_checked += 1;
            if let Err(e) = snapshot.verify() {
                return Err(format!(
                    "snapshot {} (started by process {}) is not a consistent cut: {e}",
                    snapshot.id, snapshot.initiator
                ));
            }
            if let Some(invariant) = self.invariant.as_mut() {
                if let Err(e) = invariant(snapshot) {
                    return Err(format!(
                        "snapshot {} (started by process {}) breaks the invariant: {e}",
                        snapshot.id, snapshot.initiator
                    ));
                }
            }
        }
        if let Some(at_end) = self.at_end.as_mut() {
            at_end(sim).map_err(|e| format!("the check at the end failed: {e}"))?;
        }
        Ok(())
    }

    fn choice(&self, e: Event) -> Choice {
        match e {
            Event::Deliver(c) => Choice::Deliver(self.topology_channel(c)),
            Event::Step(p) => Choice::Step(p),
            Event::Fail(p) => Choice::Fail(p),
        }
    }

    fn event(&self, choice: Choice) -> Option<Event> {
        match choice {
            Choice::Deliver(channel) => self
                .topology
                .channels()
                .iter()
                .position(|&c| c == channel)
                .map(Event::Deliver),
            Choice::Step(p) => Some(Event::Step(p)),
            Choice::Fail(p) => Some(Event::Fail(p)),
        }
    }
}

impl<P: Process> Execution<P> {
    /// `Err` if a process failed other than by an injected failure (a panic in application
    /// code, or a marker-rule error, which panics in the core).
    fn unplanned_failure(&self) -> Result<(), String> {
        if let Some(message) = &self.escaped {
            return Err(self.escaped(message));
        }
        // Asked after every event of every execution: the common case (no failure at all) must
        // not build the list of failures.
        if self.sim.net.collector.failure().is_none() {
            return Ok(());
        }
        let failures = self.sim.failures();
        match failures.iter().find(|f| f.message != INJECTED) {
            Some(f) => Err(self.panicked(f.process, &f.message)),
            None => Ok(()),
        }
    }

    /// That process `p` panicked with `message`, and where.
    fn panicked(&self, p: ProcessId, message: &str) -> String {
        format!("process {p} panicked{}: {message}", at(&self.kept, message))
    }

    /// That a panic with `message` escaped the simulation, and where.
    fn escaped(&self, message: &str) -> String {
        format!(
            "the simulation panicked{}: {message}",
            at(&self.kept, message)
        )
    }
}

/// What a violation's trace says of a choice beyond what it was about to do: what it started,
/// failed or broke. Taken before the choice, read after it.
struct Before {
    /// The trace's length: the choice's events come after.
    events: usize,
    started: usize,
    failed_snapshots: usize,
    failed: Vec<bool>,
    escaped: bool,
}

impl Before {
    fn of<P: Process>(run: &Execution<P>) -> Self {
        let sim = &run.sim;
        Before {
            events: sim.trace().len(),
            started: sim.started().len(),
            failed_snapshots: sim.failed_snapshots().len(),
            failed: (0..sim.hosts.len())
                .map(|p| sim.net.collector.failure_of(p).is_some())
                .collect(),
            escaped: run.escaped.is_some(),
        }
    }

    /// What followed, since `self` was taken, each part after a `; `.
    fn what_followed<P: Process>(&self, run: &Execution<P>) -> String {
        let sim = &run.sim;
        let mut said = String::new();
        for id in &sim.started()[self.started..] {
            said += &format!("; snapshot {id} starts");
        }
        for f in sim.failures() {
            if !self.failed[f.process] && f.message != INJECTED {
                said += "; ";
                said += &run.panicked(f.process, &f.message);
            }
        }
        for f in &sim.failed_snapshots()[self.failed_snapshots..] {
            said += &format!("; snapshot {} fails", f.id);
        }
        if let (false, Some(message)) = (self.escaped, &run.escaped) {
            said += "; ";
            said += &run.escaped(message);
        }
        said
    }
}

/// ` at file:line:column` where the panic with `message` happened, if it was kept.
fn at(kept: &[Kept], message: &str) -> String {
    kept.iter()
        .find(|k| k.message == message && !k.location.is_empty())
        .map_or_else(String::new, |k| format!(" at {}", k.location))
}

/// Moves to the next branch of the search: the deepest point with an event neither explored
/// nor asleep gets it as its choice (points with none left are dropped). `false` when the
/// search is over.
fn next_branch(path: &mut Vec<Frame>) -> bool {
    while let Some(top) = path.last_mut() {
        top.done.push(top.chosen);
        if let Some(&next) = top
            .enabled
            .iter()
            .find(|e| !top.sleep.contains(e) && !top.done.contains(e))
        {
            top.chosen = next;
            return true;
        }
        path.pop();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleavings_print_and_parse_back() {
        let text = "@0 0>1 12>3 !2";
        let parsed: Interleaving = text.parse().unwrap();
        assert_eq!(
            parsed.choices(),
            [
                Choice::Step(0),
                Choice::Deliver(Channel::new(0, 1)),
                Choice::Deliver(Channel::new(12, 3)),
                Choice::Fail(2)
            ]
        );
        assert_eq!(parsed.to_string(), text);
        for bad in ["0-1", "@x", "!", ">1", "a>b"] {
            assert!(bad.parse::<Interleaving>().is_err(), "{bad}");
        }
    }
}
