//! Deadlock detection: processes lock their own resource and request a neighbour's; a snapshot
//! builds the global wait-for graph (requests still in flight count) and prints the cycle.
//! Run: `cargo run --release --example deadlock` (`-- --safe` for the configuration that does
//! not deadlock).
//!
//! Each process owns one lock and does jobs: lock its own, then (if its plan names one) request
//! a neighbour's lock, work, release both. An owner grants its lock when it is free, else queues
//! the request. In the deadlocking configuration every process wants the next one's lock round
//! a ring, so each holds its own and waits for the next: a cycle. In the safe one the last
//! process wants nothing, so the chain drains. A deadlock is stable (nobody in the cycle will
//! ever release), so a snapshot that shows one proves it. Exit status 0 when the verdict is
//! right (the cycle found in the deadlocking run, none in the safe one, which finishes), 1 if not.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::time::Duration;

use chandy_lamport::detect::{detect, Detection, SnapshotSource};
use chandy_lamport::{Context, GlobalSnapshot, Process, ProcessId, Runtime, Topology};

/// Lock traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// "May I have your lock?"
    Request,
    /// "It is yours."
    Grant,
    /// "I am done with your lock."
    Release,
}

/// What a snapshot keeps of a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockState {
    /// It holds its own lock for a job.
    pub holds_own: bool,
    /// Its lock is lent to this process.
    pub lent_to: Option<ProcessId>,
    /// It requested this process's lock and has not got it yet.
    pub waiting_for: Option<ProcessId>,
    /// Requests for its lock it has not granted yet.
    pub queue: Vec<ProcessId>,
    /// Jobs finished.
    pub jobs_done: u32,
}

/// One process.
pub struct Locker {
    plan: Option<ProcessId>,
    jobs: u32,
    state: LockState,
    queue: VecDeque<ProcessId>,
}

impl Locker {
    /// Every process wants the next one's lock round a ring of `n`: deadlocks.
    pub fn ring(n: usize, jobs: u32) -> Vec<Locker> {
        (0..n)
            .map(|p| Locker::new(Some((p + 1) % n), jobs))
            .collect()
    }

    /// The same, but the last process wants nothing: a chain, which never deadlocks.
    pub fn chain(n: usize, jobs: u32) -> Vec<Locker> {
        (0..n)
            .map(|p| Locker::new((p + 1 < n).then_some(p + 1), jobs))
            .collect()
    }

    fn new(plan: Option<ProcessId>, jobs: u32) -> Self {
        Locker {
            plan,
            jobs,
            state: LockState {
                holds_own: false,
                lent_to: None,
                waiting_for: None,
                queue: Vec::new(),
                jobs_done: 0,
            },
            queue: VecDeque::new(),
        }
    }

    /// Jobs this process has finished.
    pub fn jobs_done(&self) -> u32 {
        self.state.jobs_done
    }

    /// Starts the next job if it can: take its own lock, then ask for the planned one.
    fn try_start(&mut self, ctx: &mut Context<'_, Lock>) {
        let s = &mut self.state;
        if s.jobs_done == self.jobs || s.holds_own || s.lent_to.is_some() {
            return;
        }
        s.holds_own = true;
        match self.plan {
            Some(other) => {
                s.waiting_for = Some(other);
                ctx.send(other, Lock::Request)
                    .expect("planned locks are neighbours'");
            }
            None => self.finish(None, ctx),
        }
    }

    /// The job is done: release both locks, then serve the queue.
    fn finish(&mut self, other: Option<ProcessId>, ctx: &mut Context<'_, Lock>) {
        if let Some(other) = other {
            ctx.send(other, Lock::Release).expect("a neighbour");
        }
        self.state.holds_own = false;
        self.state.jobs_done += 1;
        self.serve(ctx);
    }

    /// Lends its lock to the first queued requester, if the lock is free.
    fn serve(&mut self, ctx: &mut Context<'_, Lock>) {
        if self.state.holds_own || self.state.lent_to.is_some() {
            return;
        }
        if let Some(next) = self.queue.pop_front() {
            self.state.lent_to = Some(next);
            ctx.send(next, Lock::Grant)
                .expect("requesters are neighbours");
        }
    }
}

impl Process for Locker {
    type Message = Lock;
    type State = LockState;

    fn on_start(&mut self, ctx: &mut Context<'_, Lock>) {
        self.try_start(ctx);
    }

    fn on_message(&mut self, from: ProcessId, message: Lock, ctx: &mut Context<'_, Lock>) {
        match message {
            Lock::Request => {
                self.queue.push_back(from);
                self.serve(ctx);
            }
            Lock::Grant => {
                self.state.waiting_for = None;
                self.finish(Some(from), ctx);
            }
            Lock::Release => {
                self.state.lent_to = None;
                self.serve(ctx);
            }
        }
        self.try_start(ctx);
    }

    fn on_tick(&mut self, ctx: &mut Context<'_, Lock>) {
        self.serve(ctx);
        self.try_start(ctx);
    }

    fn record(&self) -> LockState {
        LockState {
            queue: self.queue.iter().copied().collect(),
            ..self.state.clone()
        }
    }
}

/// The global wait-for graph of a snapshot: `edges[i]` is the process `i` waits for.
///
/// `i` waits for `t`'s lock while it has asked and no grant from `t` is on its way (a request
/// still in flight counts: it will be queued). It waits for whoever holds that lock: `t` itself
/// if `t` holds it for a job, or the process it is lent to, unless that process's release is
/// already on its way back.
pub fn wait_for_graph(snapshot: &GlobalSnapshot<Lock, LockState>) -> Vec<Option<ProcessId>> {
    let in_flight = |from: ProcessId, to: ProcessId, what: Lock| {
        snapshot
            .in_flight()
            .any(|(c, m)| c.from == from && c.to == to && *m == what)
    };
    let states = &snapshot.states;
    (0..states.len())
        .map(|i| {
            let t = states[i].waiting_for?;
            if in_flight(t, i, Lock::Grant) {
                return None;
            }
            let holder = if states[t].holds_own {
                t
            } else {
                states[t].lent_to?
            };
            (holder != i && !in_flight(holder, t, Lock::Release)).then_some(holder)
        })
        .collect()
}

/// A cycle of the wait-for graph, smallest process first, if there is one. Each process waits
/// for at most one other, so following the edges from each start finds any cycle.
pub fn deadlock_cycle(snapshot: &GlobalSnapshot<Lock, LockState>) -> Option<Vec<ProcessId>> {
    let edges = wait_for_graph(snapshot);
    for start in 0..edges.len() {
        let mut path = vec![start];
        let mut at = start;
        while let Some(next) = edges[at] {
            if let Some(k) = path.iter().position(|&p| p == next) {
                let mut cycle = path[k..].to_vec();
                let min = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, p)| **p)
                    .map(|(i, _)| i);
                cycle.rotate_left(min.unwrap_or(0));
                return Some(cycle);
            }
            path.push(next);
            at = next;
        }
    }
    None
}

/// Looks for a deadlock every `interval`, giving up after `timeout` (not deadlocked, or not yet).
pub fn detect_deadlock<D: SnapshotSource<Message = Lock, State = LockState>>(
    driver: &mut D,
    interval: Duration,
    timeout: Duration,
) -> Option<Vec<ProcessId>> {
    let detection = Detection {
        initiator: 0,
        interval,
        timeout,
    };
    let proof = detect(driver, &detection, |s| deadlock_cycle(s).is_some()).ok()?;
    deadlock_cycle(&proof)
}

/// Deadlock detection by snapshots: processes lock each other's resources; a snapshot's
/// wait-for graph (requests in flight included) shows the cycle. The run is deterministic, so
/// there is no seed. Exit status 0 for the right verdict (a cycle through every process by
/// default, none with `--safe`), 1 for a wrong one, 2 for bad flags.
#[derive(clap::Parser, Debug)]
#[command(name = "deadlock")]
struct Args {
    /// Lock in a chain instead of a cycle: no deadlock, every job completes.
    #[arg(long)]
    safe: bool,
    /// Processes, on a ring.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(2..=256))]
    processes: u64,
    /// Jobs each process tries to run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    jobs: u32,
}

fn main() -> ExitCode {
    env_logger::init();
    let args = <Args as clap::Parser>::parse();
    let (safe, n, jobs) = (args.safe, args.processes as usize, args.jobs);
    let lockers = if safe {
        Locker::chain(n, jobs)
    } else {
        Locker::ring(n, jobs)
    };
    let mut runtime = Runtime::builder(Topology::ring(n))
        .tick_interval(Duration::from_millis(1))
        .build(lockers)
        .expect("a valid topology");
    println!(
        "deadlock: {} on a ring, {} each, {} configuration",
        count(n, "process", "processes"),
        count(jobs, "job", "jobs"),
        if safe {
            "safe (a chain)"
        } else {
            "deadlocking (a cycle)"
        }
    );
    let found = detect_deadlock(
        &mut runtime,
        Duration::from_millis(2),
        Duration::from_millis(500),
    );
    if found.is_none() {
        // No cycle in half a second: on a loaded machine the chain may still be at work, so
        // let it finish (bounded) before counting what it did.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline
            && (0..n).any(|p| {
                runtime
                    .with_process(p, |locker: &mut Locker, _| locker.jobs_done())
                    .is_ok_and(|d| d < jobs)
            })
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let done: Vec<u32> = runtime
        .shutdown()
        .expect("first shutdown")
        .into_processes()
        .expect("no panic")
        .iter()
        .map(Locker::jobs_done)
        .collect();
    match &found {
        Some(cycle) => {
            let shown: Vec<String> = cycle.iter().map(|p| format!("P{p}")).collect();
            println!(
                "deadlock: {} -> P{} (each waits for the next)",
                shown.join(" -> "),
                cycle[0]
            );
        }
        None => println!("no deadlock found; jobs done per process: {done:?}"),
    }
    let expected: Option<Vec<ProcessId>> = (!safe).then(|| (0..n).collect());
    let finished = done.iter().all(|&d| d == jobs);
    let ok = found == expected && (!safe || finished);
    println!(
        "check: {}",
        if ok { "right verdict" } else { "WRONG VERDICT" }
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
