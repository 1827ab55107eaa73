//! Which processes exist and which directed FIFO channels connect them.
//!
//! A [`Topology`] is what the user writes down; it may be invalid. [`Topology::validate`] checks
//! it and returns a [`Wiring`]: the same graph with every process's incoming and outgoing
//! channels numbered, which is what the marker core, the collector and the drivers index by.

use std::collections::HashSet;

use crate::error::TopologyError;
pub use crate::ids::{Channel, ProcessId};

/// Processes `0..n` and the directed channels between them, as written by the user.
///
/// Nothing is checked until [`validate`](Topology::validate) (which the runtime calls when it is
/// built): a topology needs at least one process, no self-loop, no duplicate channel, channel
/// ends in range, and must be strongly connected, or a snapshot could never finish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    processes: usize,
    channels: Vec<Channel>,
}

impl Topology {
    /// Every ordered pair of distinct processes: the lecture's model, `n * (n - 1)` channels.
    pub fn complete(n: usize) -> Self {
        let channels = (0..n)
            .flat_map(|i| {
                (0..n)
                    .filter(move |&j| j != i)
                    .map(move |j| Channel::new(i, j))
            })
            .collect();
        Topology {
            processes: n,
            channels,
        }
    }

    /// A bidirectional ring: `i <-> i+1 mod n`. A ring of 2 is the two channels `0->1` and
    /// `1->0`; a ring of 1 has no channel.
    pub fn ring(n: usize) -> Self {
        let mut channels = Vec::new();
        let mut seen = HashSet::new();
        for i in 0..n {
            let j = (i + 1) % n;
            for c in [Channel::new(i, j), Channel::new(j, i)] {
                if c.from != c.to && seen.insert(c) {
                    channels.push(c);
                }
            }
        }
        Topology {
            processes: n,
            channels,
        }
    }

    /// A star: process 0 linked both ways with every other process.
    pub fn star(n: usize) -> Self {
        let channels = (1..n)
            .flat_map(|i| [Channel::new(0, i), Channel::new(i, 0)])
            .collect();
        Topology {
            processes: n,
            channels,
        }
    }

    /// An explicit list of directed channels `(from, to)` over processes `0..n`.
    pub fn from_edges(n: usize, edges: impl IntoIterator<Item = (ProcessId, ProcessId)>) -> Self {
        Topology {
            processes: n,
            channels: edges
                .into_iter()
                .map(|(from, to)| Channel::new(from, to))
                .collect(),
        }
    }

    /// How many processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// The channels, in the order given (this is also their order in a global snapshot).
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// Checks the topology and numbers each process's channels.
    pub fn validate(&self) -> Result<Wiring, TopologyError> {
        let n = self.processes;
        if n == 0 {
            return Err(TopologyError::NoProcesses);
        }
        let mut seen = HashSet::with_capacity(self.channels.len());
        for c in &self.channels {
            if c.from >= n || c.to >= n {
                return Err(TopologyError::UnknownProcess {
                    from: c.from,
                    to: c.to,
                    processes: n,
                });
            }
            if c.from == c.to {
                return Err(TopologyError::SelfLoop { process: c.from });
            }
            if !seen.insert(*c) {
                return Err(TopologyError::DuplicateChannel {
                    from: c.from,
                    to: c.to,
                });
            }
        }
        // With two processes or more, each needs a channel out (and one in): with fewer
        // channels than processes, one has none. Said before anything is allocated per process,
        // so an absurd count (`usize::MAX`) is this error rather than a capacity overflow.
        if n > 1 && self.channels.len() < n {
            return Err(self.unconnected());
        }
        let wiring = Wiring::new(n, self.channels.clone());
        // Strongly connected iff every process is reachable from 0 and reaches 0.
        if let Some(to) = wiring.unreached_from_zero(true) {
            return Err(TopologyError::NotStronglyConnected { from: 0, to });
        }
        if let Some(from) = wiring.unreached_from_zero(false) {
            return Err(TopologyError::NotStronglyConnected { from, to: 0 });
        }
        Ok(wiring)
    }

    /// For a topology of fewer channels than processes (two or more), a pair of processes with
    /// no path between them, found in the channels alone: the first process no channel enters
    /// (0 cannot reach it), else the first no channel leaves (it cannot reach 0).
    fn unconnected(&self) -> TopologyError {
        // The smallest process not among `ends` (there is one: fewer ends than processes).
        let first_missing = |mut ends: Vec<ProcessId>| {
            ends.sort_unstable();
            ends.dedup();
            ends.iter()
                .enumerate()
                .find(|&(k, &p)| k != p)
                .map_or(ends.len(), |(k, _)| k)
        };
        let entered = first_missing(self.channels.iter().map(|c| c.to).collect());
        if entered != 0 {
            return TopologyError::NotStronglyConnected {
                from: 0,
                to: entered,
            };
        }
        match first_missing(self.channels.iter().map(|c| c.from).collect()) {
            0 => TopologyError::NotStronglyConnected { from: 0, to: 1 },
            left => TopologyError::NotStronglyConnected { from: left, to: 0 },
        }
    }
}

/// A validated topology, with each process's channels numbered.
///
/// Process `p`'s incoming channels are numbered `0..incoming(p).len()` in order of source, its
/// outgoing ones `0..outgoing(p).len()` in order of destination; these local numbers are what the
/// marker core ([`Recorder`](crate::recorder::Recorder)) and local snapshots use.
#[derive(Clone, Debug)]
pub struct Wiring {
    processes: usize,
    channels: Vec<Channel>,
    /// `incoming[p]`: indices into `channels` of the channels into `p`, by source.
    incoming: Vec<Vec<usize>>,
    /// `outgoing[p]`: indices into `channels` of the channels out of `p`, by destination.
    outgoing: Vec<Vec<usize>>,
    /// `slots[c]`: (position of channel `c` in its sender's outgoing list, in its receiver's
    /// incoming list).
    slots: Vec<(usize, usize)>,
}

impl Wiring {
    fn new(processes: usize, channels: Vec<Channel>) -> Self {
        let mut incoming = vec![Vec::new(); processes];
        let mut outgoing = vec![Vec::new(); processes];
        for (i, c) in channels.iter().enumerate() {
            outgoing[c.from].push(i);
            incoming[c.to].push(i);
        }
        for list in &mut incoming {
            list.sort_by_key(|&i| channels[i].from);
        }
        for list in &mut outgoing {
            list.sort_by_key(|&i| channels[i].to);
        }
        let mut slots = vec![(0, 0); channels.len()];
        for list in &outgoing {
            for (k, &i) in list.iter().enumerate() {
                slots[i].0 = k;
            }
        }
        for list in &incoming {
            for (k, &i) in list.iter().enumerate() {
                slots[i].1 = k;
            }
        }
        Wiring {
            processes,
            channels,
            incoming,
            outgoing,
            slots,
        }
    }

    /// Breadth-first search from process 0 along (`forward`) or against the channels; returns a
    /// process it did not reach.
    fn unreached_from_zero(&self, forward: bool) -> Option<ProcessId> {
        let mut reached = vec![false; self.processes];
        reached[0] = true;
        let mut frontier = vec![0];
        while let Some(p) = frontier.pop() {
            let next = if forward {
                &self.outgoing[p]
            } else {
                &self.incoming[p]
            };
            for &c in next {
                let q = if forward {
                    self.channels[c].to
                } else {
                    self.channels[c].from
                };
                if !reached[q] {
                    reached[q] = true;
                    frontier.push(q);
                }
            }
        }
        reached.iter().position(|r| !r)
    }

    /// How many processes.
    pub fn processes(&self) -> usize {
        self.processes
    }

    /// Every channel, in the topology's order.
    pub fn channels(&self) -> &[Channel] {
        &self.channels
    }

    /// Channel indices (into [`channels`](Wiring::channels)) of the channels into `p`, by
    /// source: position `k` here is `p`'s local incoming channel `k`.
    pub fn incoming(&self, p: ProcessId) -> &[usize] {
        &self.incoming[p]
    }

    /// Channel indices of the channels out of `p`, by destination: position `k` here is `p`'s
    /// local outgoing channel `k`.
    pub fn outgoing(&self, p: ProcessId) -> &[usize] {
        &self.outgoing[p]
    }

    /// The sources of `p`'s incoming channels, by local incoming index.
    pub fn sources(&self, p: ProcessId) -> Vec<ProcessId> {
        self.incoming[p]
            .iter()
            .map(|&c| self.channels[c].from)
            .collect()
    }

    /// The destinations of `p`'s outgoing channels, by local outgoing index.
    pub fn destinations(&self, p: ProcessId) -> Vec<ProcessId> {
        self.outgoing[p]
            .iter()
            .map(|&c| self.channels[c].to)
            .collect()
    }

    /// For channel index `c`: its local index at the sender (outgoing) and at the receiver
    /// (incoming).
    pub fn local_slots(&self, c: usize) -> (usize, usize) {
        self.slots[c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_has_every_ordered_pair() {
        let t = Topology::complete(4);
        assert_eq!(t.channels().len(), 12);
        let w = t.validate().unwrap();
        for p in 0..4 {
            assert_eq!(w.sources(p).len(), 3);
            assert!(!w.sources(p).contains(&p));
        }
    }

    #[test]
    fn ring_of_two_is_two_channels_and_ring_of_one_is_none() {
        assert_eq!(
            Topology::ring(2).channels(),
            &[Channel::new(0, 1), Channel::new(1, 0)]
        );
        assert!(Topology::ring(1).channels().is_empty());
        Topology::ring(1).validate().unwrap();
        assert_eq!(Topology::ring(5).channels().len(), 10);
    }

    #[test]
    fn star_links_zero_with_everyone() {
        let w = Topology::star(5).validate().unwrap();
        assert_eq!(w.sources(0), vec![1, 2, 3, 4]);
        assert_eq!(w.destinations(3), vec![0]);
    }

    #[test]
    fn slots_agree_with_lists() {
        let w = Topology::from_edges(3, [(2, 0), (0, 1), (1, 2), (0, 2)])
            .validate()
            .unwrap();
        for (c, ch) in w.channels().iter().enumerate() {
            let (out, inc) = w.local_slots(c);
            assert_eq!(w.outgoing(ch.from)[out], c);
            assert_eq!(w.incoming(ch.to)[inc], c);
        }
        assert_eq!(w.destinations(0), vec![1, 2]);
    }

    #[test]
    fn each_invalid_topology_has_its_own_error() {
        assert_eq!(
            Topology::complete(0).validate().unwrap_err(),
            TopologyError::NoProcesses
        );
        assert_eq!(
            Topology::from_edges(2, [(0, 1), (1, 1)])
                .validate()
                .unwrap_err(),
            TopologyError::SelfLoop { process: 1 }
        );
        assert_eq!(
            Topology::from_edges(2, [(0, 1), (1, 0), (0, 1)])
                .validate()
                .unwrap_err(),
            TopologyError::DuplicateChannel { from: 0, to: 1 }
        );
        assert_eq!(
            Topology::from_edges(2, [(0, 1), (1, 2)])
                .validate()
                .unwrap_err(),
            TopologyError::UnknownProcess {
                from: 1,
                to: 2,
                processes: 2
            }
        );
        // 0 -> 1 -> 2, nothing back: 0 cannot be reached from 1 or 2.
        assert_eq!(
            Topology::from_edges(3, [(0, 1), (1, 2), (2, 1)])
                .validate()
                .unwrap_err(),
            TopologyError::NotStronglyConnected { from: 1, to: 0 }
        );
        // 2 is isolated.
        assert_eq!(
            Topology::from_edges(3, [(0, 1), (1, 0)])
                .validate()
                .unwrap_err(),
            TopologyError::NotStronglyConnected { from: 0, to: 2 }
        );
    }

    #[test]
    fn one_way_ring_is_strongly_connected() {
        Topology::from_edges(4, [(0, 1), (1, 2), (2, 3), (3, 0)])
            .validate()
            .unwrap();
    }
}
