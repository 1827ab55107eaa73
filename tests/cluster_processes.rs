//! The cluster with real OS processes: this test binary starts itself three times, each copy a
//! node (the ignored test `node`, run only when started so), on 127.0.0.1 ports the system
//! picks. Node 0 takes 100 snapshots, several in flight at once, from branches on every node,
//! and checks each; every node checks the cluster's final state after the stop.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chandy_lamport::cluster::{write_keys, ClusterConfig, Node, NodeConfig};
use chandy_lamport::{Context, Process, ProcessId, Topology};
use common::PATIENCE;
use serde::{Deserialize, Serialize};

const NODES: usize = 3;
const PROCESSES: usize = 12;
const SNAPSHOTS: usize = 100;
const IN_FLIGHT: usize = 8;
const BALANCE: u64 = 1_000;
/// The variable that makes a copy of this binary a node, and says which.
const NODE_VAR: &str = "CHANDY_LAMPORT_TEST_NODE";

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Transfer(u64);

struct Branch {
    balance: u64,
    rng: fastrand::Rng,
}

impl Branch {
    fn pay(&mut self, ctx: &mut Context<'_, Transfer>) {
        let amount = self.rng.u64(0..=self.balance);
        let to = ctx.neighbours()[self.rng.usize(..ctx.neighbours().len())];
        self.balance -= amount;
        if let Err(e) = ctx.send(to, Transfer(amount)) {
            self.balance += e.into_message().0;
        }
    }
}

impl Process for Branch {
    type Message = Transfer;
    type State = u64;
    fn on_start(&mut self, ctx: &mut Context<'_, Transfer>) {
        for _ in 0..2 {
            self.pay(ctx);
        }
    }
    fn on_message(&mut self, _: ProcessId, t: Transfer, ctx: &mut Context<'_, Transfer>) {
        self.balance += t.0;
        self.pay(ctx);
    }
    fn record(&self) -> u64 {
        self.balance
    }
}

/// Starts a copy of this binary as node `node`, which says where it listens on its stdout.
fn start_node(node: usize) -> (Child, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "node",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NODE_VAR, node.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // The harness prints its own words first, on the same line.
    let address = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_once("listening ")
                .map(|(_, a)| a.trim().to_string())
        })
        .unwrap_or_else(|| panic!("node {node} did not say where it listens"));
    // Keep reading what it prints (onto stderr, for a failure's story): a closed pipe would
    // fail its harness's last words.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            eprintln!("node {node}: {line}");
        }
    });
    (child, address)
}

#[test]
fn three_nodes_as_os_processes_take_100_snapshots_all_exact() {
    let mut nodes: Vec<(Child, String)> = (0..NODES).map(start_node).collect();
    let config = ClusterConfig::new(
        nodes
            .iter()
            .enumerate()
            .map(|(k, (_, address))| {
                NodeConfig::new(address.clone(), (0..PROCESSES).filter(|p| p % NODES == k))
            })
            .collect(),
    );
    let dir = std::env::temp_dir().join(format!("cluster-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    write_keys(&dir.join("keys"), NODES).unwrap();
    let file = dir.join("cluster.toml");
    std::fs::write(&file, config.with_keys("keys").to_toml()).unwrap();
    for (child, _) in &mut nodes {
        writeln!(child.stdin.take().unwrap(), "{}", file.display()).unwrap();
    }
    // Every wait is bounded: a node that hangs is killed and the test fails.
    let deadline = Instant::now() + *PATIENCE * 2;
    let mut statuses = Vec::new();
    for (k, (mut child, _)) in nodes.into_iter().enumerate() {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        statuses.push((k, status));
    }
    let _ = std::fs::remove_dir_all(&dir);
    for (k, status) in statuses {
        match status {
            Some(s) => assert!(s.success(), "node {k} failed: {s}"),
            None => panic!("node {k} did not finish in time"),
        }
    }
}

/// A node of the test above; does nothing unless started by it.
#[test]
#[ignore = "a node of three_nodes_as_os_processes_take_100_snapshots_all_exact, started by it"]
fn node() {
    let Some(me) = std::env::var(NODE_VAR).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("listening {}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    let mut path = String::new();
    std::io::stdin().read_line(&mut path).unwrap();
    let config = ClusterConfig::load(path.trim()).unwrap();
    let node = Node::builder(Topology::complete(PROCESSES), config, me)
        .listener(listener)
        .connect_timeout(*PATIENCE)
        .stop_timeout(*PATIENCE)
        .build(|p| Branch {
            balance: BALANCE,
            rng: fastrand::Rng::with_seed(p as u64),
        })
        .unwrap();
    let total = BALANCE * PROCESSES as u64;
    let stopped = if me == 0 {
        let mut rng = fastrand::Rng::with_seed(42);
        let mut checked = 0;
        let mut pending = std::collections::VecDeque::new();
        while checked < SNAPSHOTS {
            while pending.len() < IN_FLIGHT && checked + pending.len() < SNAPSHOTS {
                pending.push_back(node.start_snapshot(rng.usize(..PROCESSES)).unwrap());
            }
            let snapshot = pending
                .pop_front()
                .unwrap()
                .wait_timeout(*PATIENCE)
                .unwrap();
            snapshot.verify().unwrap();
            assert_eq!(snapshot.total(|b| *b, |t| t.0), total);
            assert_eq!(snapshot.in_flight().count(), 2 * PROCESSES);
            checked += 1;
        }
        node.shutdown_with(format!("{checked} snapshots checked").into_bytes())
            .unwrap()
    } else {
        node.wait_stopped(*PATIENCE * 2).unwrap()
    };
    assert_eq!(
        stopped.note,
        format!("{SNAPSHOTS} snapshots checked").into_bytes()
    );
    let last = stopped.final_state().unwrap_or_else(|| {
        panic!(
            "node {me}: no final state: reports missing from {:?}, failures {:?}",
            stopped.missing_reports(),
            stopped.failures
        )
    });
    last.verify().unwrap();
    assert_eq!(last.total(|b| *b, |t| t.0), total);
}
