//! The bank example as its users run it: the built `bank` program, in process and with
//! `--nodes 3`, judged by its exit status and what it prints. The program is the one `cargo
//! test` builds beside this test (`target/<profile>/examples/bank`; `cargo test --test
//! bank_cli` alone does not build examples: `cargo build --example bank` first), or `$BANK`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::PATIENCE;
use crossbeam_channel::Receiver;

/// The bank program under test.
fn bank() -> PathBuf {
    if let Some(bank) = std::env::var_os("BANK") {
        return bank.into();
    }
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/bank_cli-<hash> -> target/<profile>/examples/bank
    let profile = exe.parent().unwrap().parent().unwrap();
    let bank = profile
        .join("examples")
        .join(format!("bank{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bank.exists(),
        "{} is not built: run `cargo build --example bank` first, or set BANK",
        bank.display()
    );
    bank
}

/// A running bank, and the lines it prints on stdout and stderr.
struct Running {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
}

/// What a bank printed, and how it ended.
struct Ended {
    code: Option<i32>,
    out: Vec<String>,
    err: Vec<String>,
}

impl Ended {
    fn err_has(&self, words: &str) -> bool {
        self.err.iter().any(|l| l.contains(words))
    }
}

/// Each line `from` gives, passed on to this test's stderr (shown when it fails) and sent.
fn lines(from: impl std::io::Read + Send + 'static, name: &'static str) -> Receiver<String> {
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            eprintln!("{name}: {line}");
            let _ = tx.send(line);
        }
    });
    rx
}

fn start(args: &[&str]) -> Running {
    let mut child = Command::new(bank())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap(), "stdout");
    let err = lines(child.stderr.take().unwrap(), "stderr");
    Running { child, out, err }
}

impl Running {
    /// Waits (bounded) for a line on stdout with `words` in it.
    fn wait_out(&self, words: &str) {
        self.wait_out_n(words, 1);
    }

    /// Waits (bounded) for `n` lines on stdout with `words` in them.
    fn wait_out_n(&self, words: &str, n: usize) {
        let deadline = Instant::now() + *PATIENCE;
        let mut seen = 0;
        while seen < n {
            match self.out.recv_deadline(deadline) {
                Ok(line) if line.contains(words) => seen += 1,
                Ok(_) => {}
                Err(_) => panic!("the bank printed {words:?} {seen} times, not {n}"),
            }
        }
    }

    /// The bank's children (the nodes of `--nodes`), in the order started.
    fn children(&self) -> Vec<u32> {
        let pid = self.child.id();
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
        let mut pids: Vec<u32> = text
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Waits for the end (bounded: a bank still running is killed and the test fails).
    fn finish(mut self) -> Ended {
        let deadline = Instant::now() + *PATIENCE * 2;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the bank did not end in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // Its children may hold the pipes a little longer: read to the end, bounded.
        let drain = |rx: &Receiver<String>| {
            let mut all = Vec::new();
            while let Ok(line) = rx.recv_deadline(Instant::now() + *PATIENCE) {
                all.push(line);
            }
            all
        };
        Ended {
            code: status.code(),
            out: drain(&self.out),
            err: drain(&self.err),
        }
    }
}

fn run(args: &[&str]) -> Ended {
    start(args).finish()
}

fn kill(signal: &str, pid: u32) {
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// A fresh folder of this test's own.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bank-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The flags of a run long enough to be stopped by the test.
const LONG: &[&str] = &[
    "--transfers",
    "100000000",
    "--snapshots",
    "1000000",
    "--concurrency",
    "8",
];

/// `LONG`, on three nodes.
fn long_on_nodes() -> Vec<&'static str> {
    let nodes = [
        "--nodes",
        "3",
        "--processes",
        "12",
        "--failure-timeout",
        "1",
    ];
    [&nodes[..], LONG].concat()
}

/// A node killed while node 0 keeps starting snapshots: a start refused because the cluster
/// has a failed node counts as a failed snapshot; node 0 still stops the cluster and prints
/// the summary (which, in JSON, names the failed node); the parent says the node was killed
/// by a signal; every node exits 1.
#[test]
fn a_node_killed_while_snapshots_start_still_gets_a_summary_and_exit_1() {
    let mut args = long_on_nodes();
    args.push("--json");
    let bank = start(&args);
    // Well into the run, node 0 starting snapshots all the time (at the kill, a start may be
    // refused before node 0 sees the failure itself).
    bank.wait_out_n("\"type\":\"snapshot\"", 300);
    let children = bank.children();
    assert_eq!(children.len(), 3, "three nodes: {children:?}");
    kill("-KILL", children[2]);
    let end = bank.finish();
    assert_eq!(end.code, Some(1));
    let summary = end
        .out
        .iter()
        .find(|l| l.contains("\"type\":\"summary\""))
        .expect("node 0 printed the summary");
    assert!(summary.contains("\"failed_nodes\":[2]"), "{summary}");
    assert!(end.err_has("node 2 was killed by signal 9"));
    assert!(!end.err_has("node 2 exited with status"));
    assert!(!end.err_has("nodes [] did not report"));
    for node in [0, 1] {
        assert!(end.err_has(&format!("node {node}: decided failed nodes [2]")));
    }
}

/// `--checkpoint-dir` where no folder can be made is refused as a usage error (exit 2) before
/// anything runs, in process and across nodes.
#[test]
fn an_unusable_checkpoint_dir_is_refused_before_the_run() {
    let dir = scratch("unusable");
    let file = dir.join("afile");
    std::fs::write(&file, "not a folder").unwrap();
    let under = file.join("sub");
    let under = under.to_str().unwrap();
    for nodes in [None, Some("3")] {
        let mut args = vec!["--snapshots", "2", "--checkpoint-dir", under];
        if let Some(nodes) = nodes {
            args.extend(["--nodes", nodes]);
        }
        let end = run(&args);
        assert_eq!(end.code, Some(2), "{args:?}");
        assert!(end.err_has("--checkpoint-dir"), "{args:?}");
        assert!(end.out.is_empty(), "{args:?}: nothing ran");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A checkpoint that cannot be written mid-run (here its folder is swapped for a file, as a
/// full disk would refuse it) is said, and the run stops: the summary is printed, every node
/// stops, and the exit status is 1.
#[test]
fn a_checkpoint_that_cannot_be_written_stops_the_run_with_a_summary() {
    for nodes in [None, Some("3")] {
        let dir = scratch("unwritable");
        let ckpt = dir.join("ckpt");
        let ckpt_arg = ckpt.to_str().unwrap().to_string();
        let mut args = vec![
            "--processes",
            "6",
            "--transfers",
            "1000000000",
            "--snapshots",
            "1000000",
            "--concurrency",
            "1",
            "--checkpoint-dir",
            &ckpt_arg,
        ];
        if let Some(nodes) = nodes {
            args.extend(["--nodes", nodes]);
        }
        let bank = start(&args);
        bank.wait_out("conserved");
        // The bank writes on meanwhile, so the folder is moved aside (at once, where removing
        // it raced a new file), and a file put in its place; again if the bank made the
        // folder anew in between.
        let mut moved = 0;
        while std::fs::write(&ckpt, "no longer a folder").is_err() {
            std::fs::rename(&ckpt, dir.join(format!("moved-{moved}"))).unwrap();
            moved += 1;
        }
        let end = bank.finish();
        assert_eq!(end.code, Some(1), "{args:?}");
        assert!(end.err_has("cannot write checkpoint"), "{args:?}");
        assert!(
            end.out.iter().any(|l| l.starts_with("snapshots: ")),
            "{args:?}: the summary"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The checkpoint folder's names, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// "Copy the last one": after a run restored from a checkpoint writes into the same folder,
/// the last name is one the restored run wrote, not the first run's last.
#[test]
fn checkpoint_names_sort_in_the_order_written_across_runs() {
    let dir = scratch("names");
    let ckpt = dir.join("ckpt");
    let ckpt_arg = ckpt.to_str().unwrap();
    let common = [
        "--processes",
        "4",
        "--transfers",
        "40000",
        "--checkpoint-dir",
        ckpt_arg,
    ];
    let first = run(&[&common[..], &["--snapshots", "4"]].concat());
    assert_eq!(first.code, Some(0));
    let before = names(&ckpt);
    assert_eq!(before.len(), 4);
    let last = ckpt.join(before.last().unwrap());
    let last = last.to_str().unwrap();
    let second = run(&[&common[..], &["--snapshots", "2", "--restore", last]].concat());
    assert_eq!(second.code, Some(0));
    let after = names(&ckpt);
    assert_eq!(after.len(), 6);
    assert!(
        !before.contains(after.last().unwrap()),
        "the last name is the first run's: {after:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The parent of `--nodes` killed (SIGTERM, then in another run SIGKILL, which runs nothing in
/// the parent): every node ends soon after, and the throwaway key folder is gone.
#[test]
fn killing_the_parent_stops_every_node_and_leaves_no_keys() {
    for signal in ["-TERM", "-KILL"] {
        let mut bank = start(&long_on_nodes());
        bank.wait_out("conserved");
        let children = bank.children();
        assert_eq!(children.len(), 3, "three nodes: {children:?}");
        let parent = bank.child.id();
        kill(signal, parent);
        let _ = bank.child.wait();
        let deadline = Instant::now() + *PATIENCE;
        while !children.iter().all(|&c| ended(c)) {
            assert!(
                Instant::now() < deadline,
                "{signal}: nodes still running: {:?}",
                children.iter().filter(|&&c| !ended(c)).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let prefix = format!("bank-cluster-{parent}-");
        let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .map(|e| e.path())
            .collect();
        assert!(left.is_empty(), "{signal}: left behind: {left:?}");
    }
}

/// What an interrupted run must still say on stdout: its summary, with every snapshot it
/// took conserved and consistent and, with `no_failed`, none failed (those under way at the
/// interrupt were waited for).
fn summary_checks_out(end: &Ended, no_failed: bool) {
    let snapshots = end
        .out
        .iter()
        .find(|l| l.starts_with("snapshots: "))
        .expect("the summary's snapshots line");
    assert!(
        snapshots.contains("0 not conserved, 0 inconsistent"),
        "{snapshots}"
    );
    assert!(!snapshots.contains(" 0 completed"), "{snapshots}");
    if no_failed {
        assert!(snapshots.contains(" completed, 0 failed"), "{snapshots}");
    }
    assert!(end.out.iter().any(|l| l.starts_with("transfers: ")));
    // The final state after the stop was there, and balanced.
    assert!(!end.err_has("money after"));
    assert!(!end.err_has("no final state"));
}

/// Ctrl-C (SIGINT) in process: the run stops starting snapshots, waits for those under way,
/// stops, and checks and prints what it has; exit 1, as the run did not do what was asked.
#[test]
fn an_interrupted_run_stops_cleanly_with_its_summary() {
    let bank = start(LONG);
    bank.wait_out_n("conserved consistent", 20);
    kill("-INT", bank.child.id());
    let end = bank.finish();
    assert_eq!(end.code, Some(1));
    assert!(end.err_has("bank: interrupted: stopping the run"));
    summary_checks_out(&end, true);
}

/// SIGINT to the parent of `--nodes` alone (not to its nodes, as a Ctrl-C in a terminal would
/// be): it passes it on to node 0, which stops the cluster; every node ends, exit 1.
#[test]
fn interrupting_the_parent_of_nodes_stops_every_node_cleanly() {
    let bank = start(&long_on_nodes());
    bank.wait_out_n("conserved consistent", 20);
    let children = bank.children();
    assert_eq!(children.len(), 3, "three nodes: {children:?}");
    kill("-INT", bank.child.id());
    let end = bank.finish();
    assert_eq!(end.code, Some(1));
    assert!(end.err_has("bank: interrupted: stopping every node"));
    for node in 0..3 {
        assert!(end.err_has(&format!("node {node} exited with status 1")));
    }
    assert!(children.iter().all(|&c| ended(c)));
    summary_checks_out(&end, true);
}

/// Three nodes started on their own (`--cluster FILE --node I`), as on three machines: SIGINT
/// to node 1, which does not drive the run, stops the whole cluster from there; node 0 says
/// why it stopped, prints the summary, and the final state checks out on every node.
#[test]
fn an_interrupted_node_started_on_its_own_stops_the_cluster() {
    let dir = scratch("interrupt-node");
    let file = dir.join("cluster.toml");
    let mut toml = String::from("keys = \"keys\"\n");
    // Three free addresses, held together so that they differ; the nodes bind them a moment
    // after they are let go.
    let (_, addresses) = common::listeners(3);
    for (node, address) in addresses.iter().enumerate() {
        let processes: Vec<String> = (node..12).step_by(3).map(|b| b.to_string()).collect();
        toml += &format!(
            "[[node]]\naddress = \"{address}\"\nprocesses = [{}]\n",
            processes.join(", ")
        );
    }
    std::fs::write(&file, toml).unwrap();
    let file = file.to_str().unwrap();
    let keys = dir.join("keys");
    let keygen = run(&["--cluster", file, "--keygen", keys.to_str().unwrap()]);
    assert_eq!(keygen.code, Some(0));
    let nodes: Vec<Running> = (0..3)
        .map(|node| {
            let node = node.to_string();
            let on_its_own = [
                "--cluster",
                file,
                "--node",
                &node,
                "--processes",
                "12",
                "--seed",
                "1",
            ];
            start(&[&on_its_own[..], LONG].concat())
        })
        .collect();
    nodes[0].wait_out_n("conserved consistent", 20);
    kill("-INT", nodes[1].child.id());
    let ends: Vec<Ended> = nodes.into_iter().map(Running::finish).collect();
    for (node, end) in ends.iter().enumerate() {
        assert_eq!(end.code, Some(1), "node {node}");
        assert!(!end.err_has("no final state"), "node {node}");
        assert!(!end.err_has("money after"), "node {node}");
    }
    assert!(ends[1].err_has("bank: interrupted: stopping the cluster"));
    assert!(ends[0].err_has("another node stopped the cluster: interrupted (Ctrl-C) on node 1"));
    // Snapshots under way on node 0 when node 1 stopped the cluster fail; none taken is wrong.
    summary_checks_out(&ends[0], false);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Flags whose run cannot work are usage errors (exit 2), said before anything runs.
#[test]
fn unworkable_flags_are_refused() {
    for args in [
        &["--in-flight", "18446744073709551615"][..],
        &["--in-flight", "0"],
        &["--connect-timeout", "0", "--nodes", "2"],
        &["--failure-timeout", "0", "--nodes", "2"],
    ] {
        let end = run(args);
        assert_eq!(end.code, Some(2), "{args:?}");
        assert!(end.out.is_empty(), "{args:?}");
    }
}
