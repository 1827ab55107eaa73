//! The simulator's one source of randomness: SplitMix64, seeded, so a run is a function of its
//! seed and inputs.

use crate::snapshot::SnapshotId;

/// A seeded generator (SplitMix64: passes BigCrush; one add and three multiply-xorshifts).
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-shift: no division, negligible bias for the
    /// small `n` a scheduler draws.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + ((u128::from(self.next_u64()) * (u128::from(hi - lo) + 1)) >> 64) as u64
    }

    /// A v4 UUID drawn from this generator.
    pub(crate) fn snapshot_id(&mut self) -> SnapshotId {
        let bits = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        SnapshotId(uuid::Builder::from_random_bytes(bits.to_le_bytes()).into_uuid())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws_and_bounds_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(5) < 5);
            let x = a.between(1, 5);
            assert!((1..=5).contains(&x));
            b.below(5);
            b.between(1, 5);
        }
        assert_eq!(a.snapshot_id().uuid().get_version_num(), 4);
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn between_reaches_both_ends() {
        let mut r = Rng::new(3);
        let draws: Vec<u64> = (0..1000).map(|_| r.between(1, 5)).collect();
        assert!(draws.contains(&1) && draws.contains(&5));
    }
}
