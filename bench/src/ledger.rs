//! Delivery ledger of one subscriber (pure): for every (publisher, room)
//! stream it has seen, which sequence numbers arrived, how many twice, how
//! many after a later one; lost messages are what the publisher sent minus
//! what arrived.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Serialize;

/// What one arriving sequence number was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Later than everything before it.
    InOrder,
    /// Seen before.
    Duplicate,
    /// First time seen, but after a later sequence number.
    OutOfOrder,
    /// Beyond anything the publishers can have sent: not counted.
    Implausible,
}

/// One (publisher, room) stream as one subscriber saw it.
#[derive(Debug, Clone, Default)]
pub struct Stream {
    seen: Vec<u64>,
    highest: Option<u64>,
    distinct: u64,
    duplicated: u64,
    out_of_order: u64,
}

impl Stream {
    /// Records sequence number `seq`; `max_seq` bounds the bitmap.
    pub fn record(&mut self, seq: u64, max_seq: u64) -> Verdict {
        if seq > max_seq {
            return Verdict::Implausible;
        }
        let Ok(word) = usize::try_from(seq / 64) else {
            return Verdict::Implausible;
        };
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let bit = 1u64 << (seq % 64);
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return Verdict::Duplicate;
        }
        self.seen[word] |= bit;
        self.distinct += 1;
        match self.highest {
            Some(highest) if seq < highest => {
                self.out_of_order += 1;
                Verdict::OutOfOrder
            }
            _ => {
                self.highest = Some(seq);
                Verdict::InOrder
            }
        }
    }

    /// How many of the sequence numbers `0..sent` never arrived.
    pub fn lost(&self, sent: u64) -> u64 {
        let arrived: u64 = self
            .seen
            .iter()
            .enumerate()
            .map(|(word, bits)| {
                let first = word as u64 * 64;
                if first >= sent {
                    0
                } else if first + 64 <= sent {
                    u64::from(bits.count_ones())
                } else {
                    let mask = (1u64 << (sent - first)) - 1;
                    u64::from((bits & mask).count_ones())
                }
            })
            .sum();
        sent - arrived.min(sent)
    }

    /// The sequence numbers `expected` holds that this stream lacks, in
    /// order (what a subscriber missed of what a publisher had accepted).
    pub fn missing_of(&self, expected: &Stream) -> Vec<u64> {
        let mut missing = Vec::new();
        for (word, &bits) in expected.seen.iter().enumerate() {
            let mut lacking = bits & !self.seen.get(word).copied().unwrap_or(0);
            while lacking != 0 {
                missing.push(word as u64 * 64 + u64::from(lacking.trailing_zeros()));
                lacking &= lacking - 1;
            }
        }
        missing
    }

    /// Distinct sequence numbers recorded.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }
}

/// Counts for one (publisher, room, subscriber) triple.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Problems {
    /// Sent by the publisher, never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received after a later one of the same stream.
    pub out_of_order: u64,
}

impl Problems {
    /// Whether anything went wrong.
    pub fn any(&self) -> bool {
        self.lost + self.duplicated + self.out_of_order > 0
    }

    /// Adds another triple's counts.
    pub fn add(&mut self, other: &Problems) {
        self.lost += other.lost;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
    }
}

/// Hashes a (publisher, room) key with one multiply. The keys are small
/// indexes chosen by the load generator, not input from anyone, and the
/// default SipHash was the largest user-space cost of reading a delivery.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u8(b);
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads consecutive indexes over the high bits
        // the table uses.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Everything one subscriber received, by (publisher, room).
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    streams: HashMap<(u32, u32), Stream, BuildHasherDefault<KeyHasher>>,
    /// Sequence numbers above this are implausible.
    pub max_seq: u64,
    /// Probes that were implausible.
    pub implausible: u64,
}

impl Ledger {
    /// An empty ledger accepting sequence numbers up to `max_seq`.
    pub fn new(max_seq: u64) -> Self {
        Self {
            streams: HashMap::default(),
            max_seq,
            implausible: 0,
        }
    }

    /// Records one arrival of `seq` from `publisher` in `room`.
    pub fn record(&mut self, publisher: u32, room: u32, seq: u64) -> Verdict {
        let max_seq = self.max_seq;
        let verdict = self
            .streams
            .entry((publisher, room))
            .or_default()
            .record(seq, max_seq);
        if verdict == Verdict::Implausible {
            self.implausible += 1;
        }
        verdict
    }

    /// Problems of the stream (publisher, room) given how many it sent.
    pub fn problems(&self, publisher: u32, room: u32, sent: u64) -> Problems {
        match self.streams.get(&(publisher, room)) {
            Some(stream) => Problems {
                lost: stream.lost(sent),
                duplicated: stream.duplicated,
                out_of_order: stream.out_of_order,
            },
            None => Problems {
                lost: sent,
                ..Problems::default()
            },
        }
    }

    /// The stream (publisher, room), if anything of it was recorded.
    pub fn stream(&self, publisher: u32, room: u32) -> Option<&Stream> {
        self.streams.get(&(publisher, room))
    }

    /// Streams received from rooms other than those listed (misrouted).
    pub fn streams_outside(&self, rooms: &[u32]) -> usize {
        self.streams
            .keys()
            .filter(|(_, room)| !rooms.contains(room))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream_has_no_problems() {
        let mut ledger = Ledger::new(1000);
        for seq in 0..100 {
            assert_eq!(ledger.record(1, 2, seq), Verdict::InOrder);
        }
        assert_eq!(ledger.problems(1, 2, 100), Problems::default());
        assert!(!ledger.problems(1, 2, 100).any());
    }

    #[test]
    fn gaps_duplicates_and_reordering_are_told_apart() {
        let mut ledger = Ledger::new(1000);
        for seq in [0, 1, 3, 2, 3, 5, 5, 70] {
            ledger.record(0, 0, seq);
        }
        // Sent 0..=70 and 71..80 never came: lost = 81 - 6 distinct.
        let p = ledger.problems(0, 0, 81);
        assert_eq!(p.duplicated, 2);
        assert_eq!(p.out_of_order, 1);
        assert_eq!(p.lost, 81 - 6);
        // Arrivals beyond what was sent are not counted against `lost`.
        assert_eq!(ledger.problems(0, 0, 4).lost, 0);
        assert_eq!(ledger.problems(0, 0, 65).lost, 65 - 5);
    }

    #[test]
    fn unseen_streams_are_all_lost_and_bounds_hold() {
        let mut ledger = Ledger::new(10);
        assert_eq!(ledger.problems(4, 4, 7).lost, 7);
        assert_eq!(ledger.record(0, 0, 11), Verdict::Implausible);
        assert_eq!(ledger.record(0, 0, u64::MAX), Verdict::Implausible);
        assert_eq!(ledger.implausible, 2);
        ledger.record(0, 9, 1);
        assert_eq!(ledger.streams_outside(&[0]), 1);
        assert_eq!(ledger.streams_outside(&[0, 9]), 0);
    }

    #[test]
    fn missing_of_lists_what_was_expected_but_never_seen() {
        let mut accepted = Stream::default();
        let mut received = Stream::default();
        for seq in [0, 1, 2, 63, 64, 65, 130] {
            accepted.record(seq, 1000);
        }
        for seq in [0, 2, 64, 500] {
            received.record(seq, 1000);
        }
        assert_eq!(received.missing_of(&accepted), vec![1, 63, 65, 130]);
        assert_eq!(accepted.distinct(), 7);
        assert!(accepted.missing_of(&accepted).is_empty());
        assert_eq!(Stream::default().missing_of(&accepted).len(), 7);
        assert!(accepted.missing_of(&Stream::default()).is_empty());
    }

    #[test]
    fn lost_counts_exact_word_boundaries() {
        let mut stream = Stream::default();
        for seq in 0..128 {
            stream.record(seq, 1000);
        }
        assert_eq!(stream.lost(64), 0);
        assert_eq!(stream.lost(128), 0);
        assert_eq!(stream.lost(129), 1);
        assert_eq!(stream.lost(0), 0);
    }
}
