//! The names of things, at the bottom of the crate: processes, channels, snapshot ids, the map
//! keyed by snapshot id, and the seeded generator ids and the simulator's schedule are drawn from.
//! Everything else may import this; this imports nothing of the crate.

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use uuid::Uuid;

/// A process is named by its index, `0..processes`.
pub type ProcessId = usize;

/// A directed channel between two processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Channel {
    /// The sending end.
    pub from: ProcessId,
    /// The receiving end.
    pub to: ProcessId,
}

impl Channel {
    /// The channel `from -> to`.
    pub fn new(from: ProcessId, to: ProcessId) -> Self {
        Channel { from, to }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.from, self.to)
    }
}

/// Tells one snapshot run apart from every other: a UUID.
///
/// The driver chooses ids (the threaded runtime draws random v4 UUIDs), never the marker core,
/// so a deterministic driver can seed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct SnapshotId(pub Uuid);

impl SnapshotId {
    /// A fresh random (v4) id.
    ///
    /// Drawn from a per-thread generator seeded once from the operating system, not from a
    /// system call per id: a busy runtime starts tens of thousands of snapshots a second.
    pub fn random() -> Self {
        thread_local! {
            static STATE: Cell<SplitMix64> =
                Cell::new(SplitMix64::new(Uuid::new_v4().as_u64_pair().0));
        }
        STATE.with(|state| {
            let mut generator = state.get();
            let id = generator.snapshot_id();
            state.set(generator);
            id
        })
    }

    /// The UUID.
    pub fn uuid(&self) -> Uuid {
        self.0
    }
}

/// The crate's one seeded generator, SplitMix64: passes BigCrush, one add and three
/// multiply-xorshifts per draw. The simulator draws its schedule and ids from one seeded from
/// the user's seed (a run is a function of its seed); [`SnapshotId::random`] draws from one per
/// thread seeded from the operating system.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
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

/// Hashes a [`SnapshotId`] by mixing its two halves: ids are looked up on every marker, and
/// SipHash (the standard library's default, built against adversarial keys) costs more than
/// the rest of the lookup. Mixing both halves keeps even sequential ids apart.
#[derive(Clone, Copy, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517C_C1B7_2722_0A95);
    }

    fn write_u128(&mut self, word: u128) {
        self.write_u64(word as u64);
        self.write_u64((word >> 64) as u64);
    }
}

/// A map keyed by snapshot id, with [`IdHasher`].
pub(crate) type IdMap<V> = HashMap<SnapshotId, V, BuildHasherDefault<IdHasher>>;

impl Hash for SnapshotId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u128(self.0.as_u128());
    }
}

impl SnapshotId {
    /// The first eight hex digits of the UUID: enough to tell a run's snapshots apart in logs,
    /// legends and pictures.
    pub fn short(&self) -> String {
        let mut hex = self.0.simple().to_string();
        hex.truncate(8);
        hex
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_id_is_the_first_eight_hex_digits() {
        let id = SnapshotId(Uuid::from_u128(0x9c04_d701_aaaa_4bbb_8ccc_dddd_eeee_ffff));
        assert_eq!(id.to_string(), "9c04d701-aaaa-4bbb-8ccc-ddddeeeeffff");
        assert_eq!(id.short(), "9c04d701");
    }

    #[test]
    fn same_seed_same_draws_and_bounds_hold() {
        let (mut a, mut b) = (SplitMix64::new(7), SplitMix64::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(5) < 5);
            let x = a.between(1, 5);
            assert!((1..=5).contains(&x));
            b.below(5);
            b.between(1, 5);
        }
        assert_eq!(a.snapshot_id().uuid().get_version_num(), 4);
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }

    #[test]
    fn between_reaches_both_ends() {
        let mut r = SplitMix64::new(3);
        let draws: Vec<u64> = (0..1000).map(|_| r.between(1, 5)).collect();
        assert!(draws.contains(&1) && draws.contains(&5));
    }
}
