//! A bank whose branches move money at random while snapshots are taken; every snapshot must
//! conserve the total and pass the consistent-cut check. Run: `cargo run --release --example bank`
//! (see `--help`; `--json` prints JSON Lines with the raw numbers, for an independent checker).
//!
//! Each branch keeps T transfers in flight: it sends T random transfers when it starts, and each
//! time one reaches it, sends a new random amount (at most its balance, possibly 0) to a random
//! neighbour. The run stops once M transfers have been delivered and the K snapshots (started
//! from random branches during the run, at most C at once) have all ended. Exit status: 0 if
//! every snapshot completed, conserved money and was consistent; 1 otherwise; 2 for bad flags.
//!
//! Checkpoints: `--checkpoint-dir DIR` writes every completed snapshot to its own file in DIR
//! (atomically); `--restore FILE` starts from such a file instead of fresh balances, with the
//! topology and branch count given on the command line, and continues.
//!
//! Across nodes (OS processes, over TCP; `cluster.rs`): `--nodes N` runs the same bank on N
//! nodes started as child processes on 127.0.0.1; `--cluster FILE --node I`, run once per node
//! with the same other flags, runs node I of the cluster FILE describes (`docs/cluster.md`).

/// Prints a line on stderr in one write. `eprintln!` writes its pieces one at a time on the
/// unbuffered stderr, and the nodes of `--nodes` share the parent's stderr: their lines would
/// mix mid-line.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let line = format!("{}\n", format_args!($($arg)*));
        // Nowhere left to say it: nothing to do.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }};
}

mod cluster;
mod interrupt;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::path::PathBuf;

use chandy_lamport::trace::shiviz;
use chandy_lamport::{checkpoint, Context, Process, ProcessId, Runtime, SnapshotEvent, Topology};
use clap::{CommandFactory, Parser, ValueEnum};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Shape {
    Complete,
    Ring,
    Star,
}

impl Shape {
    fn topology(self, n: usize) -> Topology {
        match self {
            Shape::Complete => Topology::complete(n),
            Shape::Ring => Topology::ring(n),
            Shape::Star => Topology::star(n),
        }
    }

    /// How many channels the topology has on `n` processes, without building it.
    fn channels(self, n: u64) -> u128 {
        let n = u128::from(n);
        match self {
            Shape::Complete => n * (n - 1),
            Shape::Ring if n == 2 => 2,
            Shape::Ring => 2 * n,
            Shape::Star => 2 * (n - 1),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Shape::Complete => "complete",
            Shape::Ring => "ring",
            Shape::Star => "star",
        }
    }
}

/// Consistent snapshots of a bank whose branches keep moving money.
#[derive(Parser, Debug)]
#[command(name = "bank")]
struct Args {
    /// Number of branches (at least 2).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(2..=100_000))]
    processes: u64,
    /// Which branches have channels to which.
    #[arg(long, value_enum, default_value_t = Shape::Complete)]
    topology: Shape,
    /// Starting balance of every branch.
    #[arg(long, default_value_t = 1000)]
    initial_balance: u64,
    /// Transfers each branch keeps in flight (1 to 1,000,000).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=MAX_IN_FLIGHT))]
    in_flight: u64,
    /// Run until this many transfers have been delivered in total. Across nodes (`--nodes`,
    /// `--cluster`) node 0 ends the run when its estimate reaches this, so the exact count in
    /// the summary can be a little under or over it.
    #[arg(long, default_value_t = 1_000_000)]
    transfers: u64,
    /// Snapshots to take during the run.
    #[arg(long, default_value_t = 20)]
    snapshots: u64,
    /// At most this many snapshots running at once.
    #[arg(long, default_value_t = 4)]
    concurrency: u64,
    /// Seed of every random choice (default: random; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Print JSON Lines on stdout: one object per snapshot, then a summary.
    #[arg(long)]
    json: bool,
    /// Write every completed snapshot to its own checkpoint file in this directory.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Start from this checkpoint file (same topology and branch count) instead of fresh
    /// balances.
    #[arg(long, value_name = "FILE")]
    restore: Option<PathBuf>,
    /// Write the run's trace (JSON Lines with vector clocks; time in microseconds since the
    /// start) to this file; `cargo run --example diagram` draws it. Each branch keeps its first
    /// `--trace-events` events.
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// With `--trace` or `--shiviz`: events kept per branch.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    trace_events: usize,
    /// Write the run's trace as a ShiViz log (https://bestchai.bitbucket.io/shiviz/) to this
    /// file, as `diagram --shiviz` does from a trace file; keeps `--trace-events` per branch.
    #[arg(long, value_name = "FILE")]
    shiviz: Option<PathBuf>,
    /// Run the bank on N nodes: N child processes of this program on 127.0.0.1, the branches
    /// split between them (branch b on node b mod N), channels between nodes over TCP.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024),
          conflicts_with_all = ["cluster", "trace", "shiviz"])]
    nodes: Option<u64>,
    /// Run one node of the cluster this file describes (TOML; see docs/cluster.md), with
    /// `--node`. Start every node with the same other flags; node 0 prints the results.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["trace", "shiviz"])]
    cluster: Option<PathBuf>,
    /// With `--cluster`: which node this is (its position among the file's `[[node]]` tables).
    #[arg(long, value_name = "I")]
    node: Option<usize>,
    /// With `--cluster`: make the cluster's keys in this folder (once, on one machine), then
    /// stop. Add `keys = "DIR"` to the cluster file, and give each machine its own node's
    /// `node-I.key` and every `node-*.pub` (docs/cluster.md).
    #[arg(
        long,
        value_name = "DIR",
        requires = "cluster",
        conflicts_with = "node"
    )]
    keygen: Option<PathBuf>,
    /// With `--cluster`: how long to wait for every node at start (seconds, 1 to 86400).
    #[arg(long, value_name = "S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    connect_timeout: u64,
    /// With `--cluster` or `--nodes`: a node from which nothing arrives for this long (seconds)
    /// has failed. Every node then says which failed, and exits 1.
    #[arg(long, value_name = "S", default_value_t = 3.0, value_parser = parse_timeout)]
    failure_timeout: f64,
    /// Internal: a node started by `--nodes`, which binds a port of the system's choosing,
    /// says it on stdout and reads the cluster file's path on stdin.
    #[arg(long, hide = true, requires = "node")]
    spawned: bool,
}

/// Money on its way from one branch to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Transfer(u64);

struct Branch {
    balance: u64,
    /// Transfers to start with: T for a fresh branch, 0 for a restored one (its transfers are
    /// the ones restored into the channels).
    in_flight: u64,
    rng: fastrand::Rng,
    delivered: u64,
    /// Deliveries not yet added to `progress`; published in batches so branches do not contend
    /// on one counter per transfer.
    unpublished: u64,
    progress: Arc<AtomicU64>,
}

const PUBLISH_EVERY: u64 = 1024;

/// The most transfers a branch may keep in flight: far more than keeps every channel busy,
/// and a bound before the memory check (a transfer on its way takes memory until delivered).
const MAX_IN_FLIGHT: u64 = 1_000_000;

/// Memory one transfer takes while on its way (its slot in a channel, and its copies in the
/// snapshots that record it). Measured with `/usr/bin/time -f %M`: `bank --processes 8
/// --in-flight 1000000 --transfers 1 --snapshots 0` peaks at 315 MB (~39 bytes a transfer),
/// and with `--transfers 2000000 --snapshots 2` at 998 MB (~125 bytes).
const BYTES_PER_TRANSFER: u128 = 128;

/// Each branch's seed, by branch (the same on every node of a cluster given the same
/// `--seed`), and the generator that then picks the snapshots' initiators.
fn branch_seeds(seed: u64, n: usize) -> (Vec<u64>, fastrand::Rng) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let seeds = (0..n).map(|_| rng.u64(..)).collect();
    (seeds, rng)
}

impl Branch {
    fn new(balance: u64, in_flight: u64, seed: u64, progress: Arc<AtomicU64>) -> Self {
        Branch {
            balance,
            in_flight,
            rng: fastrand::Rng::with_seed(seed),
            delivered: 0,
            unpublished: 0,
            progress,
        }
    }
}

impl Branch {
    fn pay_someone(&mut self, ctx: &mut Context<'_, Transfer>) {
        let amount = self.rng.u64(0..=self.balance);
        let neighbours = ctx.neighbours();
        let to = neighbours[self.rng.usize(..neighbours.len())];
        self.balance -= amount;
        if let Err(e) = ctx.send(to, Transfer(amount)) {
            // The other branch has stopped: keep the money.
            self.balance += e.into_message().0;
        }
    }
}

impl Process for Branch {
    type Message = Transfer;
    type State = u64;

    fn on_start(&mut self, ctx: &mut Context<'_, Transfer>) {
        for _ in 0..self.in_flight {
            self.pay_someone(ctx);
        }
    }

    fn on_message(
        &mut self,
        _from: ProcessId,
        transfer: Transfer,
        ctx: &mut Context<'_, Transfer>,
    ) {
        self.balance += transfer.0;
        self.delivered += 1;
        self.unpublished += 1;
        if self.unpublished == PUBLISH_EVERY {
            self.progress.fetch_add(PUBLISH_EVERY, Ordering::Relaxed);
            self.unpublished = 0;
        }
        self.pay_someone(ctx);
    }

    fn record(&self) -> u64 {
        self.balance
    }
}

/// What one snapshot showed.
struct Verdict {
    conserved: bool,
    consistent: bool,
    latency_us: u64,
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Memory one channel takes once it has carried traffic: the crossbeam channel (two cache-padded
/// ends, wakers) and its first block of slots, plus the runtime's per-channel bookkeeping.
/// Measured: `bank --processes 256 --snapshots 10 --concurrency 2 --transfers 1000000` peaks at
/// 168.7 MB for its 65,280 channels (`/usr/bin/time -f %M`), about 2,600 bytes each.
const BYTES_PER_CHANNEL: u128 = 2_600;

/// Memory the system says is available now (Linux), if it says.
fn available_memory() -> Option<u128> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Refuses, as a usage error (exit 2), flags whose run cannot work: a total that does not fit
/// in 64 bits, or a topology whose channels alone would not fit in memory.
fn check_fits(args: &Args) {
    let refuse = |message: String| -> ! {
        Args::command()
            .error(clap::error::ErrorKind::ValueValidation, message)
            .exit()
    };
    if args.node.is_none() && args.cluster.is_some() && args.keygen.is_none() {
        refuse("--cluster FILE needs --node I (or --keygen DIR)".to_string());
    }
    if args.node.is_some() && args.cluster.is_none() && !args.spawned {
        refuse("--node needs --cluster FILE".to_string());
    }
    if args.concurrency == 0 && args.snapshots > 0 {
        refuse("--concurrency must be at least 1 when --snapshots is more than 0".to_string());
    }
    if args.restore.is_none() && args.processes.checked_mul(args.initial_balance).is_none() {
        refuse(format!(
            "the total, --processes {} x --initial-balance {}, does not fit in 64 bits \
             (at most {})",
            args.processes,
            args.initial_balance,
            u64::MAX
        ));
    }
    // Checked here, before any node connects: a folder that cannot be written would otherwise
    // stop the run at its first snapshot. Only where checkpoints are written: in process,
    // `--nodes`' parent and node 0 (another machine's node would make a folder nobody uses).
    if let Some(dir) = &args.checkpoint_dir {
        if args.keygen.is_none() && args.node.is_none_or(|node| node == 0) {
            if let Err(e) = writable_folder(dir) {
                refuse(format!("--checkpoint-dir {}: {e}", dir.display()));
            }
        }
    }
    let channels = args.topology.channels(args.processes);
    let needed = channels * BYTES_PER_CHANNEL;
    // Restored branches start with the checkpoint's transfers, not T each.
    let transfers = if args.restore.is_none() {
        u128::from(args.processes) * u128::from(args.in_flight)
    } else {
        0
    };
    if let Some(available) = available_memory() {
        if needed > available {
            refuse(format!(
                "a {} topology on {} has {}, about {:.1} GB at ~{BYTES_PER_CHANNEL} bytes each; \
                 {:.1} GB of memory is available",
                args.topology.name(),
                count(args.processes, "branch", "branches"),
                count(channels, "channel", "channels"),
                needed as f64 / 1e9,
                available as f64 / 1e9
            ));
        }
        if needed + transfers * BYTES_PER_TRANSFER > available {
            refuse(format!(
                "{} with --in-flight {} keep {} on their way, about {:.1} GB at \
                 ~{BYTES_PER_TRANSFER} bytes each (and {:.1} GB for the channels); {:.1} GB of \
                 memory is available",
                count(args.processes, "branch", "branches"),
                args.in_flight,
                count(transfers, "transfer", "transfers"),
                (transfers * BYTES_PER_TRANSFER) as f64 / 1e9,
                needed as f64 / 1e9,
                available as f64 / 1e9
            ));
        }
    }
}

/// Makes `dir` if need be and checks that a file can be made in it (and removes that file).
fn writable_folder(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(
        ".bank-probe-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// `time` in UTC as `20250102T030405.123456Z`: checkpoint names start with it, so that
/// names sort in the order the runs started (the civil-from-days conversion of Howard
/// Hinnant's date algorithms; no date crate for one name).
fn utc_stamp(time: std::time::SystemTime) -> String {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    let (days, of_day) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:06}Z",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60,
        since.subsec_micros()
    )
}

/// Prints a line on stdout. If stdout has gone (`bank | head -1`), the reader wants no more:
/// stop quietly rather than panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// A failure timeout: seconds, more than 0.05 (heartbeats go at a fifth of it) and at most a
/// day.
fn parse_timeout(s: &str) -> Result<f64, String> {
    let seconds: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(0.05..=86_400.0).contains(&seconds) {
        return Err(format!("{seconds} s: give 0.05 to 86400 seconds"));
    }
    Ok(seconds)
}

fn main() -> ExitCode {
    // Warnings by default (`RUST_LOG` overrides): they are what an operator should see, such
    // as a private key others can read, a connection refused, or a node that connected from a
    // new start.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let args = Args::parse();
    check_fits(&args);
    if args.nodes.is_some() {
        return cluster::parent(&args);
    }
    if args.keygen.is_some() {
        return cluster::keygen(&args);
    }
    if args.cluster.is_some() || args.spawned {
        return cluster::node(&args);
    }
    interrupt::install(Some(
        "stopping the run; the snapshots so far and the final state are checked",
    ));
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            note!("bank: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    let n = args.processes as usize;
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    note!("bank: seed {seed}");
    let topology = args.topology.topology(n);
    let channels = topology.channels().len();
    // `check_fits` counted them without building the topology; the two must agree.
    assert_eq!(channels as u128, args.topology.channels(args.processes));
    let progress = Arc::new(AtomicU64::new(0));
    let (seeds, mut rng) = branch_seeds(seed, n);
    let branch = |p: usize, balance: u64, in_flight: u64| {
        Branch::new(balance, in_flight, seeds[p], progress.clone())
    };
    let mut builder = Runtime::builder(topology).thread_name("branch");
    if args.trace.is_some() || args.shiviz.is_some() {
        builder = builder.trace(args.trace_events);
    }
    let (runtime, initial_total) = match &args.restore {
        None => {
            let branches: Vec<Branch> = (0..n)
                .map(|p| branch(p, args.initial_balance, args.in_flight))
                .collect();
            (builder.build(branches)?, n as u64 * args.initial_balance)
        }
        Some(file) => {
            let saved = load_checkpoint(file)?;
            let total = saved.total(|balance| *balance, |transfer| transfer.0);
            let runtime = builder
                .restore(&saved, |p, balance| branch(p, *balance, 0))
                .map_err(|e| format!("{}: {e}", file.display()))?;
            restored_from("", file, &saved);
            (runtime, total)
        }
    };
    let start = Instant::now();
    let events = runtime.subscribe();
    let tally = drive(
        args,
        initial_total,
        &events,
        |initiator| runtime.start_snapshot(initiator).map(drop),
        || progress.load(Ordering::Relaxed),
        || !runtime.failures().is_empty(),
        &mut rng,
    );
    let mut stopped = runtime.shutdown()?;
    let elapsed = start.elapsed().as_secs_f64();
    if let Some(trace) = stopped.trace.take() {
        write_trace(args, &trace)?;
    }
    for f in &stopped.failures {
        note!("bank: branch {} panicked: {}", f.process, f.message);
    }
    let in_flight: u64 = stopped.in_flight().map(|(_, t)| t.0).sum();
    let branches = stopped.into_processes()?;
    let transfers: u64 = branches.iter().map(|b| b.delivered).sum();
    let final_total = branches.iter().map(|b| b.balance).sum::<u64>() + in_flight;
    let run = Run {
        n,
        channels,
        seed,
        initial_total,
        exact_count: true,
        failed_nodes: None,
    };
    Ok(summarize(
        args,
        &run,
        &tally,
        transfers,
        elapsed,
        Some(final_total),
    ))
}

/// Reads a checkpoint to restore from.
fn load_checkpoint(
    file: &std::path::Path,
) -> Result<chandy_lamport::GlobalSnapshot<Transfer, u64>, String> {
    checkpoint::load::<Transfer, u64>(file)
        .map_err(|e| format!("cannot restore from {}: {e}", file.display()))
}

/// Says that the run goes on from `saved`, read from `file` (once it has been restored: a
/// refused checkpoint gets one line, the refusal); `who` names the node, if a cluster's
/// (`"node 1: "`), as each node's output may be on another machine.
fn restored_from(
    who: &str,
    file: &std::path::Path,
    saved: &chandy_lamport::GlobalSnapshot<Transfer, u64>,
) {
    note!(
        "bank: {who}restored from {} (snapshot {}, total {})",
        file.display(),
        saved.id,
        saved.total(|balance| *balance, |transfer| transfer.0)
    );
}

/// What the snapshots of a run showed.
struct Tally {
    verdicts: Vec<Verdict>,
    /// Snapshots that failed or never ended.
    failed: u64,
    /// Snapshots never started: the run ended first (a branch or a node failed, or a
    /// checkpoint could not be written).
    not_started: u64,
    /// Why the run was stopped early, if not for a failure: a checkpoint that could not be
    /// written (already said). The run then fails.
    stopped_by: Option<String>,
}

/// Starts the K snapshots over the run (the k-th once k/K of the transfers are done, at most C
/// at once, from random branches) with `start`, reports each as it ends (and writes its
/// checkpoint), and returns once every one has ended and `progress()` has reached the
/// transfers asked for, or `failed()` says a branch has failed, or a snapshot could not start
/// (a branch or node failed) or its checkpoint could not be written. Never gives up without
/// the tally: the caller still stops the run and prints the summary.
fn drive(
    args: &Args,
    initial_total: u64,
    events: &crossbeam_channel::Receiver<SnapshotEvent<Transfer, u64>>,
    start: impl Fn(usize) -> Result<(), chandy_lamport::Error>,
    progress: impl Fn() -> u64,
    failed: impl Fn() -> bool,
    rng: &mut fastrand::Rng,
) -> Tally {
    let n = args.processes as usize;
    let (want, limit) = (args.snapshots, args.concurrency);
    let (mut started, mut ended) = (0u64, 0u64);
    let mut tally = Tally {
        verdicts: Vec::new(),
        failed: 0,
        not_started: 0,
        stopped_by: None,
    };
    // Checkpoint names sort in the order written, across runs into the same folder (a restored
    // run numbers its snapshots from 1 again): the run's start, then the snapshot's number in
    // the run, wide enough for any count.
    let run_started = utc_stamp(std::time::SystemTime::now());
    // Once interrupted: no more starts, and the run ends when the snapshots under way have
    // (they take milliseconds; bounded all the same), so that none is counted failed for it.
    let mut draining: Option<Instant> = None;
    'run: while ended < want || progress() < args.transfers {
        if draining.is_none() && interrupt::asked() {
            tally.stopped_by = Some(interrupt::WHY.to_string());
            draining = Some(Instant::now() + Duration::from_secs(5));
        }
        if draining.is_some_and(|until| ended == started || Instant::now() >= until) {
            break;
        }
        let delivered = progress();
        while draining.is_none()
            && started < want
            && started - ended < limit
            && delivered >= started * (args.transfers / want.max(1))
        {
            match start(rng.usize(..n)) {
                Ok(()) => started += 1,
                // As many as the runtime holds are running: try again once some have ended.
                Err(chandy_lamport::Error::TooManySnapshots { .. }) => break,
                // A branch or a node has failed (a start is refused from then on, whichever
                // the initiator): this one counts as started and ended, failed, and the run
                // ends.
                Err(e) => {
                    note!("bank: a snapshot could not start: {e}");
                    started += 1;
                    ended += 1;
                    tally.failed += 1;
                    break 'run;
                }
            }
        }
        if failed() {
            break;
        }
        match events.recv_timeout(Duration::from_millis(1)) {
            Ok(event) => {
                ended += 1;
                match report(&event, initial_total, args.json) {
                    Some(verdict) => tally.verdicts.push(verdict),
                    None => tally.failed += 1,
                }
                if let (Some(dir), Ok(snapshot)) = (&args.checkpoint_dir, &event.outcome) {
                    let file = dir.join(format!(
                        "snapshot-{run_started}-{ended:020}-{}.json",
                        snapshot.id
                    ));
                    if let Err(e) = checkpoint::save(&file, snapshot) {
                        let why = format!("cannot write checkpoint {}: {e}", file.display());
                        note!("bank: {why}; stopping the run");
                        tally.stopped_by = Some(why);
                        break;
                    }
                }
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        }
    }
    tally.failed += started - ended;
    tally.not_started = want - started;
    tally
}

/// What a summary names about the run.
struct Run {
    n: usize,
    channels: usize,
    seed: u64,
    initial_total: u64,
    /// Whether the transfer count is exact (from the final state). Across nodes, a run whose
    /// final state is missing (a node failed) has only node 0's estimate, said as such.
    exact_count: bool,
    /// Across nodes: the nodes node 0 knew had failed at the stop (in the JSON summary; the
    /// text says them on stderr). `None` in process.
    failed_nodes: Option<Vec<usize>>,
}

/// Prints the summary; returns the verdict: every snapshot completed, conserved and
/// consistent, and the money after the stop is the money before.
fn summarize(
    args: &Args,
    run: &Run,
    tally: &Tally,
    transfers: u64,
    elapsed: f64,
    final_total: Option<u64>,
) -> bool {
    let Run {
        n,
        channels,
        seed,
        initial_total,
        exact_count,
        ref failed_nodes,
    } = *run;
    let verdicts = &tally.verdicts;
    let (failed, not_started) = (tally.failed, tally.not_started);
    let mut latencies: Vec<u64> = verdicts.iter().map(|v| v.latency_us).collect();
    latencies.sort_unstable();
    let (p50, p99, max) = (
        percentile(&latencies, 50),
        percentile(&latencies, 99),
        latencies.last().copied().unwrap_or(0),
    );
    let rate = transfers as f64 / elapsed;
    let not_conserved = verdicts.iter().filter(|v| !v.conserved).count();
    let inconsistent = verdicts.iter().filter(|v| !v.consistent).count();
    if args.json {
        let mut summary = json!({
                "type": "summary",
                "processes": n,
                "topology": args.topology.name(),
                "channels": channels,
                "initial_total": initial_total,
                "seed": seed,
                "transfers": transfers,
                "transfers_exact": exact_count,
                "elapsed_s": elapsed,
                "transfers_per_s": rate,
                "snapshots": verdicts.len(),
                "failed": failed,
                "not_started": not_started,
                "latency_us": {"p50": p50, "p99": p99, "max": max},
        });
        if let Some(failed_nodes) = failed_nodes {
            summary["failed_nodes"] = json!(failed_nodes);
        }
        say!("{summary}");
    } else {
        say!(
            "bank: {}, {} topology ({}), initial total {initial_total}, seed {seed}",
            count(n, "branch", "branches"),
            args.topology.name(),
            count(channels, "channel", "channels")
        );
        let (about, whose) = if exact_count {
            ("", "")
        } else {
            ("about ", " (node 0's estimate: the final state is missing)")
        };
        say!(
            "transfers: {about}{transfers} in {elapsed:.2} s = {about}{rate:.0} transfers/s{whose}"
        );
        // Said only when some were not started: a run that ended early.
        let unstarted = if not_started > 0 {
            format!(", {not_started} never started")
        } else {
            String::new()
        };
        say!(
            "snapshots: {} completed, {failed} failed{unstarted}, {not_conserved} not conserved, \
             {inconsistent} inconsistent; latency p50 {p50} us, p99 {p99} us, max {max} us",
            verdicts.len()
        );
    }
    // No final state (a node failed): already said by whoever found it missing.
    if let Some(final_total) = final_total.filter(|&t| t != initial_total) {
        note!("bank: money after shutdown is {final_total}, not {initial_total}");
    }
    failed == 0
        && not_conserved == 0
        && inconsistent == 0
        && verdicts.len() as u64 == args.snapshots
        && final_total == Some(initial_total)
        && tally.stopped_by.is_none()
}

/// Writes the run's trace and ShiViz log, as asked.
fn write_trace(args: &Args, trace: &chandy_lamport::trace::Trace) -> Result<(), String> {
    if let Some(file) = &args.trace {
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(file)
                .map_err(|e| format!("cannot create {}: {e}", file.display()))?,
        );
        trace
            .write(&mut out)
            .and_then(|()| std::io::Write::flush(&mut out))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        note!(
            "bank: trace of {} written to {}",
            count(trace.events.len(), "event", "events"),
            file.display()
        );
    }
    if let Some(file) = &args.shiviz {
        std::fs::write(file, shiviz::shiviz(&trace.events))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
        note!(
            "bank: ShiViz log of {} written to {}",
            count(trace.events.len(), "event", "events"),
            file.display()
        );
    }
    // Said, not only written in the file: a diagram of a trace that kept some of the
    // snapshots would otherwise pass for the whole run.
    if let Some(shortfall) = trace.header.shortfall() {
        note!(
            "bank: {shortfall}; raise --trace-events ({} per branch) to keep more",
            args.trace_events
        );
    }
    Ok(())
}

/// Prints one snapshot's line; `None` if the snapshot failed.
fn report(event: &SnapshotEvent<Transfer, u64>, initial_total: u64, json: bool) -> Option<Verdict> {
    let snapshot = match &event.outcome {
        Ok(snapshot) => snapshot,
        Err(e) => {
            note!("bank: snapshot {} failed: {e}", event.id);
            return None;
        }
    };
    let total: u64 = snapshot.total(|balance| *balance, |transfer| transfer.0);
    let consistent = match snapshot.verify() {
        Ok(()) => true,
        Err(e) => {
            note!("bank: snapshot {} is not consistent: {e}", snapshot.id);
            false
        }
    };
    let verdict = Verdict {
        conserved: total == initial_total,
        consistent,
        latency_us: snapshot.latency().as_micros() as u64,
    };
    let cost = snapshot.cost();
    if json {
        let channels: Vec<_> = snapshot
            .channels
            .iter()
            .map(|c| {
                json!({
                    "from": c.channel.from,
                    "to": c.channel.to,
                    "sent": c.sent,
                    "received": c.received,
                    "amounts": c.messages.iter().map(|m| m.message.0).collect::<Vec<_>>(),
                })
            })
            .collect();
        say!(
            "{}",
            json!({
                "type": "snapshot",
                "id": snapshot.id.to_string(),
                "initiator": snapshot.initiator,
                "balances": snapshot.states,
                "channels": channels,
                "total": total,
                "conserved": verdict.conserved,
                "consistent": verdict.consistent,
                "latency_us": verdict.latency_us,
                "cost": {
                    "markers": cost.markers,
                    "messages": cost.messages,
                    "bytes": cost.bytes,
                    "recorded_after_us": cost.recorded_after.iter().map(|d| d.as_micros() as u64).collect::<Vec<_>>(),
                },
            })
        );
    } else {
        say!(
            "snapshot {} initiator {:>3} total {total} in flight {:>4} {} {} latency {} us \
             ({}, ~{} recorded, last state recorded at +{} us)",
            snapshot.id,
            snapshot.initiator,
            snapshot.in_flight().count(),
            if verdict.conserved {
                "conserved"
            } else {
                "NOT-CONSERVED"
            },
            if verdict.consistent {
                "consistent"
            } else {
                "INCONSISTENT"
            },
            verdict.latency_us,
            count(cost.markers, "marker", "markers"),
            count(cost.bytes, "byte", "bytes"),
            cost.recorded_after
                .iter()
                .max()
                .unwrap_or(&Duration::ZERO)
                .as_micros()
        );
    }
    Some(verdict)
}

/// `n` things, in words: `1 branch`, `2 branches`.
fn count(n: impl std::fmt::Display, one: &str, many: &str) -> String {
    match n.to_string() {
        n if n == "1" => format!("1 {one}"),
        n => format!("{n} {many}"),
    }
}
