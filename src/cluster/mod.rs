//! Processes spread over several nodes (OS processes, on one machine or many), with channels
//! between nodes over TCP: the third driver, beside the threaded [`Runtime`](crate::Runtime)
//! and the simulator (cargo feature `cluster`).
//!
//! A node is the runtime's machinery for its own processes (one OS thread each, a crossbeam
//! channel and a doorbell bit per incoming channel, the same event loop and marker core) plus a
//! link to every other node. A channel between two processes of one node is an in-process
//! channel as in the runtime; a channel to a process on another node is carried by the TCP
//! connection from this node to that one (one connection per ordered pair of nodes carries all
//! their channels, so each stays FIFO), and arrives there in the receiving process's inbox from
//! other nodes, each envelope with its channel: one crossbeam channel a process rather than one
//! an edge, which keeps the reader's sends on hot cache lines. The event loop takes each
//! envelope as from its own channel, in the channel's order, and visits the channels one by one
//! whenever the callbacks are slow (`runtime/remote_inbox.rs`). So the marker rules, the
//! recording and the exact cut check are the same code as in process, which the simulator and
//! the exhaustive checker cover.
//!
//! What crosses the network: application messages with their numbers, markers (with their
//! snapshot's initiator, so each node knows where its parts go), each process's local part of a
//! snapshot (to the initiator's node, which assembles the global snapshot), snapshot requests
//! and outcomes between the node that asks and the node that assembles, failures, and the
//! stop. All of it in one versioned format encoded by serde with postcard (`wire.rs`), so
//! messages and states must be `Serialize + DeserializeOwned` ([`NodeProcess`]).
//!
//! What the cluster promises: FIFO per channel; every snapshot exact (verified by
//! [`GlobalSnapshot::verify`](crate::GlobalSnapshot::verify) as in process); a handle on any
//! node works for any process; a stop from any node stops every node, reads every connection to
//! its end, and hands every node the cluster's final state (see [`ClusterStopped`]). A process
//! that panics fails every running snapshot on every node, as in process. A link that fails
//! counts its node's processes as failed.
//!
//! Safely: every connection is mutually authenticated and encrypted (the Noise protocol, a key
//! pair per node: `secure.rs`, `keys.rs`), so only the cluster's nodes join, each provably the
//! node it says, and bytes that are not a member's close that connection only. A member that
//! sends what no honest node sends (a frame over the limit, garbage, a message on a channel
//! that does not run between the two, out of sequence) is failed. A node whose connection
//! breaks, or from which nothing arrives for the failure timeout (idle links carry heartbeats),
//! is suspected, and one rule every node applies (`membership.rs`) leaves the survivors
//! agreeing who failed; its processes fail with [`Error::NodeFailed`](crate::Error::NodeFailed),
//! snapshots that needed them fail, sends to them hand the message back, the rest run on.
//!
//! Flow control: what queues for another node is bounded ([`NodeBuilder::max_queued`]): past it, a
//! process sending there with more than its share queued waits at the end of its batch until the
//! link drains; and what a slow process holds from other nodes ([`NodeBuilder::max_backlog`]): past
//! it, the node stops reading the connections that bring it until the process catches up.
//!
//! Start a node with [`Node::builder`], from a [`ClusterConfig`] (read from a TOML cluster file
//! with [`ClusterConfig::load`]). `docs/cluster.md` walks through running the bank on three
//! machines.
//!
//! Files:
//! 1. `config.rs`: the cluster file;
//! 2. `wire.rs`: the wire format and its framing; `packed.rs`: snapshot parts and outcomes on
//!    the wire;
//! 3. `startup.rs`: connecting every node to every other, and the handshake;
//!    `keys.rs`: who belongs (a key pair per node); `secure.rs`: Noise, handshake and sealing;
//! 4. `driver.rs`: a process's driver on a node: local channels, or encoding for a link;
//! 5. `link.rs`: what is queued for each peer, the writer and the reader threads;
//!    `membership.rs`: who has failed, decided alike on every survivor;
//! 6. `node.rs`: the node's handle, its builder, and stopping the cluster;
//! 7. `stopped.rs`: what a node hands back, and the cluster's final state.
//!
//! And `hostile_member_tests.rs`: a member that passes the handshake, then sends what no honest
//! node sends.

mod config;
mod driver;
// Real sockets: not under Miri, which has none.
#[cfg(all(test, not(miri)))]
mod hostile_member_tests;
mod keys;
mod link;
mod membership;
mod node;
mod packed;
mod secure;
mod startup;
mod stopped;
mod window;
mod wire;

pub use crate::error::ClusterError;
pub use config::{ClusterConfig, NodeConfig};
pub use keys::{write_keys, NodeKeys};
pub use node::{LinkStats, Node, NodeBuilder, NodeProcess, NodeStats};
pub use stopped::ClusterStopped;
