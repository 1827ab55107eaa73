//! What the integration tests share: a bank-like test application whose snapshots can be checked
//! exactly, and seeds that are printed whenever a test fails.

#![allow(dead_code)] // each test file uses its own part

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chandy_lamport::{Context, Error, GlobalSnapshot, Process, ProcessId, Runtime, RuntimeStats};
use crossbeam_channel::{bounded, Sender};

/// `n` listeners on 127.0.0.1, on ports the system picks, and their addresses: the nodes of a
/// cluster test.
pub fn listeners(n: usize) -> (Vec<std::net::TcpListener>, Vec<String>) {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    (listeners, addresses)
}

/// A cluster of this test process's threads: a node on 127.0.0.1 (a port the system picks) with
/// fresh keys for each entry of `placement`, each builder given `tweak`, node `k` making process
/// `p` with `make(k, p)`; patient (`PATIENCE`) to connect and to stop.
pub fn start_nodes<P: chandy_lamport::cluster::NodeProcess>(
    topology: &chandy_lamport::Topology,
    placement: &[Vec<ProcessId>],
    tweak: fn(chandy_lamport::cluster::NodeBuilder<P>) -> chandy_lamport::cluster::NodeBuilder<P>,
    make: impl Fn(usize, ProcessId) -> P + Clone + Send + 'static,
) -> Vec<chandy_lamport::cluster::Node<P>> {
    start_nodes_apart(topology, placement, tweak, make, Duration::ZERO)
}

/// `start_nodes`, node `k` built `k * apart` after the first: each node's clock counts from its
/// own start, so their clocks are that far apart.
pub fn start_nodes_apart<P: chandy_lamport::cluster::NodeProcess>(
    topology: &chandy_lamport::Topology,
    placement: &[Vec<ProcessId>],
    tweak: fn(chandy_lamport::cluster::NodeBuilder<P>) -> chandy_lamport::cluster::NodeBuilder<P>,
    make: impl Fn(usize, ProcessId) -> P + Clone + Send + 'static,
    apart: Duration,
) -> Vec<chandy_lamport::cluster::Node<P>> {
    use chandy_lamport::cluster::{ClusterConfig, Node, NodeKeys};
    let (config, listeners) = ClusterConfig::on_localhost(placement.iter().cloned()).unwrap();
    let keys = NodeKeys::generate(placement.len()).unwrap();
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(keys)
        .enumerate()
        .map(|(k, (listener, keys))| {
            let (topology, config, make) = (topology.clone(), config.clone(), make.clone());
            std::thread::spawn(move || {
                std::thread::sleep(apart * k as u32);
                let builder = Node::builder(topology, config, k)
                    .listener(listener)
                    .keys(keys)
                    .connect_timeout(*PATIENCE)
                    .stop_timeout(*PATIENCE);
                tweak(builder).build(|p| make(k, p))
            })
        })
        .collect();
    builds
        .into_iter()
        .map(|b| b.join().unwrap().unwrap())
        .collect()
}

/// A size a test reads from the environment variable `name`, `default` if unset or not a
/// number (the way the stress and scale tests are scaled up).
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Long enough for anything that should happen, short enough that a hang fails the test
/// (`TEST_PATIENCE_SECS` shortens it, for mutation runs where hangs are expected).
pub static PATIENCE: std::sync::LazyLock<Duration> =
    std::sync::LazyLock::new(|| Duration::from_secs(env_or("TEST_PATIENCE_SECS", 30)));

/// A seed for a randomised test: `SEED` from the environment to replay, else a fresh one. The
/// returned guard prints it if the test fails.
pub fn seed(test: &str) -> (u64, SeedGuard) {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    (
        seed,
        SeedGuard {
            test: test.to_string(),
            seed,
        },
    )
}

/// Prints the seed when dropped during a panic.
pub struct SeedGuard {
    test: String,
    seed: u64,
}

impl Drop for SeedGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "{} failed with seed {}; replay with: SEED={} cargo test --release {}",
                self.test, self.seed, self.seed, self.test
            );
        }
    }
}

/// A bank branch: keeps `in_flight` transfers moving, each to a random neighbour, each a random
/// amount of its balance. Money is conserved; so is the number of transfers in flight.
pub struct Branch {
    pub balance: u64,
    pub in_flight: u64,
    pub rng: fastrand::Rng,
    pub delivered: u64,
    /// Start a snapshot from inside `on_message` every this many deliveries (0: never).
    pub snapshot_every: u64,
    /// Total deliveries of all branches, for tests that wait for traffic.
    pub traffic: Arc<AtomicU64>,
}

impl Branch {
    pub fn new(balance: u64, in_flight: u64, seed: u64, traffic: Arc<AtomicU64>) -> Self {
        Branch {
            balance,
            in_flight,
            rng: fastrand::Rng::with_seed(seed),
            delivered: 0,
            snapshot_every: 0,
            traffic,
        }
    }

    fn pay(&mut self, ctx: &mut Context<'_, u64>) {
        let amount = self.rng.u64(0..=self.balance);
        let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
        self.balance -= amount;
        if let Err(e) = ctx.send(to, amount) {
            self.balance += e.into_message();
        }
    }
}

impl Process for Branch {
    type Message = u64;
    type State = u64;

    fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
        for _ in 0..self.in_flight {
            self.pay(ctx);
        }
    }

    fn on_message(&mut self, _from: ProcessId, amount: u64, ctx: &mut Context<'_, u64>) {
        self.balance += amount;
        self.delivered += 1;
        self.traffic.fetch_add(1, Ordering::Relaxed);
        self.pay(ctx);
        if self.snapshot_every != 0 && self.delivered.is_multiple_of(self.snapshot_every) {
            ctx.start_snapshot();
        }
    }

    fn record(&self) -> u64 {
        self.balance
    }
}

/// `n` branches with `balance` each and `in_flight` transfers each, seeded from `seed`.
pub fn branches(
    n: usize,
    balance: u64,
    in_flight: u64,
    seed: u64,
) -> (Vec<Branch>, Arc<AtomicU64>) {
    let traffic = Arc::new(AtomicU64::new(0));
    let mut rng = fastrand::Rng::with_seed(seed);
    let v = (0..n)
        .map(|_| Branch::new(balance, in_flight, rng.u64(..), traffic.clone()))
        .collect();
    (v, traffic)
}

/// Waits until at least `deliveries` more transfers have been delivered.
pub fn wait_for_traffic(traffic: &AtomicU64, deliveries: u64) {
    let target = traffic.load(Ordering::Relaxed) + deliveries;
    let deadline = std::time::Instant::now() + *PATIENCE;
    while traffic.load(Ordering::Relaxed) < target {
        assert!(std::time::Instant::now() < deadline, "traffic stalled");
        std::thread::yield_now();
    }
}

/// The checks every bank snapshot must pass: the exact cut criterion, money conserved, and
/// (because every delivery triggers exactly one send within one callback) every transfer found
/// in flight, none in a process.
pub fn check_bank(snapshot: &GlobalSnapshot<u64, u64>, total: u64, transfers: u64) {
    if let Err(e) = snapshot.verify() {
        panic!("snapshot {} is not a consistent cut: {e}", snapshot.id);
    }
    assert_eq!(
        snapshot.total(|b| *b, |t| *t),
        total,
        "snapshot {} does not conserve money",
        snapshot.id
    );
    assert_eq!(
        snapshot.in_flight().count() as u64,
        transfers,
        "snapshot {} lost or duplicated a transfer",
        snapshot.id
    );
    // Each process recorded after the start and before the end, on the driver's clock.
    assert_eq!(snapshot.recorded_at.len(), snapshot.states.len());
    assert!(
        snapshot
            .recorded_at
            .iter()
            .all(|t| (snapshot.started_at..=snapshot.completed_at).contains(t)),
        "snapshot {}: record times {:?} outside {:?}..={:?}",
        snapshot.id,
        snapshot.recorded_at,
        snapshot.started_at,
        snapshot.completed_at
    );
}

/// Waits until `done` holds, failing the test after `PATIENCE`.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + *PATIENCE;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Holds `process`'s thread inside a callback until the returned sender is used or dropped, so
/// nothing reaching that process is served meanwhile (and every snapshot stays in flight). The
/// hold ends by itself after `PATIENCE`, so a test that forgets to release fails, not hangs.
pub fn hold<P: Process>(runtime: &Runtime<P>, process: ProcessId) -> Sender<()> {
    let (release, wait) = bounded::<()>(0);
    let (entered_tx, entered) = bounded(1);
    let result = runtime.with_process_timeout(process, Duration::from_millis(1), move |_, _| {
        entered_tx.send(()).unwrap();
        let _ = wait.recv_timeout(*PATIENCE);
    });
    assert_eq!(result.unwrap_err(), Error::Timeout);
    entered.recv_timeout(*PATIENCE).unwrap();
    release
}

/// Waits until no snapshot state is left anywhere in the runtime (every process has forgotten
/// every snapshot, nothing is being assembled or waited on).
pub fn wait_until_clean<P: Process>(runtime: &Runtime<P>) {
    wait_until("no snapshot state left in the runtime", || {
        runtime.stats() == RuntimeStats::default()
    });
    assert_eq!(runtime.stats(), RuntimeStats::default());
}

/// Shuts the bank down and returns its money: what the branches hold plus what is still in
/// the channels.
pub fn final_total(runtime: Runtime<Branch>) -> u64 {
    let stopped = runtime.shutdown().unwrap();
    let in_flight: u64 = stopped.in_flight().map(|(_, m)| *m).sum();
    let held: u64 = stopped
        .into_processes()
        .unwrap()
        .iter()
        .map(|b| b.balance)
        .sum();
    held + in_flight
}

/// A branch that panics on its `fuse`-th delivery ("branch gave up after N transfers").
pub struct Fragile {
    pub branch: Branch,
    pub fuse: u64,
}

impl Fragile {
    /// The branches, with branch `which` panicking on its `fuse`-th delivery.
    pub fn among(branches: Vec<Branch>, which: ProcessId, fuse: u64) -> Vec<Fragile> {
        branches
            .into_iter()
            .enumerate()
            .map(|(i, branch)| Fragile {
                branch,
                fuse: if i == which { fuse } else { u64::MAX },
            })
            .collect()
    }
}

impl Process for Fragile {
    type Message = u64;
    type State = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, u64>) {
        self.branch.on_start(ctx);
    }
    fn on_message(&mut self, from: ProcessId, m: u64, ctx: &mut Context<'_, u64>) {
        if self.branch.delivered + 1 == self.fuse {
            panic!("branch gave up after {} transfers", self.branch.delivered);
        }
        self.branch.on_message(from, m, ctx);
    }
    fn record(&self) -> u64 {
        self.branch.record()
    }
}
