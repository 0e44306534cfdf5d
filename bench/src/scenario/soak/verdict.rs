//! The soak's pass/fail criteria (pure): flat memory and file descriptors
//! after warm-up, connections and rooms back to 0, nothing lost that was
//! accepted; plus the deterministic choices of the churning clients.

use serde::Serialize;

/// A series may grow by this fraction of its early level and still be flat.
pub const FLAT_GROWTH: f64 = 0.10;
/// Plus this much RSS (KiB), for allocator and page-cache noise.
pub const FLAT_RSS_SLACK_KIB: f64 = 4096.0;
/// Plus this many file descriptors, for connections in flight at a sample.
pub const FLAT_FD_SLACK: f64 = 64.0;

/// Whether a series stayed flat: the mean of its last third against the
/// mean of its first third (samples taken after warm-up, under load).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Flatness {
    /// Mean of the first third of the samples.
    pub early_mean: f64,
    /// Mean of the last third.
    pub late_mean: f64,
    /// The late mean allowed: early × (1 + FLAT_GROWTH) + slack.
    pub limit: f64,
    /// Largest sample.
    pub max: u64,
    /// late_mean ≤ limit.
    pub pass: bool,
}

/// Judges `values` (samples after warm-up, in order); `None` with fewer than
/// three samples (nothing to compare).
pub fn flatness(values: &[u64], slack: f64) -> Option<Flatness> {
    if values.len() < 3 {
        return None;
    }
    let third = values.len() / 3;
    let mean = |s: &[u64]| s.iter().map(|&v| v as f64).sum::<f64>() / s.len() as f64;
    let early_mean = mean(&values[..third]);
    let late_mean = mean(&values[values.len() - third..]);
    let limit = early_mean * (1.0 + FLAT_GROWTH) + slack;
    Some(Flatness {
        early_mean: round1(early_mean),
        late_mean: round1(late_mean),
        limit: round1(limit),
        max: values.iter().copied().max().unwrap_or(0),
        pass: late_mean <= limit,
    })
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// How a churning client's connection ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fate {
    /// A WebSocket close handshake.
    Clean,
    /// A TCP reset (SO_LINGER 0, then the socket is dropped): no close frame.
    Reset,
    /// The socket is dropped (FIN) without a close frame.
    Drop,
    /// Joins the hot room, stops reading until the gateway gives up on it
    /// (4008), then reads what is left.
    Slow,
}

/// Percent of churning connections per fate, in the order of [`Fate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Mix {
    /// Clean closes.
    pub clean: u32,
    /// TCP resets.
    pub reset: u32,
    /// Drops without close.
    pub drop: u32,
    /// Slow readers.
    pub slow: u32,
}

impl Mix {
    /// The fate for a uniform random `x`, by the mix's weights (all clean
    /// when every weight is 0).
    pub fn pick(&self, x: u64) -> Fate {
        let total = u64::from(self.clean + self.reset + self.drop + self.slow);
        if total == 0 {
            return Fate::Clean;
        }
        let mut point = x % total;
        for (weight, fate) in [
            (self.clean, Fate::Clean),
            (self.reset, Fate::Reset),
            (self.drop, Fate::Drop),
            (self.slow, Fate::Slow),
        ] {
            if point < u64::from(weight) {
                return fate;
            }
            point -= u64::from(weight);
        }
        Fate::Clean
    }
}

/// A well-mixed 64-bit value of (seed, a, b, salt) (splitmix64 finaliser):
/// every random choice of the soak, reproducible from its seed.
pub fn mix64(seed: u64, a: u64, b: u64, salt: u64) -> u64 {
    let mut x = seed
        ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f)
        ^ salt.wrapping_mul(0x1656_67b1_9e37_79f9);
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Publisher `index` sends its message `m` to room slot `(index + m) % rooms`
/// of its room list: the slot and the message's sequence number within it.
pub fn slot_of(index: u32, m: u64, rooms: usize) -> (usize, u64) {
    let rooms = rooms.max(1) as u64;
    (((u64::from(index) + m) % rooms) as usize, m / rooms)
}

/// The inverse of [`slot_of`]: which message `m` was sequence `seq` of slot `slot`.
pub fn message_of(index: u32, slot: usize, seq: u64, rooms: usize) -> u64 {
    let rooms = rooms.max(1) as u64;
    let first = (slot as u64 + rooms - u64::from(index) % rooms) % rooms;
    seq * rooms + first
}

/// Whether the end-of-run gauges of every gateway are 0.
pub fn all_zero(values: &[Option<i64>]) -> bool {
    !values.is_empty() && values.iter().all(|v| *v == Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_series_pass_and_growing_ones_fail() {
        let flat = [100_000, 103_000, 99_000, 101_000, 102_000, 100_500];
        let f = flatness(&flat, FLAT_RSS_SLACK_KIB).unwrap();
        assert!(f.pass, "{f:?}");
        assert_eq!(f.max, 103_000);
        // +50% over the run: a leak.
        let leak: Vec<u64> = (0..30).map(|i| 100_000 + i * 2_000).collect();
        let f = flatness(&leak, FLAT_RSS_SLACK_KIB).unwrap();
        assert!(!f.pass, "{f:?}");
        assert!(f.late_mean > f.limit);
        // Small absolute growth is within the slack even on a tiny base.
        assert!(
            flatness(&[10, 20, 30, 40, 50, 60], FLAT_FD_SLACK)
                .unwrap()
                .pass
        );
        assert_eq!(flatness(&[1, 2], 0.0), None);
        // The limit is early × 1.1 + slack.
        let f = flatness(&[1000, 1000, 1000], 64.0).unwrap();
        assert_eq!(f.limit, 1164.0);
    }

    #[test]
    fn mix_follows_its_weights() {
        let mix = Mix {
            clean: 60,
            reset: 15,
            drop: 15,
            slow: 10,
        };
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..10_000 {
            *counts.entry(mix.pick(mix64(7, i, 0, 1))).or_insert(0) += 1;
        }
        let share = |f| f64::from(counts[&f]) / 10_000.0;
        assert!((share(Fate::Clean) - 0.60).abs() < 0.03, "{counts:?}");
        assert!((share(Fate::Reset) - 0.15).abs() < 0.03, "{counts:?}");
        assert!((share(Fate::Drop) - 0.15).abs() < 0.03, "{counts:?}");
        assert!((share(Fate::Slow) - 0.10).abs() < 0.03, "{counts:?}");
        let none = Mix {
            clean: 0,
            reset: 0,
            drop: 0,
            slow: 0,
        };
        assert_eq!(none.pick(12345), Fate::Clean);
        let only_slow = Mix { slow: 1, ..none };
        assert_eq!(only_slow.pick(u64::MAX), Fate::Slow);
    }

    #[test]
    fn mix64_is_deterministic_and_spreads() {
        assert_eq!(mix64(1, 2, 3, 4), mix64(1, 2, 3, 4));
        assert_ne!(mix64(1, 2, 3, 4), mix64(1, 2, 3, 5));
        assert_ne!(mix64(1, 2, 3, 4), mix64(2, 2, 3, 4));
        let low_bits: std::collections::BTreeSet<u64> =
            (0..64).map(|i| mix64(0, i, 0, 0) % 16).collect();
        assert_eq!(low_bits.len(), 16);
    }

    #[test]
    fn slots_and_messages_are_inverse() {
        for index in [0u32, 1, 5, 19] {
            for rooms in [1usize, 3, 200] {
                for m in 0..500u64 {
                    let (slot, seq) = slot_of(index, m, rooms);
                    assert!(slot < rooms);
                    assert_eq!(message_of(index, slot, seq, rooms), m);
                }
            }
        }
        // Publisher 2 over 5 rooms: message 0 to slot 2, message 3 to slot 0.
        assert_eq!(slot_of(2, 0, 5), (2, 0));
        assert_eq!(slot_of(2, 3, 5), (0, 0));
        assert_eq!(slot_of(2, 8, 5), (0, 1));
    }

    #[test]
    fn zero_means_every_gateway_answered_zero() {
        assert!(all_zero(&[Some(0), Some(0)]));
        assert!(!all_zero(&[Some(0), Some(3)]));
        assert!(!all_zero(&[Some(0), None]));
        assert!(!all_zero(&[]));
    }
}
