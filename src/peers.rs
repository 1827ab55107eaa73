//! A process's neighbours on one side (the sources of its incoming channels, or the
//! destinations of its outgoing ones), numbered locally `0..len` in increasing process order:
//! local number to process id, and back.
//!
//! Why not just a table: every message asks one of these questions (who sent it; which channel
//! leads to where it goes). In a complete graph, the common case, the answer is arithmetic, and
//! a table is one more per-thread array a message touches: with 64 threads to 2 cores, every
//! such array is one more cache line to bring back after a context switch.

use crate::topology::ProcessId;

/// Marks a process with no channel to or from it in [`Peers::Listed`].
const NONE: u32 = u32::MAX;

/// One side's neighbours of process `me` (see the module documentation).
#[derive(Debug)]
pub(crate) enum Peers {
    /// Every other process, in order: local number `k` is process `k` below `me`, `k + 1`
    /// from `me` on.
    AllOthers { me: ProcessId, processes: usize },
    /// Any other set.
    Listed {
        /// By local number: the process.
        ids: Box<[ProcessId]>,
        /// By process: its local number, or `NONE`. Dense, so a lookup is one load.
        numbers: Box<[u32]>,
    },
}

impl Peers {
    /// `me`'s neighbours `ids` (increasing) among `processes` processes.
    pub(crate) fn new(me: ProcessId, processes: usize, ids: &[ProcessId]) -> Self {
        debug_assert!(ids.windows(2).all(|w| w[0] < w[1]), "increasing ids");
        let all_others = ids.len() + 1 == processes
            && ids
                .iter()
                .enumerate()
                .all(|(k, &p)| p == k + usize::from(k >= me));
        if all_others {
            return Peers::AllOthers { me, processes };
        }
        let mut numbers = vec![NONE; processes].into_boxed_slice();
        for (k, &p) in ids.iter().enumerate() {
            numbers[p] = u32::try_from(k).expect("fewer than 2^32 neighbours");
        }
        Peers::Listed {
            ids: ids.into(),
            numbers,
        }
    }

    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        match self {
            Peers::AllOthers { processes, .. } => processes - 1,
            Peers::Listed { ids, .. } => ids.len(),
        }
    }

    /// The process with local number `k` (`k < len()`).
    #[inline(always)]
    pub(crate) fn id(&self, k: usize) -> ProcessId {
        match self {
            Peers::AllOthers { me, .. } => k + usize::from(k >= *me),
            Peers::Listed { ids, .. } => ids[k],
        }
    }

    /// The local number of process `p`, if it is one of these.
    #[inline(always)]
    pub(crate) fn number(&self, p: ProcessId) -> Option<usize> {
        match self {
            Peers::AllOthers { me, processes } => {
                (p < *processes && p != *me).then(|| p - usize::from(p > *me))
            }
            Peers::Listed { numbers, .. } => match numbers.get(p) {
                Some(&k) if k != NONE => Some(k as usize),
                _ => None,
            },
        }
    }

    /// All of them, by local number.
    #[cfg(test)]
    pub(crate) fn ids(&self) -> impl Iterator<Item = ProcessId> + '_ {
        (0..self.len()).map(|k| self.id(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    /// Both representations agree with the wiring, both ways, on both sides, and refuse the
    /// same processes; the arithmetic one is chosen exactly when a side holds every other
    /// process.
    #[test]
    fn numbers_agree_with_the_wiring_both_ways() {
        let topologies = [
            Topology::complete(5),
            Topology::ring(5),
            Topology::star(5),
            Topology::complete(1),
            Topology::complete(2),
        ];
        for topology in topologies {
            let wiring = topology.validate().unwrap();
            let n = wiring.processes();
            for me in 0..n {
                for ids in [wiring.sources(me), wiring.destinations(me)] {
                    let peers = Peers::new(me, n, &ids);
                    assert_eq!(
                        matches!(peers, Peers::AllOthers { .. }),
                        ids.len() + 1 == n,
                        "process {me}: {ids:?}"
                    );
                    assert_eq!(peers.len(), ids.len());
                    assert_eq!(peers.ids().collect::<Vec<_>>(), ids);
                    for p in 0..n + 2 {
                        let want = ids.iter().position(|&q| q == p);
                        assert_eq!(peers.number(p), want, "process {me}, peer {p}");
                    }
                }
            }
        }
    }

    /// A set of every other process but out of the arithmetic's order cannot happen (the
    /// wiring sorts), but a set missing one process must not be taken for all others.
    #[test]
    fn a_set_short_of_all_others_is_listed() {
        let peers = Peers::new(1, 4, &[0, 2]);
        assert!(matches!(peers, Peers::Listed { .. }));
        assert_eq!(peers.number(3), None);
        assert_eq!(peers.id(1), 2);
    }
}
