//! Strangers at a node's door: connections that never get past the handshake (no preamble,
//! another format version, garbage where the Noise handshake goes, nothing at all, another
//! cluster's keys) are closed and logged, tell the stranger nothing it did not already speak,
//! hold up nobody, and leave the cluster to start and run as if they had never come. (Members
//! gone bad, past the handshake, are the crate's `hostile_member_tests`.)

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use chandy_lamport::cluster::{ClusterConfig, Node, NodeKeys};
use chandy_lamport::{Context, Process, ProcessId, Topology};
use common::PATIENCE;

/// Does nothing: the tests are about who gets in.
struct Idle;

impl Process for Idle {
    type Message = u64;
    type State = u64;
    fn on_message(&mut self, _: ProcessId, _: u64, _: &mut Context<'_, u64>) {}
    fn record(&self) -> u64 {
        7
    }
}

/// What `stream` gets back, up to its end (or 10 s).
fn answer(stream: &mut TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    got
}

/// This build's wire format version (`wire::FORMAT`).
const FORMAT: u16 = 7;

/// The first six bytes of a connection of this crate's format `version`.
fn preamble(version: u16) -> Vec<u8> {
    let mut p = b"CLSN".to_vec();
    p.extend_from_slice(&version.to_le_bytes());
    p
}

#[test]
fn strangers_during_start_up_hold_up_nobody_and_learn_nothing() {
    let (config, listeners) = ClusterConfig::on_localhost([[0, 1], [2, 3]]).unwrap();
    let addresses: Vec<String> = config.nodes.iter().map(|n| n.address.clone()).collect();
    let mut keys = NodeKeys::generate(2).unwrap().into_iter();
    let mut listeners = listeners.into_iter();
    let build = |me: usize, listener: TcpListener, keys: NodeKeys, config: ClusterConfig| {
        thread::spawn(move || {
            Node::builder(Topology::complete(4), config, me)
                .listener(listener)
                .keys(keys)
                .connect_timeout(*PATIENCE)
                .build(|_| Idle)
        })
    };
    // Node 0 starts and waits for node 1; strangers come first.
    let zero = build(
        0,
        listeners.next().unwrap(),
        keys.next().unwrap(),
        config.clone(),
    );
    // Four that connect and say nothing, held open throughout: handled one after another,
    // each would hold node 0 for its handshake timeout (5 s).
    let mute: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&addresses[0]).unwrap())
        .collect();
    // Not this format: closed without a word.
    let mut http = TcpStream::connect(&addresses[0]).unwrap();
    http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    // This format, another version: told node 0's version (so a node of another build can say
    // what differs), then closed.
    let mut other_version = TcpStream::connect(&addresses[0]).unwrap();
    other_version.write_all(&preamble(9)).unwrap();
    // The right preamble, then garbage where the handshake goes.
    let mut garbage = TcpStream::connect(&addresses[0]).unwrap();
    garbage.write_all(&preamble(FORMAT)).unwrap();
    garbage.write_all(&[0x5a; 200]).unwrap();
    assert_eq!(answer(&mut http), b"", "a stranger learns nothing");
    let told = answer(&mut other_version);
    assert_eq!(&told[..4], b"CLSN");
    assert_eq!(told.len(), 6, "the version, and nothing more");
    assert_eq!(
        &answer(&mut garbage)[..],
        &preamble(FORMAT)[..],
        "and nothing more"
    );
    // A node of another cluster, claiming to be node 1: its key is no member's.
    let impostor = Node::builder(Topology::complete(4), config.clone(), 1)
        .listener(TcpListener::bind("127.0.0.1:0").unwrap())
        .keys(NodeKeys::generate(2).unwrap().remove(1))
        .connect_timeout(Duration::from_secs(2))
        .build(|_| Idle);
    assert!(impostor.is_err(), "the impostor got in");
    // Now the real node 1: the cluster starts, the mute strangers notwithstanding.
    let began = Instant::now();
    let one = build(1, listeners.next().unwrap(), keys.next().unwrap(), config);
    let (zero, one) = (zero.join().unwrap().unwrap(), one.join().unwrap().unwrap());
    let took = began.elapsed();
    // Loose, for a loaded machine: four strangers one after another would take 20 s.
    eprintln!("started in {took:?}");
    assert!(took < Duration::from_secs(10), "started in {took:?}");
    let snapshot = zero.snapshot_timeout(3, *PATIENCE).unwrap();
    snapshot.verify().unwrap();
    assert_eq!(snapshot.total(|&s| s, |&m| m), 28);
    let stopping = thread::spawn(move || one.wait_stopped(*PATIENCE));
    zero.shutdown().unwrap();
    stopping.join().unwrap().unwrap();
    drop(mute);
}
