//! A cluster whose every node is a set of threads of this bench process, on 127.0.0.1 ports the
//! system picks, with fresh keys: what the cluster benches start and stop.

use std::thread;
use std::time::Duration;

use chandy_lamport::cluster::{ClusterConfig, Node, NodeBuilder, NodeKeys, NodeProcess};
use chandy_lamport::{ProcessId, Topology};

/// Starts node k running `placement[k]` of `topology` for every k, each builder passed through
/// `tweak`, each process made by `make`; returns once every node is connected to every other.
pub fn start<P: NodeProcess>(
    topology: &Topology,
    placement: &[Vec<ProcessId>],
    tweak: impl Fn(NodeBuilder<P>) -> NodeBuilder<P> + Clone + Send + 'static,
    make: impl Fn(ProcessId) -> P + Clone + Send + 'static,
) -> Vec<Node<P>> {
    let (config, listeners) = ClusterConfig::on_localhost(placement.iter().cloned()).unwrap();
    let builds: Vec<_> = listeners
        .into_iter()
        .zip(NodeKeys::generate(placement.len()).unwrap())
        .enumerate()
        .map(|(k, (listener, keys))| {
            let (topology, config) = (topology.clone(), config.clone());
            let (tweak, make) = (tweak.clone(), make.clone());
            thread::spawn(move || {
                let builder = Node::builder(topology, config, k)
                    .listener(listener)
                    .keys(keys);
                tweak(builder).build(make).unwrap()
            })
        })
        .collect();
    builds.into_iter().map(|b| b.join().unwrap()).collect()
}

/// Stops the cluster from its first node and waits for every node to stop.
pub fn stop<P: NodeProcess>(nodes: Vec<Node<P>>) {
    let mut nodes = nodes.into_iter();
    let first = nodes.next().unwrap();
    let rest: Vec<_> = nodes
        .map(|n| thread::spawn(move || n.wait_stopped(Duration::from_secs(60)).map(drop)))
        .collect();
    first.shutdown().unwrap();
    for r in rest {
        r.join().unwrap().unwrap();
    }
}
