//! Termination detection: a diffusing computation spreads work items from process to process
//! until they run out; snapshots declare termination exactly when every process is idle and
//! every channel is empty. Run: `cargo run --release --example termination`
//!
//! Each process keeps a queue of work items and works through it on its own ticks; an item of
//! depth `d > 0` spawns up to 3 items of depth `d - 1` at random neighbours. Termination is a
//! stable property (once nothing is queued or in flight, nothing can create work again), so a
//! snapshot on which it holds proves it. The example checks the proof: after the declaration no
//! work item is ever delivered again, and the work done in the snapshot is all the work ever
//! done. Exit status 0 if both hold, 1 otherwise.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chandy_lamport::detect::{detect, Detection, SnapshotSource};
use chandy_lamport::{Context, GlobalSnapshot, Process, ProcessId, Runtime, Topology};
use clap::Parser;

/// A unit of work: how many more generations it may spawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// Generations left.
    pub depth: u32,
}

/// What a snapshot keeps of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// Work items queued, not yet done.
    pub queued: usize,
    /// Work items done so far.
    pub done: u64,
}

/// One process of the diffusing computation.
pub struct Worker {
    queue: VecDeque<Work>,
    rng: fastrand::Rng,
    done: u64,
    /// Items it starts with (the computation's roots).
    roots: Vec<Work>,
    /// Items worked per tick.
    per_tick: usize,
    /// Work items delivered, by every process together.
    pub deliveries: Arc<AtomicU64>,
}

impl Worker {
    /// `n` workers; process 0 starts with `roots` items of depth `depth`.
    pub fn team(n: usize, roots: usize, depth: u32, seed: u64) -> (Vec<Worker>, Arc<AtomicU64>) {
        let deliveries = Arc::new(AtomicU64::new(0));
        let mut rng = fastrand::Rng::with_seed(seed);
        let team = (0..n)
            .map(|p| Worker {
                queue: VecDeque::new(),
                rng: fastrand::Rng::with_seed(rng.u64(..)),
                done: 0,
                roots: if p == 0 {
                    vec![Work { depth }; roots]
                } else {
                    Vec::new()
                },
                per_tick: 4,
                deliveries: deliveries.clone(),
            })
            .collect();
        (team, deliveries)
    }

    /// Work items done by this process.
    pub fn done(&self) -> u64 {
        self.done
    }
}

impl Process for Worker {
    type Message = Work;
    type State = Status;

    fn on_start(&mut self, _ctx: &mut Context<'_, Work>) {
        self.queue.extend(self.roots.drain(..));
    }

    fn on_message(&mut self, _from: ProcessId, work: Work, _ctx: &mut Context<'_, Work>) {
        self.deliveries.fetch_add(1, Ordering::Relaxed);
        self.queue.push_back(work);
    }

    fn on_tick(&mut self, ctx: &mut Context<'_, Work>) {
        for _ in 0..self.per_tick {
            let Some(work) = self.queue.pop_front() else {
                return;
            };
            self.done += 1;
            if work.depth == 0 {
                continue;
            }
            for _ in 0..self.rng.usize(0..=3) {
                let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
                ctx.send(
                    to,
                    Work {
                        depth: work.depth - 1,
                    },
                )
                .expect("neighbours are never missing");
            }
        }
    }

    fn record(&self) -> Status {
        Status {
            queued: self.queue.len(),
            done: self.done,
        }
    }
}

/// The stable property: every process idle, every channel empty.
pub fn terminated(snapshot: &GlobalSnapshot<Work, Status>) -> bool {
    snapshot.states.iter().all(|s| s.queued == 0) && snapshot.in_flight().next().is_none()
}

/// Work done, as the snapshot records it.
pub fn work_done(snapshot: &GlobalSnapshot<Work, Status>) -> u64 {
    snapshot.states.iter().map(|s| s.done).sum()
}

/// Looks for termination every `interval` of the driver's time.
pub fn detect_termination<D: SnapshotSource<Message = Work, State = Status>>(
    driver: &mut D,
    interval: Duration,
    timeout: Duration,
) -> Result<Arc<GlobalSnapshot<Work, Status>>, chandy_lamport::Error> {
    let detection = Detection {
        initiator: 0,
        interval,
        timeout,
    };
    detect(driver, &detection, terminated)
}

/// Termination detection by snapshots: a diffusing computation, declared finished exactly when
/// a snapshot shows every process idle and every channel empty. Exit status 0 if the declaration
/// was never early, 1 if it was (or termination was not detected), 2 for bad flags.
#[derive(Parser, Debug)]
#[command(name = "termination")]
struct Args {
    /// Worker processes, on the complete graph.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=256))]
    workers: u64,
    /// Work items to start with, spread over the workers.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    roots: u64,
    /// Generations each root may spawn (each item spawns up to 3 of the next).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(0..=16))]
    depth: u32,
    /// Seed of the workers' random choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn main() -> ExitCode {
    env_logger::init();
    let args = Args::parse();
    let (n, roots, depth, seed) = (
        args.workers as usize,
        args.roots as usize,
        args.depth,
        args.seed,
    );
    let (team, deliveries) = Worker::team(n, roots, depth, seed);
    let started = Instant::now();
    let mut runtime = Runtime::builder(Topology::complete(n))
        .tick_interval(Duration::from_micros(200))
        .build(team)
        .expect("a valid topology");
    println!(
        "termination: {}, {} of depth {depth}, seed {seed}",
        count(n, "worker", "workers"),
        count(roots, "root", "roots")
    );
    let proof = match detect_termination(
        &mut runtime,
        Duration::from_millis(5),
        Duration::from_secs(60),
    ) {
        Ok(proof) => proof,
        Err(e) => {
            eprintln!("termination: not detected: {e}");
            return ExitCode::from(1);
        }
    };
    let declared = deliveries.load(Ordering::SeqCst);
    println!(
        "terminated: declared at {:.1} ms by snapshot {} (initiator {}, latency {} us); {} done, {} delivered",
        started.elapsed().as_secs_f64() * 1e3,
        proof.id,
        proof.initiator,
        proof.latency().as_micros(),
        count(work_done(&proof), "work item", "work items"),
        declared
    );
    // The check: nothing happens after the declaration.
    std::thread::sleep(Duration::from_millis(50));
    let later = deliveries.load(Ordering::SeqCst);
    let workers = runtime
        .shutdown()
        .expect("first shutdown")
        .into_processes()
        .expect("no panic");
    let done: u64 = workers.iter().map(Worker::done).sum();
    let ok = later == declared && done == work_done(&proof);
    println!(
        "check: {} after the declaration, {} done after it: {}",
        count(later - declared, "delivery", "deliveries"),
        count(done - work_done(&proof), "work item", "work items"),
        if ok { "never early" } else { "DECLARED EARLY" }
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
