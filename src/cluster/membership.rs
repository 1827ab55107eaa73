//! Who has failed: the rule every node applies to what it knows of the cluster's broken links,
//! so that the survivors agree (pure; the node feeds it and acts on what it decides).
//!
//! A node suspects a peer when their link breaks: the connection closes, a read or write
//! fails, or nothing (not even a heartbeat) arrives from it for the failure timeout. It tells
//! every other node it can still reach, and each node, a while after each new suspicion (long
//! enough for the others' reports of the same failure to arrive: `Core::decision_wait`),
//! decides with this rule (at once, when a suspicion is the second of the same node: rule 1
//! then settles it). A suspicion counts in rule 2 only once that while has passed (it is
//! *ripe*): a decision made for an older suspicion does not take a newer one for a broken link
//! before the others' word on it can have come. (Rule 1 counts every suspicion known: more
//! word can only corroborate.)
//!
//! 0. a node that said it has failed has (a node that decides it failed itself says so on
//!    every link it still has, then closes them: without its word, a node that saw only the
//!    links close would suspect it alone, and rule 2 could fail that node instead);
//! 1. a node suspected by two or more nodes that have not failed has failed (a dead node is
//!    suspected by everyone who could hear it);
//! 2. then, for each suspicion left between two nodes that have not failed (one link broken,
//!    both ends alive), the one with the higher index has failed;
//! 3. last, the nodes left must be a majority of the cluster: if they are fewer than half of
//!    it, or exactly half without node 0, they have all failed. A node cannot tell the others'
//!    deaths from its own isolation, and two sides of a partition each see the other as
//!    failed: this lets at most one side run on (the majority; of two halves, node 0's).
//!
//! So in a cluster of three or more: a node that dies is failed by every survivor (rule 1); a
//! node whose links all go silent is failed by the others (rule 1) and by itself (rule 2:
//! nobody's report reaches it, and it is the higher end of every link it suspects; node 0,
//! the lower end of all, by rule 3); one broken link between a and b fails the higher of the
//! two, in the view of a, of b and of everyone who hears either; a cluster split in two keeps
//! the larger side (or node 0's half) and the other side fails itself. A cluster survives the
//! failure of fewer than half of its nodes (or of exactly half, node 0 not among them), not
//! more: when more fail (or seem to), the rest stop too. Failure is fail-stop: a failed node
//! never comes back (a restart from a checkpoint is the way back), and a node that finds
//! itself failed stops its processes.
//!
//! Caveat, said plainly: in a cluster of two a death and a broken link look alike, and the
//! rule fails node 1 either way (so node 1 stops when node 0 dies).

use std::time::Duration;

/// What one node knows of the cluster's broken links.
#[derive(Debug)]
pub(crate) struct Membership {
    /// By node: the nodes it suspects (as reported to this node, or this node's own), each
    /// with when the suspicion is ripe (on the node's clock, which the node passes in).
    suspects: Vec<Vec<Option<Duration>>>,
    /// By node: decided failed.
    failed: Vec<bool>,
    /// By node: it said it has failed (it decided so itself, and told the nodes it could
    /// still reach before closing its links).
    said_failed: Vec<bool>,
}

impl Membership {
    /// What a node of a cluster of `nodes` knows before anything broke.
    pub(crate) fn new(nodes: usize) -> Self {
        Membership {
            suspects: vec![vec![None; nodes]; nodes],
            failed: vec![false; nodes],
            said_failed: vec![false; nodes],
        }
    }

    /// Node `node` says it has failed. Returns whether that is news. Without this, a node that
    /// failed itself (deciding alone, on a suspicion the others had not reported yet) would
    /// close its links, and a survivor seeing them close would suspect it, alone, and fail the
    /// higher of the two: itself, when it is the higher.
    pub(crate) fn said_failed(&mut self, node: usize) -> bool {
        match self.said_failed.get_mut(node) {
            Some(said) if !*said => {
                *said = true;
                true
            }
            _ => false,
        }
    }

    /// Node `by` suspects `node`, a suspicion ripe at `ripe_at`. Returns whether that is news.
    pub(crate) fn suspect(&mut self, by: usize, node: usize, ripe_at: Duration) -> bool {
        let Some(row) = self.suspects.get_mut(by) else {
            return false;
        };
        match row.get_mut(node) {
            Some(s) if s.is_none() && by != node => {
                *s = Some(ripe_at);
                true
            }
            _ => false,
        }
    }

    /// Whether two or more nodes that have not failed suspect `node`, which has not failed
    /// either: rule 1 fails it whenever the rule is applied, so the node applies it at once.
    pub(crate) fn corroborated(&self, node: usize) -> bool {
        node < self.failed.len() && !self.failed[node] && self.suspected_by(node) >= 2
    }

    /// How many nodes not (yet) decided failed suspect `node`, ripe or not: what rule 1 counts.
    fn suspected_by(&self, node: usize) -> usize {
        (0..self.failed.len())
            .filter(|&j| !self.failed[j] && self.suspects[j][node].is_some())
            .count()
    }

    /// Whether `node` has been decided failed.
    pub(crate) fn is_failed(&self, node: usize) -> bool {
        self.failed.get(node).copied().unwrap_or(false)
    }

    /// Applies the rule (see the module documentation) to what is known at `now`, the
    /// suspicions ripe by then; returns the nodes it newly declares failed, in increasing order.
    pub(crate) fn decide(&mut self, now: Duration) -> Vec<usize> {
        let n = self.failed.len();
        let alive = |failed: &[bool], k: usize| !failed[k];
        let ripe = |by: usize, node: usize| self.suspects[by][node].is_some_and(|r| r <= now);
        let mut now = self.failed.clone();
        // 0. A node that says it has failed has (its links are closing).
        for (k, verdict) in now.iter_mut().enumerate() {
            *verdict |= self.said_failed[k];
        }
        // 1. Suspected by two or more nodes that have not failed.
        for (k, verdict) in now.iter_mut().enumerate() {
            if self.suspected_by(k) >= 2 {
                *verdict = true;
            }
        }
        // 2. A broken link between two nodes still alive: the higher fails.
        for a in 0..n {
            for b in a + 1..n {
                let broken = ripe(a, b) || ripe(b, a);
                if broken && alive(&now, a) && alive(&now, b) {
                    now[b] = true;
                }
            }
        }
        // 3. What is left must be a majority (or half, with node 0).
        let left = (0..n).filter(|&k| !now[k]).count();
        if 2 * left < n || (2 * left == n && now[0]) {
            now.iter_mut().for_each(|verdict| *verdict = true);
        }
        let newly: Vec<usize> = (0..n).filter(|&k| now[k] && !self.failed[k]).collect();
        self.failed = now;
        newly
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// When the tests' suspicions are ripe, and their decisions made.
    const NOW: Duration = Duration::ZERO;

    /// The views of every node of a cluster of `n` that can still hear each other, given which
    /// links are broken (and which nodes are dead): each node suspects the ends of its broken
    /// links and dead nodes, and hears the suspicions of every node it still has a working
    /// link from. Returns what each living node decides.
    fn decide_all(n: usize, dead: &[usize], broken: &[(usize, usize)]) -> Vec<Option<Vec<usize>>> {
        let cut = |a: usize, b: usize| {
            dead.contains(&a)
                || dead.contains(&b)
                || broken.contains(&(a, b))
                || broken.contains(&(b, a))
        };
        (0..n)
            .map(|me| {
                if dead.contains(&me) {
                    return None;
                }
                let mut view = Membership::new(n);
                for by in 0..n {
                    if by != me && cut(by, me) {
                        continue; // its reports cannot reach me
                    }
                    if dead.contains(&by) {
                        continue;
                    }
                    for node in 0..n {
                        if node != by && cut(by, node) {
                            view.suspect(by, node, NOW);
                        }
                    }
                }
                view.decide(NOW);
                Some((0..n).filter(|&k| view.is_failed(k)).collect())
            })
            .collect()
    }

    #[test]
    fn a_dead_node_is_failed_by_every_survivor_whichever_it_is() {
        for dead in 0..3 {
            let views = decide_all(3, &[dead], &[]);
            for view in views.into_iter().flatten() {
                assert_eq!(view, [dead], "node {dead} died");
            }
        }
        // Of five as well.
        for view in decide_all(5, &[3], &[]).into_iter().flatten() {
            assert_eq!(view, [3]);
        }
    }

    #[test]
    fn a_node_cut_off_from_all_is_failed_by_all_and_by_itself() {
        for lonely in 0..3 {
            let links: Vec<_> = (0..3)
                .filter(|&k| k != lonely)
                .map(|k| (k, lonely))
                .collect();
            for (me, view) in decide_all(3, &[], &links).into_iter().enumerate() {
                let view = view.expect("nobody died");
                if me != lonely {
                    assert_eq!(view, [lonely], "node {lonely} cut off, node {me}'s view");
                } else if lonely == 0 {
                    // Node 0, the lower end of every link it lost: rule 2 fails the others in
                    // its view, and rule 3 then fails node 0, alone of three.
                    assert_eq!(view, [0, 1, 2], "node 0 cut off, its own view");
                } else {
                    assert_eq!(view, [lonely], "node {lonely} cut off, its own view");
                }
            }
        }
    }

    /// Split in two, each side sees the other as failed (rule 1): rule 3 lets only the
    /// majority run on, or of two halves node 0's.
    #[test]
    fn of_a_cluster_split_in_two_only_one_side_runs_on() {
        let split = |n: usize, side: &[usize]| {
            let mut links = Vec::new();
            for a in side {
                for b in (0..n).filter(|b| !side.contains(b)) {
                    links.push((*a, b));
                }
            }
            decide_all(n, &[], &links)
        };
        // Five: nodes 0 and 1 against 2, 3 and 4.
        let views = split(5, &[0, 1]);
        for me in [0, 1] {
            assert_eq!(
                views[me],
                Some(vec![0, 1, 2, 3, 4]),
                "node {me}, in the minority"
            );
        }
        for me in [2, 3, 4] {
            assert_eq!(views[me], Some(vec![0, 1]), "node {me}, in the majority");
        }
        // Four, in halves: node 0's half runs on.
        let views = split(4, &[0, 3]);
        for me in [0, 3] {
            assert_eq!(views[me], Some(vec![1, 2]), "node {me}, with node 0");
        }
        for me in [1, 2] {
            assert_eq!(
                views[me],
                Some(vec![0, 1, 2, 3]),
                "node {me}, without node 0"
            );
        }
    }

    /// More than half dead: the rest stop too (they cannot tell that from being cut off).
    #[test]
    fn a_cluster_survives_fewer_than_half_of_its_nodes_failing() {
        assert_eq!(decide_all(5, &[3, 4], &[])[0], Some(vec![3, 4]));
        assert_eq!(decide_all(5, &[2, 3, 4], &[])[0], Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(decide_all(3, &[1, 2], &[])[0], Some(vec![0, 1, 2]));
        // Half, with node 0, runs on; half without it stops.
        assert_eq!(decide_all(4, &[2, 3], &[])[0], Some(vec![2, 3]));
        assert_eq!(decide_all(4, &[0, 1], &[])[2], Some(vec![0, 1, 2, 3]));
    }

    #[test]
    fn one_broken_link_fails_its_higher_end_everywhere() {
        for (a, b) in [(0, 1), (0, 2), (1, 2)] {
            for view in decide_all(3, &[], &[(a, b)]).into_iter().flatten() {
                assert_eq!(view, [b], "link {a}-{b} broken");
            }
        }
    }

    #[test]
    fn of_two_nodes_node_1_fails_whatever_happened() {
        assert_eq!(
            decide_all(2, &[], &[(0, 1)]),
            [Some(vec![1]), Some(vec![1])]
        );
        assert_eq!(decide_all(2, &[1], &[]), [Some(vec![1]), None]);
        assert_eq!(decide_all(2, &[0], &[]), [None, Some(vec![1])]);
    }

    /// Node 0 of five dies silently; node 1's read times out first and it decides alone,
    /// before the others' reports arrive: a lone suspicion looks like a broken link, and node 1
    /// (the higher end) fails itself. Before, node 2 then saw node 1's links close and, deciding
    /// before the others' word on node 1 came, suspected it alone and failed itself too. Now
    /// node 1 says it failed before it closes its links, and the others run on. (Of three, two
    /// failed would leave one node, which rule 3 stops: see the next test.)
    #[test]
    fn a_node_that_fails_itself_takes_no_one_with_it() {
        let mut one = Membership::new(5);
        one.suspect(1, 0, NOW);
        assert_eq!(one.decide(NOW), [1], "node 1, deciding alone, fails itself");
        let mut two = Membership::new(5);
        for by in 1..5 {
            two.suspect(by, 0, NOW);
        }
        assert_eq!(two.decide(NOW), [0]);
        // Node 1's word, then its links closing.
        assert!(two.said_failed(1));
        assert!(!two.said_failed(1), "not news twice");
        two.suspect(2, 1, NOW);
        assert_eq!(two.decide(NOW), [1]);
        assert!(!two.is_failed(2), "node 2 runs on");
        // Had the word come after the link closed, the same.
        let mut late = Membership::new(5);
        for by in 1..5 {
            late.suspect(by, 0, NOW);
        }
        late.decide(NOW);
        late.suspect(2, 1, NOW);
        late.said_failed(1);
        assert_eq!(late.decide(NOW), [1]);
        assert!(!late.is_failed(2));
    }

    /// The price of rule 3, said by a test: of three, when one dies and a survivor decides
    /// alone and fails itself, the last node is alone of three and stops too.
    #[test]
    fn of_three_a_survivor_that_fails_itself_leaves_too_few() {
        let mut two = Membership::new(3);
        two.suspect(1, 0, NOW);
        two.suspect(2, 0, NOW);
        assert_eq!(two.decide(NOW), [0]);
        two.said_failed(1);
        assert_eq!(two.decide(NOW), [1, 2]);
    }

    /// A decision made for an older suspicion does not take a newer one for a broken link
    /// before it is ripe. Five nodes, node 3's view: node 4 died and every survivor said so
    /// (ripe at 1); then node 2 reports it suspects node 0 (ripe at 10: the others' word on
    /// node 0 may still come). Deciding at 5 fails node 4 only; before, the report counted at
    /// once, alone, and failed node 2 as the higher end of one broken link. With the others'
    /// word, node 0, ripe or not (rule 1 counts what is known).
    #[test]
    fn a_suspicion_counts_once_it_is_ripe() {
        let at = Duration::from_secs;
        let mut view = Membership::new(5);
        for by in 0..4 {
            view.suspect(by, 4, at(1));
        }
        view.suspect(2, 0, at(10));
        assert_eq!(view.decide(at(5)), [4]);
        view.suspect(1, 0, at(12));
        assert_eq!(view.decide(at(6)), [0]);
        // Alone at its time, the report fails the higher end, node 2.
        let mut alone = Membership::new(5);
        alone.suspect(2, 0, at(10));
        assert_eq!(alone.decide(at(9)), Vec::<usize>::new());
        assert_eq!(alone.decide(at(10)), [2]);
        // The word of a node that failed itself counts at once.
        let mut said = Membership::new(5);
        said.suspect(2, 0, at(10));
        said.said_failed(4);
        assert_eq!(said.decide(at(0)), [4]);
    }

    /// The second suspicion of a node, from another node, settles it under rule 1; a lone
    /// one, or one from a node already failed, does not.
    #[test]
    fn a_second_suspicion_corroborates_the_first() {
        let later = Duration::from_secs(10);
        let mut view = Membership::new(4);
        view.suspect(1, 3, later);
        assert!(!view.corroborated(3), "one suspicion");
        view.said_failed(2);
        view.decide(NOW);
        view.suspect(2, 3, later);
        assert!(!view.corroborated(3), "the second from a failed node");
        view.suspect(0, 3, later);
        assert!(view.corroborated(3));
        assert_eq!(view.decide(NOW), [3], "unripe, yet decided by rule 1");
        assert!(!view.corroborated(3), "already failed");
    }

    #[test]
    fn decisions_only_grow() {
        let mut view = Membership::new(3);
        assert!(view.suspect(0, 2, NOW));
        assert!(!view.suspect(0, 2, NOW), "not news twice");
        assert_eq!(view.decide(NOW), [2]);
        assert_eq!(view.decide(NOW), Vec::<usize>::new());
        assert!(view.is_failed(2) && !view.is_failed(0));
    }
}
