//! The bank across nodes (OS processes, channels between nodes over TCP).
//!
//! `--nodes N` starts N nodes as child processes of this program on 127.0.0.1: each binds a
//! port of the system's choosing and says it, this parent writes the cluster file and hands
//! its path to every node, then passes on what they print. `--cluster FILE --node I` runs one
//! node of a cluster by hand, on any machine.
//!
//! Node 0 drives the run: it starts the snapshots (from branches anywhere in the cluster),
//! decides the end, stops the cluster, and prints every snapshot's line and the summary. It
//! sees the transfers its own branches deliver, and takes the cluster's from their share of
//! the channels (the bank's random walk visits each branch in proportion to its channels);
//! the summary's count is exact, from the cluster's final state. Every node exits with the
//! cluster's verdict: 0 only if every snapshot completed, conserved money and was consistent,
//! and the money after the stop, over every branch and every channel, is the money before.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chandy_lamport::cluster::{
    write_keys, ClusterConfig, ClusterError, ClusterStopped, Node, NodeConfig, NodeKeys,
};

use crate::{branch_seeds, drive, load_checkpoint, summarize, Args, Branch, Run};

/// The note node 0 stops the cluster with when every snapshot checked out.
const GOOD: &[u8] = b"every snapshot completed, conserved and consistent";

/// `bank --cluster FILE --keygen DIR`: makes the keys of the cluster FILE describes (the file
/// may name keys already or not; it is not changed).
pub(crate) fn keygen(args: &Args) -> ExitCode {
    let file = args.cluster.as_ref().expect("clap requires --cluster");
    let dir = args.keygen.as_ref().expect("keygen runs with --keygen");
    let config = match ClusterConfig::load(file) {
        Ok(config) => config,
        Err(e) => {
            note!("bank: {}", in_file(file, &e));
            return ExitCode::from(2);
        }
    };
    match write_keys(dir, config.nodes.len()) {
        Ok(()) => {
            let same = |a: &std::path::Path, b: &std::path::Path| matches!((a.canonicalize(), b.canonicalize()), (Ok(a), Ok(b)) if a == b);
            let named = config.keys.as_deref().is_some_and(|k| same(k, dir));
            let then = if named {
                String::new()
            } else {
                format!(
                    ", and add keys = {:?} to {}",
                    dir.display().to_string(),
                    file.display()
                )
            };
            note!(
                "bank: keys of {} in {}: give node I's machine node-I.key and every \
                 node-*.pub{then}",
                crate::count(config.nodes.len(), "node", "nodes"),
                dir.display(),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            note!("bank: {e}");
            ExitCode::from(1)
        }
    }
}

/// `e`, said of cluster file `file` (and its line, where it has one).
fn in_file(file: &std::path::Path, e: &ClusterError) -> String {
    let hint = if matches!(e, ClusterError::NoKeys) {
        format!(
            "; make them with `bank --cluster {} --keygen DIR`",
            file.display()
        )
    } else {
        String::new()
    };
    match e.line() {
        Some(line) => format!("{}:{line}: {e}{hint}", file.display()),
        None => format!("{}: {e}{hint}", file.display()),
    }
}

/// `bank --nodes N`: starts the nodes, passes on what they print, exits with their verdict.
pub(crate) fn parent(args: &Args) -> ExitCode {
    match spawn_nodes(args) {
        Ok(code) => code,
        Err(e) => {
            note!("bank: {e}");
            ExitCode::from(1)
        }
    }
}

fn spawn_nodes(args: &Args) -> Result<ExitCode, String> {
    let nodes = args.nodes.expect("parent runs with --nodes") as usize;
    let n = args.processes as usize;
    if nodes > n {
        note!("bank: --nodes {nodes} is more than the {n} branches: every node needs one");
        return Ok(ExitCode::from(2));
    }
    // The nodes stop the run; this parent passes its own interrupt on to node 0 (below).
    crate::interrupt::install(Some(
        "stopping every node; the snapshots so far and the final state are checked",
    ));
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    note!(
        "bank: seed {seed}; {} on 127.0.0.1, branch b on node b mod {nodes}",
        crate::count(nodes, "node", "nodes")
    );
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    // The same flags for every node, but `--nodes`, and the same seed.
    let mut passed: Vec<OsString> = Vec::new();
    let mut skip = false;
    for arg in std::env::args_os().skip(1) {
        if std::mem::take(&mut skip) {
            continue;
        }
        match arg.to_str() {
            Some("--nodes") => skip = true,
            Some(a) if a.starts_with("--nodes=") => {}
            _ => passed.push(arg),
        }
    }
    if args.seed.is_none() {
        passed.extend(["--seed".into(), seed.to_string().into()]);
    }
    let mut children = Vec::new();
    let mut addresses = Vec::new();
    for node in 0..nodes {
        let mut child = Command::new(&exe)
            .args(&passed)
            .args(["--node", &node.to_string(), "--spawned"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start node {node}: {e}"))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let said = out.read_line(&mut line).map_err(|e| e.to_string())?;
        let Some(address) = line.trim().strip_prefix("listening ").filter(|_| said > 0) else {
            let _ = child.kill();
            return Err(format!("node {node} did not say where it listens"));
        };
        addresses.push(address.to_string());
        children.push((child, Some(out)));
    }
    let config = ClusterConfig::new(
        addresses
            .iter()
            .enumerate()
            .map(|(node, address)| {
                NodeConfig::new(address.clone(), (0..n).filter(|b| b % nodes == node))
            })
            .collect(),
    );
    // Throwaway keys, made here for these nodes and removed with the file as soon as every node
    // has read its own (so that a parent killed later leaves no private key behind): in a
    // folder of a name nobody could have guessed, made new (never one that was there, which
    // another user could have made and could change), readable by this user only.
    let dir = std::env::temp_dir().join(format!(
        "bank-cluster-{}-{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ));
    private_folder(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let dir = Removed(dir);
    write_keys(&dir.0.join("keys"), nodes).map_err(|e| e.to_string())?;
    let file = dir.0.join("cluster.toml");
    std::fs::write(&file, config.with_keys("keys").to_toml())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    // Each node's stdin stays open while this parent lives: a node that reads its end sees
    // this parent gone, however it went (even SIGKILL), and stops (`watch_parent`).
    let mut stdins = Vec::new();
    for (child, _) in &mut children {
        let mut stdin = child.stdin.take().expect("piped");
        // A node that died already shows in its exit status below.
        let _ = writeln!(stdin, "{}", file.display());
        stdins.push(stdin);
    }
    // A Ctrl-C in a terminal reaches every node, but a SIGINT sent to this parent alone would
    // not: node 0, which drives the run, is told (`watch_parent`). Its stdin stays open here.
    let node_0 = stdins.remove(0);
    pass_on_interrupt(node_0);
    // Every node says when it has read the cluster file and its key; then nothing on disk is
    // needed any more. A node that fails first closes its stdout (its exit status says why).
    for (node, (_, out)) in children.iter_mut().enumerate() {
        let out = out.as_mut().expect("read below only");
        let mut line = String::new();
        match out.read_line(&mut line) {
            Ok(said) if said > 0 && line.trim() == KEYS_READ => {}
            Ok(0) => {}
            Ok(_) => note!(
                "bank: node {node} said {:?}, not that it read its key",
                line.trim()
            ),
            Err(e) => note!("bank: node {node}: {e}"),
        }
    }
    drop(dir);
    // Pass on what the nodes print (only node 0 prints on stdout), a line at a time.
    let mut passing = Vec::new();
    for out in children.iter_mut().filter_map(|(_, out)| out.take()) {
        passing.push(thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{line}").is_err() {
                    // Our reader has gone (`| head`): stop quietly, as a node would (the
                    // nodes then see their stdin end, and stop too).
                    std::process::exit(0);
                }
            }
        }));
    }
    let mut worst = 0u8;
    for (node, (mut child, _)) in children.into_iter().enumerate() {
        let status = child.wait().map_err(|e| e.to_string())?;
        let code = match status.code() {
            Some(code) => code.clamp(0, 255) as u8,
            None => {
                // Killed by a signal: said as such, not as an exit status it never had.
                note!("bank: node {node} was {}", killed_by(&status));
                worst = worst.max(1);
                continue;
            }
        };
        if code != 0 {
            note!("bank: node {node} exited with status {code}");
        }
        worst = worst.max(code);
    }
    drop(stdins);
    for p in passing {
        let _ = p.join();
    }
    Ok(ExitCode::from(worst))
}

/// Tells node 0 (on its stdin, which this thread then holds open while this parent lives)
/// once this parent has been interrupted.
fn pass_on_interrupt(mut node_0: std::process::ChildStdin) {
    let passing = thread::Builder::new()
        .name("interrupt".to_string())
        .spawn(move || {
            crate::interrupt::wait();
            // Node 0 may have ended already: its exit status says how.
            let _ = writeln!(node_0, "{STOP}");
            loop {
                thread::park();
            }
        });
    if let Err(e) = passing {
        note!("bank: cannot pass an interrupt on to node 0: {e}");
    }
}

/// What the parent of `--nodes` writes on node 0's stdin when interrupted.
const STOP: &str = "stop";

/// What a node started by `--nodes` says on stdout once it has read the cluster file and its
/// key, after `listening ADDRESS`.
const KEYS_READ: &str = "keys read";

/// How a process that has no exit code ended: by which signal.
fn killed_by(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("killed by signal {signal}");
        }
    }
    format!("ended without an exit status ({status})")
}

/// A folder removed, with what it holds, when this goes out of scope, however the function
/// that made it returns.
struct Removed(PathBuf);

impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Makes `dir`, which must not exist yet, readable by this user only.
fn private_folder(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// `bank --cluster FILE --node I`, or a node started by `--nodes`.
pub(crate) fn node(args: &Args) -> ExitCode {
    let me = args.node.expect("clap requires --node");
    // A node of `--nodes` says nothing of it: its parent does.
    crate::interrupt::install(
        (!args.spawned).then_some(
            "stopping the cluster; the snapshots so far and the final state are checked",
        ),
    );
    let (file, listener) = if args.spawned {
        match announce() {
            Ok(found) => {
                watch_parent(me);
                found
            }
            Err(e) => {
                note!("bank: node {me}: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        (args.cluster.clone().expect("clap requires --cluster"), None)
    };
    let config = match ClusterConfig::load(&file) {
        Ok(config) => config,
        Err(e) => {
            note!("bank: {}", in_file(&file, &e));
            return ExitCode::from(2);
        }
    };
    let keys = if args.spawned {
        match spawned_keys(&config, me) {
            Ok(keys) => Some(keys),
            Err(e) => {
                note!("bank: node {me}: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };
    match run_node(args, config, me, listener, keys) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(Failure::Cluster(e)) if e.is_in_file() || matches!(e, ClusterError::Bind { .. }) => {
            note!("bank: {}", in_file(&file, &e));
            ExitCode::from(2)
        }
        Err(Failure::Usage(message)) => {
            note!("bank: {}: {message}", file.display());
            ExitCode::from(2)
        }
        Err(Failure::Cluster(e)) => {
            note!("bank: node {me}: {e}");
            ExitCode::from(1)
        }
        Err(Failure::Other(e)) => {
            note!("bank: node {me}: {e}");
            ExitCode::from(1)
        }
    }
}

/// A node started by `--nodes`: binds a port of the system's choosing on 127.0.0.1, says it on
/// stdout, and reads the cluster file's path from stdin.
fn announce() -> Result<(PathBuf, Option<TcpListener>), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening {address}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let mut path = String::new();
    std::io::stdin()
        .read_line(&mut path)
        .map_err(|e| e.to_string())?;
    if path.trim().is_empty() {
        return Err("the parent gave no cluster file".to_string());
    }
    Ok((PathBuf::from(path.trim()), Some(listener)))
}

/// A node started by `--nodes`: reads its keys from the parent's throwaway folder now, and
/// says so on stdout, so that the parent can remove the folder at once.
fn spawned_keys(config: &ClusterConfig, me: usize) -> Result<NodeKeys, String> {
    let dir = config
        .keys
        .as_ref()
        .ok_or("the parent's cluster file names no keys")?;
    let keys = NodeKeys::load(dir, me, config.nodes.len()).map_err(|e| e.to_string())?;
    println!("{KEYS_READ}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    Ok(keys)
}

/// A node started by `--nodes`: the parent holds this node's stdin open while it lives, so
/// the end of stdin means the parent has gone (killed, even by SIGKILL, whose parent runs
/// nothing). Nobody is then left to read what the nodes print or to wait for them: this node
/// exits (every node sees the same end at once).
fn watch_parent(me: usize) {
    let watching = thread::Builder::new()
        .name("parent-watch".to_string())
        .spawn(move || {
            // After the cluster file's path the parent writes nothing but, if it is
            // interrupted, `STOP`: this reads until the end (or an error, which means the
            // same: nobody at the other end).
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if line.trim() == STOP {
                    crate::interrupt::ask();
                }
            }
            note!("bank: node {me}: the parent (bank --nodes) has gone: this node stops");
            std::process::exit(1);
        });
    if let Err(e) = watching {
        note!("bank: node {me}: cannot watch for the parent's end: {e}");
    }
}

/// How a node's run went wrong.
enum Failure {
    Cluster(ClusterError),
    Usage(String),
    Other(String),
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure::Other(e.to_string())
    }
}

/// Runs node `me`: builds its branches, waits for every node, then drives the run (node 0) or
/// follows it. Returns the cluster's verdict.
fn run_node(
    args: &Args,
    config: ClusterConfig,
    me: usize,
    listener: Option<TcpListener>,
    keys: Option<NodeKeys>,
) -> Result<bool, Failure> {
    let n = args.processes as usize;
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    if args.nodes.is_none() && !args.spawned {
        note!("bank: node {me}, seed {seed}");
    }
    let topology = args.topology.topology(n);
    let channels = topology.channels().len();
    let (seeds, mut rng) = branch_seeds(seed, n);
    let progress = Arc::new(AtomicU64::new(0));
    // Flags that change what a node's branches do, which every node must share: a node
    // started with another initial balance would make every snapshot look like money lost (a
    // restored node takes its balances from the checkpoint instead). And the seed, when given:
    // a run repeats from the seed node 0 prints only if every node ran with it.
    let mut settings = Vec::new();
    if args.restore.is_none() {
        settings.push(format!("--initial-balance {}", args.initial_balance));
        settings.push(format!("--in-flight {}", args.in_flight));
    }
    if let Some(seed) = args.seed {
        settings.push(format!("--seed {seed}"));
    }
    let mut builder = Node::builder(topology, config, me)
        .thread_name("branch")
        .connect_timeout(Duration::from_secs(args.connect_timeout))
        .failure_timeout(Duration::from_secs_f64(args.failure_timeout))
        .settings(settings.join(" "));
    if let Some(listener) = listener {
        builder = builder.listener(listener);
    }
    if let Some(keys) = keys {
        builder = builder.keys(keys);
    }
    let branch = |p: usize, balance: u64, in_flight: u64| {
        Branch::new(balance, in_flight, seeds[p], progress.clone())
    };
    let (node, initial_total, received_before) = match &args.restore {
        None => {
            let node = builder
                .build(|p| branch(p, args.initial_balance, args.in_flight))
                .map_err(Failure::Cluster)?;
            (node, n as u64 * args.initial_balance, 0)
        }
        Some(file) => {
            let saved = load_checkpoint(file)?;
            let total = saved.total(|balance| *balance, |transfer| transfer.0);
            let before: u64 = saved.channels.iter().map(|c| c.received).sum();
            let node = builder
                .restore(&saved, |p, balance| branch(p, *balance, 0))
                .map_err(Failure::Cluster)?;
            crate::restored_from(&format!("node {me}: "), file, &saved);
            (node, total, before)
        }
    };
    let start = Instant::now();
    let watcher = watch_failures(&node, me);
    if me != 0 {
        let verdict = follow(node, initial_total, args.spawned);
        watched(watcher);
        return verdict;
    }
    // Node 0 extrapolates the cluster's deliveries from its branches' share of the channels.
    let wiring = node.wiring();
    let share: usize = node
        .local_processes()
        .iter()
        .map(|&p| wiring.incoming(p).len())
        .sum();
    if share == 0 {
        return Err(Failure::Usage(
            "node 0 drives the run and must run at least one branch".to_string(),
        ));
    }
    let events = node.subscribe();
    let estimate = || progress.load(Ordering::Relaxed) * channels as u64 / share as u64;
    // A node started on its own may stop the cluster (interrupted): this one then stops too.
    let mut tally = drive(
        args,
        initial_total,
        &events,
        |initiator| node.start_snapshot(initiator).map(drop),
        estimate,
        || !node.failures().is_empty() || node.is_stopping(),
        &mut rng,
    );
    let stopped_elsewhere = node.is_stopping() && tally.stopped_by.is_none();
    if stopped_elsewhere {
        tally.stopped_by = Some("another node stopped the cluster".to_string());
    }
    let snapshots_good = tally.stopped_by.is_none()
        && tally.failed == 0
        && tally.verdicts.len() as u64 == args.snapshots
        && tally.verdicts.iter().all(|v| v.conserved && v.consistent);
    let note = match &tally.stopped_by {
        Some(why) => why.as_bytes().to_vec(),
        None if snapshots_good => GOOD.to_vec(),
        None => b"a snapshot failed or did not check out".to_vec(),
    };
    let stopped = node.shutdown_with(note).map_err(Failure::Cluster)?;
    let elapsed = start.elapsed().as_secs_f64();
    if stopped_elsewhere {
        // Its note says why (an interrupted node says so).
        let why = String::from_utf8_lossy(&stopped.note);
        note!("bank: node {me}: another node stopped the cluster: {why}");
    }
    watched(watcher);
    let (transfers, final_total) = match final_money(me, &stopped, initial_total) {
        Some((received, total)) => (received - received_before, Some(total)),
        // No final state (a node failed): what node 0 saw, not 0.
        None => (estimate(), None),
    };
    let run = Run {
        n,
        channels,
        seed,
        initial_total,
        exact_count: final_total.is_some(),
        failed_nodes: Some(stopped.failed_nodes.clone()),
    };
    let summarized = summarize(args, &run, &tally, transfers, elapsed, final_total);
    Ok(summarized && snapshots_good && agreed(me, &stopped))
}

/// Whether every other node said it had every final report (`ClusterStopped::unconfirmed`);
/// if not, says which did not: they may have ended with no final state, and exit 1, so this
/// node exits 1 too, whatever its own final state (so that every node exits with the same
/// verdict, but for a node held up past the failure timeout in the stop: docs/cluster.md).
fn agreed(me: usize, stopped: &ClusterStopped<Branch>) -> bool {
    let unconfirmed = stopped.unconfirmed();
    if !unconfirmed.is_empty() {
        note!(
            "bank: node {me}: nodes {unconfirmed:?} did not say they had every final report: \
             they may end with none, so this node's whole final state is not the cluster's verdict"
        );
    }
    unconfirmed.is_empty()
}

/// The cluster's final state, checked: the transfers every channel received, and the money
/// over every branch and channel; `None` (and said) if it is missing or not a consistent state.
fn final_money(
    me: usize,
    stopped: &ClusterStopped<Branch>,
    initial_total: u64,
) -> Option<(u64, u64)> {
    for f in &stopped.failures {
        note!("bank: branch {} failed: {}", f.process, f.message);
    }
    if !stopped.failed_nodes.is_empty() {
        note!(
            "bank: node {me}: at the stop, failed nodes {:?}",
            stopped.failed_nodes
        );
    }
    let Some(last) = stopped.final_state() else {
        // The real reason: a failed node (its report is missing and its branches failed with
        // it, each said above), else a branch that failed; and a report that did not come
        // from a node not known to have failed.
        let mut why = Vec::new();
        if !stopped.failed_nodes.is_empty() {
            why.push(format!("nodes {:?} failed", stopped.failed_nodes));
        } else if !stopped.failures.is_empty() {
            let branches: Vec<usize> = stopped.failures.iter().map(|f| f.process).collect();
            why.push(format!("branches {branches:?} failed"));
        }
        let silent: Vec<usize> = stopped
            .missing_reports()
            .iter()
            .filter(|k| !stopped.failed_nodes.contains(k))
            .copied()
            .collect();
        if !silent.is_empty() {
            why.push(format!("nodes {silent:?} did not report"));
        }
        if why.is_empty() {
            why.push("the reports do not cover every branch and channel".to_string());
        }
        note!("bank: node {me}: no final state: {}", why.join("; "));
        return None;
    };
    if let Err(e) = last.verify() {
        note!("bank: the final state after the stop is not consistent: {e}");
        return None;
    }
    let total = last.total(|balance| *balance, |transfer| transfer.0);
    if total != initial_total {
        note!("bank: money after the stop is {total}, not {initial_total}");
    }
    Some((last.channels.iter().map(|c| c.received).sum(), total))
}

/// Says on stderr, once, when this node decides other nodes (or itself) failed: which, and the
/// wall-clock time (seconds since 1970), so that a script can tell how long after a fault.
fn watch_failures(node: &Node<Branch>, me: usize) -> Option<thread::JoinHandle<()>> {
    let node = node.clone();
    let watching = thread::Builder::new()
        .name("failure-watch".to_string())
        .spawn(move || loop {
            let failed = node.failed_nodes();
            if !failed.is_empty() {
                let at = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                note!(
                    "bank: node {me}: decided failed nodes {failed:?} at {:.3} (Unix time, s)",
                    at.as_secs_f64()
                );
                return;
            }
            if node.is_stopping() {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        });
    watching
        .map_err(|e| note!("bank: node {me}: cannot watch for failures: {e}"))
        .ok()
}

/// Once the cluster has stopped: lets the watcher say what it saw before this process exits.
fn watched(watcher: Option<thread::JoinHandle<()>>) {
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
}

/// A node other than 0: runs until the cluster stops (node 0 stops it; or, if another node
/// fails, this one does), then checks the final state too; returns the cluster's verdict.
fn follow(node: Node<Branch>, initial_total: u64, spawned: bool) -> Result<bool, Failure> {
    let stopped = loop {
        match node.wait_stopped(Duration::from_millis(200)) {
            Ok(stopped) => break stopped,
            Err(ClusterError::WaitTimeout) if !node.is_stopping() => {
                // Another node failed: nobody may be left to stop the cluster. Interrupted: a
                // node of `--nodes` leaves the stop to node 0 (the parent tells it); a node
                // started on its own stops the cluster itself.
                let why = if !node.failures().is_empty() {
                    "a node failed".to_string()
                } else if crate::interrupt::asked() && !spawned {
                    format!("{} on node {}", crate::interrupt::WHY, node.index())
                } else {
                    continue;
                };
                break node
                    .clone()
                    .shutdown_with(why.into_bytes())
                    .map_err(Failure::Cluster)?;
            }
            Err(ClusterError::WaitTimeout) => {}
            Err(e) => return Err(Failure::Cluster(e)),
        }
    };
    let money = final_money(node.index(), &stopped, initial_total);
    let balanced = money.is_some_and(|(_, total)| total == initial_total);
    Ok(stopped.note == GOOD && balanced && agreed(node.index(), &stopped))
}
