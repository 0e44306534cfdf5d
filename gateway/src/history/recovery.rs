//! The pure part of joining a history room: deciding `recovered` and merging
//! the replay read from the store with the live messages that arrive while it
//! is read, so that the client gets every message exactly once, in offset
//! order, across the replay/live boundary.
//!
//! The order of a join with history (the session drives it):
//! 1. make a [`Join`], then subscribe the room (live messages start arriving
//!    and are handed to [`Join::live`], which buffers them, bounded);
//! 2. once the subscription is live, read the store: [`HistoryStore::after`]
//!    with `since`, or only the position without it;
//! 3. [`Join::finish`] with that read: the [`Outcome`] says what to send
//!    before the `ok`, what the `ok` carries, what to send right after it, and
//!    the [`Watermark`] that filters the live messages from then on.
//!
//! Because the read starts after the subscription is live, every message is
//! in the read, in the buffer, or still to come live: nothing falls between.
//!
//! [`HistoryStore::after`]: super::HistoryStore::after

use std::collections::BTreeMap;

use super::{Epoch, Position};

/// A client's `since`: the last offset it has, in an epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The offset of the last message the client has (0: none).
    pub offset: u64,
    /// The epoch that offset belongs to.
    pub epoch: Epoch,
}

/// The buffer was full: more live messages arrived during the read than a
/// join may hold. The join cannot promise exactly-once order and must fail
/// (the session answers it like a slow consumer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("more than {0} live messages arrived while the history was read")]
pub struct Overflow(pub usize);

/// What the store answered for the join: the room's position, whether every
/// message after `since` is still kept, and the kept messages after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read<T> {
    /// The room's position when read.
    pub position: Position,
    /// Every message after `since` is still kept ([`super::Page::complete`]).
    pub complete: bool,
    /// The kept messages after `since`, with their offsets, oldest first.
    pub messages: Vec<(u64, T)>,
}

/// What the session sends for the join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    /// `recovered` for the `ok`: `None` when the join had no `since`.
    pub recovered: Option<bool>,
    /// Messages to send before the `ok`, in offset order (the replay).
    pub before_ok: Vec<T>,
    /// What the `ok` carries as `offset` and `epoch`: the client has
    /// everything up to it (when recovered) or must reload up to it.
    pub position: Position,
    /// Messages to send right after the `ok`, in offset order: live ones
    /// that arrived during the read and are newer than `position`.
    pub after_ok: Vec<T>,
    /// Filters the live messages that follow.
    pub watermark: Watermark,
}

/// A join in progress: buffers live messages until the store has answered.
#[derive(Debug)]
pub struct Join<T> {
    since: Option<Since>,
    capacity: usize,
    /// Live messages by epoch and offset: ordered, one per offset.
    buffered: BTreeMap<(Epoch, u64), T>,
    /// The epochs in the order their first message arrived.
    epochs: Vec<Epoch>,
}

impl<T> Join<T> {
    /// A join with an optional `since`, buffering at most `capacity` live
    /// messages during the read.
    pub fn new(since: Option<Since>, capacity: usize) -> Self {
        Self {
            since,
            capacity,
            buffered: BTreeMap::new(),
            epochs: Vec::new(),
        }
    }

    /// The `since` the store must be read after (none: read only the position).
    pub fn since(&self) -> Option<&Since> {
        self.since.as_ref()
    }

    /// A live message that arrived during the read. A duplicate offset is
    /// kept once.
    pub fn live(&mut self, epoch: &Epoch, offset: u64, item: T) -> Result<(), Overflow> {
        let key = (epoch.clone(), offset);
        if self.buffered.contains_key(&key) {
            return Ok(());
        }
        if self.buffered.len() >= self.capacity {
            return Err(Overflow(self.capacity));
        }
        if !self.epochs.contains(epoch) {
            self.epochs.push(epoch.clone());
        }
        self.buffered.insert(key, item);
        Ok(())
    }

    /// Decides the join from the store's read.
    ///
    /// Recovered when `since` is in the read's epoch and the store says every
    /// message after it is kept: then the replay is the read's messages after
    /// `since` merged with the buffered ones (each offset once). Otherwise
    /// nothing is replayed and the `ok` carries the room's position; buffered
    /// messages newer than it follow the `ok`. Buffered messages of another
    /// epoch (the store was recreated during the read) follow the `ok` too,
    /// and the watermark moves to that epoch.
    pub fn finish(self, read: Read<T>) -> Outcome<T> {
        let Read {
            mut position,
            complete,
            messages,
        } = read;
        let recovered = self
            .since
            .as_ref()
            .map(|since| since.epoch == position.epoch && complete);
        let mut same = BTreeMap::new();
        let mut other: Vec<(Epoch, u64, T)> = Vec::new();
        for ((epoch, offset), item) in self.buffered {
            if epoch == position.epoch {
                same.insert(offset, item);
            } else {
                other.push((epoch, offset, item));
            }
        }
        let mut before_ok = Vec::new();
        let mut delivered = position.offset;
        if let (Some(true), Some(since)) = (recovered, &self.since) {
            let mut replay: BTreeMap<u64, T> = messages
                .into_iter()
                .filter(|(offset, _)| *offset > since.offset)
                .collect();
            // A live copy of a message the read already has is a duplicate;
            // one the read missed (stored after it) completes the replay.
            for (offset, item) in std::mem::take(&mut same) {
                if offset > since.offset {
                    replay.entry(offset).or_insert(item);
                }
            }
            if let Some((&last, _)) = replay.last_key_value() {
                position.offset = position.offset.max(last);
            }
            // The client has everything up to `since` too (the room may keep
            // nothing any more: its offset is then 0).
            delivered = position.offset.max(since.offset);
            before_ok = replay.into_values().collect();
        }
        let mut watermark = Watermark::new(Position {
            offset: delivered,
            epoch: position.epoch.clone(),
        });
        let mut after_ok: Vec<T> = same
            .into_iter()
            .filter(|(offset, _)| watermark.admit(&position.epoch, *offset))
            .map(|(_, item)| item)
            .collect();
        // Other epochs in arrival order, each in offset order.
        for epoch in &self.epochs {
            for (e, offset, item) in other.extract_if(.., |(e, _, _)| e == epoch) {
                if watermark.admit(&e, offset) {
                    after_ok.push(item);
                }
            }
        }
        Outcome {
            recovered,
            before_ok,
            position,
            after_ok,
            watermark,
        }
    }
}

/// The last delivered (epoch, offset) of a room for one connection: admits
/// a live message only when it is newer, so a message is never delivered
/// twice nor out of order after a join. A message of another epoch is
/// always admitted and starts that epoch (the history was recreated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    position: Position,
}

impl Watermark {
    /// Starts at `position`: only offsets above it are admitted.
    pub fn new(position: Position) -> Self {
        Self { position }
    }

    /// Whether to deliver the message at `offset` of `epoch`; moves the mark.
    pub fn admit(&mut self, epoch: &Epoch, offset: u64) -> bool {
        if *epoch != self.position.epoch {
            self.position = Position {
                offset,
                epoch: epoch.clone(),
            };
            return true;
        }
        if offset > self.position.offset {
            self.position.offset = offset;
            return true;
        }
        false
    }

    /// The last delivered position.
    pub fn position(&self) -> &Position {
        &self.position
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn e(s: &str) -> Epoch {
        Epoch::new(s)
    }

    fn pos(offset: u64, epoch: &str) -> Position {
        Position {
            offset,
            epoch: e(epoch),
        }
    }

    fn since(offset: u64, epoch: &str) -> Option<Since> {
        Some(Since {
            offset,
            epoch: e(epoch),
        })
    }

    fn read(offset: u64, complete: bool, messages: &[u64]) -> Read<u64> {
        Read {
            position: pos(offset, "E"),
            complete,
            messages: messages.iter().map(|&o| (o, o)).collect(),
        }
    }

    #[test]
    fn recovers_with_replay_then_buffered_then_live() {
        let mut join = Join::new(since(2, "E"), 16);
        // Live during the read: 5 is also in the read, 7 was stored after it.
        join.live(&e("E"), 5, 5).unwrap();
        join.live(&e("E"), 7, 7).unwrap();
        let out = join.finish(read(5, true, &[3, 5]));
        assert_eq!(out.recovered, Some(true));
        assert_eq!(out.before_ok, [3, 5, 7]);
        assert_eq!(out.position, pos(7, "E"));
        assert!(out.after_ok.is_empty());
        let mut w = out.watermark;
        assert!(!w.admit(&e("E"), 7), "a duplicate of the replay");
        assert!(w.admit(&e("E"), 8));
    }

    #[test]
    fn another_epoch_is_not_recovered() {
        let mut join = Join::new(since(2, "OLD"), 16);
        join.live(&e("E"), 4, 4).unwrap();
        join.live(&e("E"), 6, 6).unwrap();
        let out = join.finish(read(4, true, &[1, 4]));
        assert_eq!(out.recovered, Some(false));
        assert!(out.before_ok.is_empty());
        assert_eq!(out.position, pos(4, "E"));
        assert_eq!(out.after_ok, [6], "only what is newer than the ok's offset");
    }

    #[test]
    fn dropped_messages_are_not_recovered() {
        let out = Join::new(since(2, "E"), 16).finish(read(9, false, &[8, 9]));
        assert_eq!(out.recovered, Some(false));
        assert!(out.before_ok.is_empty());
        assert_eq!(out.position.offset, 9);
    }

    #[test]
    fn recovered_when_the_room_keeps_nothing_and_nothing_was_dropped_after_since() {
        // Every message up to 4 expired; the client has them all.
        let mut join = Join::new(since(4, "E"), 16);
        join.live(&e("E"), 6, 6).unwrap();
        let out = join.finish(read(0, true, &[]));
        assert_eq!(out.recovered, Some(true));
        assert_eq!(out.before_ok, [6]);
        assert_eq!(out.position, pos(6, "E"));
        let mut w = out.watermark;
        assert!(!w.admit(&e("E"), 6));
        assert!(w.admit(&e("E"), 7));
    }

    #[test]
    fn a_plain_join_has_no_recovered_and_only_newer_live() {
        let mut join = Join::new(None, 16);
        join.live(&e("E"), 3, 3).unwrap();
        join.live(&e("E"), 4, 4).unwrap();
        let out = join.finish(read(3, true, &[]));
        assert_eq!(out.recovered, None);
        assert!(out.before_ok.is_empty());
        assert_eq!(out.position, pos(3, "E"));
        assert_eq!(out.after_ok, [4]);
        assert_eq!(out.watermark.position(), &pos(4, "E"));
    }

    #[test]
    fn live_messages_of_a_new_epoch_follow_the_ok() {
        let mut join = Join::new(since(1, "E"), 16);
        join.live(&e("NEW"), 1, 100).unwrap();
        join.live(&e("E"), 3, 3).unwrap();
        join.live(&e("NEW"), 2, 200).unwrap();
        let out = join.finish(read(2, true, &[2]));
        assert_eq!(out.before_ok, [2, 3]);
        assert_eq!(out.after_ok, [100, 200]);
        assert_eq!(out.watermark.position(), &pos(2, "NEW"));
    }

    #[test]
    fn the_buffer_is_bounded_and_duplicates_are_free() {
        let mut join = Join::new(None, 2);
        join.live(&e("E"), 1, 1).unwrap();
        join.live(&e("E"), 1, 1).unwrap();
        join.live(&e("E"), 2, 2).unwrap();
        assert_eq!(join.live(&e("E"), 3, 3), Err(Overflow(2)));
    }

    #[test]
    fn watermark_admits_only_newer_offsets_and_new_epochs() {
        let mut w = Watermark::new(pos(5, "E"));
        assert!(!w.admit(&e("E"), 5));
        assert!(!w.admit(&e("E"), 4));
        assert!(w.admit(&e("E"), 9));
        assert!(!w.admit(&e("E"), 7), "out of order: never delivered late");
        assert!(w.admit(&e("F"), 1));
        assert!(w.admit(&e("F"), 2));
    }

    /// A room's history, a client's `since` and the interleaving of the
    /// store read with live delivery, as the cluster can produce them.
    #[derive(Debug, Clone)]
    struct Scenario {
        /// Offsets of the room's messages, increasing, not consecutive.
        offsets: Vec<u64>,
        /// The client has messages [0, seen).
        seen: usize,
        /// The subscription is live from message `live_from` on.
        live_from: usize,
        /// The store read sees messages [0, read_upto) (≥ seen, ≥ live_from).
        read_upto: usize,
        /// Messages [0, dropped) were dropped from the store by size or age.
        dropped: usize,
        /// Live messages [live_from, buffered_upto) arrive during the read.
        buffered_upto: usize,
    }

    fn scenario() -> impl Strategy<Value = Scenario> {
        proptest::collection::vec(1u64..4, 0..30)
            .prop_flat_map(|gaps| {
                let offsets: Vec<u64> = gaps
                    .iter()
                    .scan(0, |acc, g| {
                        *acc += g;
                        Some(*acc)
                    })
                    .collect();
                let n = offsets.len();
                (Just(offsets), 0..=n, 0..=n)
            })
            .prop_flat_map(|(offsets, seen, live_from)| {
                let n = offsets.len();
                (
                    Just(offsets),
                    Just(seen),
                    Just(live_from),
                    seen.max(live_from)..=n,
                )
            })
            .prop_flat_map(|(offsets, seen, live_from, read_upto)| {
                let n = offsets.len();
                (0..=read_upto, live_from..=n).prop_map(move |(dropped, buffered_upto)| Scenario {
                    offsets: offsets.clone(),
                    seen,
                    live_from,
                    read_upto,
                    dropped,
                    buffered_upto,
                })
            })
    }

    proptest! {
        /// Whatever the interleaving: recovered exactly when nothing after
        /// `since` was dropped; then the client gets every message after
        /// `since` once, in order; otherwise exactly the live ones after the
        /// `ok`'s offset, once, in order.
        #[test]
        fn exactly_once_in_order_across_the_boundary(s in scenario()) {
            let offset_of = |i: usize| if i == 0 { 0 } else { s.offsets[i - 1] };
            let since_offset = offset_of(s.seen);
            let mut join = Join::new(since(since_offset, "E"), 64);
            for &o in &s.offsets[s.live_from..s.buffered_upto] {
                join.live(&e("E"), o, o).unwrap();
            }
            let kept = &s.offsets[s.dropped..s.read_upto];
            let complete = s.dropped <= s.seen;
            let read = Read {
                position: pos(kept.last().copied().unwrap_or(0), "E"),
                complete,
                messages: kept.iter().filter(|&&o| o > since_offset).map(|&o| (o, o)).collect(),
            };
            let read_position = read.position.offset;
            let out = join.finish(read);
            let mut got = out.before_ok.clone();
            got.extend(out.after_ok.iter().copied());
            let mut w = out.watermark.clone();
            for &o in &s.offsets[s.buffered_upto..] {
                if w.admit(&e("E"), o) {
                    got.push(o);
                }
            }
            prop_assert_eq!(out.recovered, Some(complete));
            let want: Vec<u64> = if complete {
                s.offsets.iter().copied().filter(|&o| o > since_offset).collect()
            } else {
                s.offsets[s.live_from..].iter().copied().filter(|&o| o > out.position.offset).collect()
            };
            prop_assert_eq!(&got, &want);
            prop_assert!(out.position.offset >= read_position);
            prop_assert!(out.before_ok.iter().all(|&o| o <= out.position.offset));
        }
    }
}
