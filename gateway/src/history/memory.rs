//! Room history kept in this process, for the in-process bus: per room the
//! last `history_size` messages younger than `history_ttl_seconds`.
//!
//! Offsets come from one counter for the whole store, so a room whose
//! messages all expired and whose entry was swept away never reuses an
//! offset. The epoch is drawn at random when the store is created: a restart
//! loses the history and so changes the epoch.
//!
//! Memory is bounded by rooms × `history_size` × message size: a room's
//! entry is removed by the sweep once nothing of it is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Epoch, HistoryError, HistoryStore, Page, Position, Stored};
use crate::namespace::{NamespaceOptions, Namespaces};

/// How often appends sweep away rooms that keep nothing.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// An in-process history store.
pub struct MemoryStore {
    namespaces: Namespaces,
    epoch: Epoch,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The last offset handed out, by any room.
    last: u64,
    /// Every offset up to here may belong to a room whose entry was swept
    /// away: a `since` below it cannot be proven complete for a new entry.
    floor: u64,
    rooms: HashMap<String, Room>,
    swept: Option<Instant>,
}

struct Room {
    kept: VecDeque<Kept>,
    /// The room's last offset.
    last: u64,
    /// The highest offset of this room that was dropped (by size or age),
    /// or the store's floor when the entry was created.
    dropped_through: u64,
}

struct Kept {
    offset: u64,
    at: Instant,
    payload: Bytes,
}

impl MemoryStore {
    /// A store for the rooms of `namespaces`, with a fresh random epoch.
    pub fn new(namespaces: Namespaces) -> Self {
        Self::with_epoch(
            namespaces,
            Epoch::new(format!("m{:016x}", rand::random::<u64>())),
        )
    }

    /// A store with a given epoch (tests).
    pub fn with_epoch(namespaces: Namespaces, epoch: Epoch) -> Self {
        Self {
            namespaces,
            epoch,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// How many rooms have an entry (kept messages or a recent drop).
    pub fn rooms(&self) -> usize {
        self.lock().rooms.len()
    }

    fn options(&self, room: &str) -> Result<NamespaceOptions, HistoryError> {
        let options = self.namespaces.for_room(room);
        if options.has_history() {
            Ok(options)
        } else {
            Err(HistoryError::NoHistory)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every
        // mutation is a single push/pop), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn position_of(&self, last: u64) -> Position {
        Position {
            offset: last,
            epoch: self.epoch.clone(),
        }
    }

    /// [`HistoryStore::append`] at a given time.
    pub fn append_at(
        &self,
        room: &str,
        payload: Bytes,
        now: Instant,
    ) -> Result<Position, HistoryError> {
        let options = self.options(room)?;
        let mut inner = self.lock();
        inner.sweep(now, &self.namespaces);
        inner.last += 1;
        let offset = inner.last;
        let floor = inner.floor;
        let entry = inner.rooms.entry(room.to_owned()).or_insert_with(|| Room {
            kept: VecDeque::new(),
            last: 0,
            dropped_through: floor,
        });
        entry.kept.push_back(Kept {
            offset,
            at: now,
            payload,
        });
        entry.last = offset;
        entry.trim(&options, now);
        Ok(self.position_of(offset))
    }

    /// [`HistoryStore::last`] at a given time.
    pub fn last_at(&self, room: &str, limit: usize, now: Instant) -> Result<Page, HistoryError> {
        let options = self.options(room)?;
        let mut inner = self.lock();
        let Some(entry) = inner.rooms.get_mut(room) else {
            return Ok(self.empty_page(true));
        };
        entry.trim(&options, now);
        let skip = entry.kept.len().saturating_sub(limit);
        Ok(Page {
            messages: entry.kept.iter().skip(skip).map(Kept::stored).collect(),
            position: self.position_of(entry.current()),
            complete: true,
        })
    }

    /// [`HistoryStore::after`] at a given time.
    pub fn after_at(
        &self,
        room: &str,
        since: u64,
        limit: usize,
        now: Instant,
    ) -> Result<Page, HistoryError> {
        let options = self.options(room)?;
        let mut inner = self.lock();
        let (last, floor) = (inner.last, inner.floor);
        let Some(entry) = inner.rooms.get_mut(room) else {
            return Ok(self.empty_page(since >= floor && since <= last));
        };
        entry.trim(&options, now);
        let complete = since >= entry.dropped_through && since <= last;
        Ok(Page {
            messages: entry
                .kept
                .iter()
                .filter(|k| k.offset > since)
                .take(limit)
                .map(Kept::stored)
                .collect(),
            position: self.position_of(entry.current()),
            complete,
        })
    }

    /// [`HistoryStore::position`] at a given time.
    pub fn position_at(&self, room: &str, now: Instant) -> Result<Position, HistoryError> {
        let options = self.options(room)?;
        let mut inner = self.lock();
        let current = inner.rooms.get_mut(room).map_or(0, |entry| {
            entry.trim(&options, now);
            entry.current()
        });
        Ok(self.position_of(current))
    }

    fn empty_page(&self, complete: bool) -> Page {
        Page {
            messages: Vec::new(),
            position: self.position_of(0),
            complete,
        }
    }
}

impl Inner {
    /// At most every [`SWEEP_EVERY`]: drops expired messages of every room
    /// and removes the entries that keep nothing, raising the floor to their
    /// last offsets.
    fn sweep(&mut self, now: Instant, namespaces: &Namespaces) {
        if self
            .swept
            .is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.swept = Some(now);
        let mut floor = self.floor;
        self.rooms.retain(|name, room| {
            room.trim(&namespaces.for_room(name), now);
            let keep = !room.kept.is_empty();
            if !keep {
                floor = floor.max(room.last);
            }
            keep
        });
        self.floor = floor;
    }
}

impl Room {
    /// Drops messages beyond `history_size` and those older than the TTL.
    fn trim(&mut self, options: &NamespaceOptions, now: Instant) {
        let ttl = options.history_ttl();
        while let Some(first) = self.kept.front() {
            let too_many = self.kept.len() > options.history_size as usize;
            let too_old = now.saturating_duration_since(first.at) >= ttl;
            if !(too_many || too_old) {
                break;
            }
            self.dropped_through = first.offset;
            self.kept.pop_front();
        }
    }

    /// The room's current offset: its last kept message's, 0 when it keeps none.
    fn current(&self) -> u64 {
        self.kept.back().map_or(0, |k| k.offset)
    }
}

impl Kept {
    fn stored(&self) -> Stored {
        Stored {
            offset: self.offset,
            payload: self.payload.clone(),
        }
    }
}

impl HistoryStore for MemoryStore {
    async fn append(&self, room: &str, payload: Bytes) -> Result<Position, HistoryError> {
        self.append_at(room, payload, Instant::now())
    }

    async fn last(&self, room: &str, limit: usize) -> Result<Page, HistoryError> {
        self.last_at(room, limit, Instant::now())
    }

    async fn after(&self, room: &str, since: u64, limit: usize) -> Result<Page, HistoryError> {
        self.after_at(room, since, limit, Instant::now())
    }

    async fn position(&self, room: &str) -> Result<Position, HistoryError> {
        self.position_at(room, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(specs: &[&str]) -> MemoryStore {
        let namespaces =
            Namespaces::from_specs(specs.iter().map(|s| s.parse().expect("spec"))).expect("specs");
        MemoryStore::with_epoch(namespaces, Epoch::new("e1"))
    }

    fn offsets(page: &Page) -> Vec<u64> {
        page.messages.iter().map(|m| m.offset).collect()
    }

    fn append(s: &MemoryStore, room: &str, text: &str, now: Instant) -> u64 {
        s.append_at(room, Bytes::from(text.to_owned()), now)
            .expect("append")
            .offset
    }

    #[test]
    fn a_room_without_history_is_refused() {
        let s = store(&["chat:history_size=3"]);
        let now = Instant::now();
        assert_eq!(
            s.append_at("lobby", Bytes::new(), now),
            Err(HistoryError::NoHistory)
        );
        assert_eq!(s.last_at("other:x", 5, now), Err(HistoryError::NoHistory));
        assert_eq!(s.after_at("lobby", 0, 5, now), Err(HistoryError::NoHistory));
        assert_eq!(s.position_at("lobby", now), Err(HistoryError::NoHistory));
    }

    #[test]
    fn appends_answer_increasing_offsets_and_reads_keep_the_bytes() {
        let s = store(&["chat:history_size=10"]);
        let now = Instant::now();
        assert_eq!(
            s.position_at("chat:1", now).unwrap(),
            Position {
                offset: 0,
                epoch: Epoch::new("e1")
            }
        );
        let a = append(&s, "chat:1", "a", now);
        let _other = append(&s, "chat:2", "x", now);
        let b = append(&s, "chat:1", "b", now);
        assert!(a >= 1 && b > a);
        let page = s.last_at("chat:1", 10, now).unwrap();
        assert_eq!(offsets(&page), [a, b]);
        assert_eq!(page.messages[1].payload, Bytes::from("b"));
        assert_eq!(page.position.offset, b);
        assert_eq!(s.position_at("chat:1", now).unwrap().offset, b);
        assert_eq!(offsets(&s.last_at("chat:1", 1, now).unwrap()), [b]);
        let after = s.after_at("chat:1", a, 10, now).unwrap();
        assert_eq!(offsets(&after), [b]);
        assert!(after.complete);
        let first = s.after_at("chat:1", 0, 1, now).unwrap();
        assert_eq!(offsets(&first), [a], "limit takes the first after since");
    }

    #[test]
    fn trims_by_size_and_reports_since_as_incomplete() {
        let s = store(&["chat:history_size=2"]);
        let now = Instant::now();
        let o: Vec<u64> = (0..4)
            .map(|i| append(&s, "chat:1", &i.to_string(), now))
            .collect();
        assert_eq!(
            offsets(&s.last_at("chat:1", 10, now).unwrap()),
            [o[2], o[3]]
        );
        // The client saw o[1]: everything after it is kept.
        assert!(s.after_at("chat:1", o[1], 10, now).unwrap().complete);
        // The client saw o[0]: o[1] was dropped.
        let page = s.after_at("chat:1", o[0], 10, now).unwrap();
        assert!(!page.complete);
        assert!(!s.after_at("chat:1", 0, 10, now).unwrap().complete);
    }

    #[test]
    fn trims_by_age() {
        let s = store(&["chat:history_size=10,history_ttl_seconds=5"]);
        let t0 = Instant::now();
        let a = append(&s, "chat:1", "a", t0);
        let b = append(&s, "chat:1", "b", t0 + Duration::from_secs(3));
        let later = t0 + Duration::from_secs(6);
        assert_eq!(offsets(&s.last_at("chat:1", 10, later).unwrap()), [b]);
        assert!(s.after_at("chat:1", a, 10, later).unwrap().complete);
        assert!(!s.after_at("chat:1", 0, 10, later).unwrap().complete);
        let gone = t0 + Duration::from_secs(9);
        let page = s.last_at("chat:1", 10, gone).unwrap();
        assert!(page.messages.is_empty());
        assert_eq!(page.position.offset, 0, "no message kept: offset 0");
        assert!(!s.after_at("chat:1", a, 10, gone).unwrap().complete);
    }

    #[test]
    fn swept_rooms_never_reuse_offsets_nor_claim_completeness() {
        let s = store(&["chat:history_size=10,history_ttl_seconds=1"]);
        let t0 = Instant::now();
        let a = append(&s, "chat:1", "a", t0);
        // A later append sweeps chat:1 away (all expired).
        let t1 = t0 + Duration::from_secs(2);
        append(&s, "chat:2", "x", t1);
        assert_eq!(s.rooms(), 1);
        // A client that saw nothing of chat:1 before (since 0) cannot be told
        // that nothing was dropped; one that saw `a` can.
        assert!(!s.after_at("chat:1", 0, 10, t1).unwrap().complete);
        assert!(s.after_at("chat:1", a, 10, t1).unwrap().complete);
        let b = append(&s, "chat:1", "b", t1);
        assert!(b > a);
        assert!(!s.after_at("chat:1", 0, 10, t1).unwrap().complete);
        assert!(s.after_at("chat:1", a, 10, t1).unwrap().complete);
    }

    #[test]
    fn a_since_beyond_every_offset_is_incomplete() {
        let s = store(&["chat:history_size=10"]);
        let now = Instant::now();
        let a = append(&s, "chat:1", "a", now);
        assert!(!s.after_at("chat:1", a + 1, 10, now).unwrap().complete);
        assert!(!s.after_at("chat:9", a + 1, 10, now).unwrap().complete);
        assert!(s.after_at("chat:9", 0, 10, now).unwrap().complete);
    }

    #[test]
    fn fresh_stores_draw_different_epochs() {
        let a = MemoryStore::new(Namespaces::default());
        let b = MemoryStore::new(Namespaces::default());
        assert_ne!(a.epoch, b.epoch);
    }
}
