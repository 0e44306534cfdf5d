//! The presence index: for each room this gateway watches, which users each
//! gateway of the cluster reports, and the `joined`/`left` events that
//! follow from a change. Pure: no I/O, no clock; the service in `mod.rs`
//! feeds it what the hub and the bus report and delivers what it returns.
//!
//! A user is present in a room while at least one gateway lists them there;
//! a gateway lists a user while it has at least one of their connections in
//! the room (the hub counts connections, so three tabs are one listing).
//! Events are per user across gateways: `joined` when the first gateway
//! lists them, `left` when the last stops (by a delta, a snapshot that no
//! longer has them, or the gateway being dropped as dead).
//!
//! Each gateway stamps what it reports with a sequence number that grows in
//! the order its room changed; a report no newer than the last one applied
//! for that room and gateway is stale and ignored, so a replayed or
//! reordered snapshot can never resurrect a user (no zombies) nor repeat an
//! event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::room::RoomName;

/// A change of a room's cluster-wide membership, per user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The user's first connection anywhere joined.
    Joined(Arc<str>),
    /// The user's last connection anywhere left.
    Left(Arc<str>),
}

impl Event {
    /// The user the event is about.
    pub fn user(&self) -> &Arc<str> {
        match self {
            Event::Joined(u) | Event::Left(u) => u,
        }
    }
}

/// What one gateway reported for one room.
#[derive(Debug, Default)]
struct Listing {
    /// Sequence number of the last report applied.
    seq: u64,
    /// Whether a full snapshot was applied (deltas alone may be partial).
    complete: bool,
    users: HashSet<Arc<str>>,
}

/// One watched room.
#[derive(Debug, Default)]
struct Room {
    /// By gateway instance id.
    gateways: HashMap<Arc<str>, Listing>,
    /// For each present user, how many gateways list them (always ≥ 1).
    listed_by: HashMap<Arc<str>, u32>,
}

impl Room {
    fn list(&mut self, user: Arc<str>) -> Option<Event> {
        let count = self.listed_by.entry(user.clone()).or_insert(0);
        *count += 1;
        (*count == 1).then_some(Event::Joined(user))
    }

    fn unlist(&mut self, user: &Arc<str>) -> Option<Event> {
        let count = self.listed_by.get_mut(user)?;
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.listed_by.remove(user);
        Some(Event::Left(user.clone()))
    }
}

/// The rooms being watched and what every gateway reports for them.
#[derive(Debug, Default)]
pub struct PresenceIndex {
    rooms: HashMap<RoomName, Room>,
}

impl PresenceIndex {
    /// Starts tracking `room` (a no-op when it is tracked).
    pub fn track(&mut self, room: &RoomName) {
        self.rooms.entry(room.clone()).or_default();
    }

    /// Stops tracking `room` and forgets everything about it (no events:
    /// nobody here watches it any more).
    pub fn untrack(&mut self, room: &RoomName) {
        self.rooms.remove(room);
    }

    /// Whether `room` is tracked.
    pub fn is_tracked(&self, room: &RoomName) -> bool {
        self.rooms.contains_key(room)
    }

    /// The rooms tracked.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomName> {
        self.rooms.keys()
    }

    /// `gateway` reports (at `seq`) that `user` is now present in `room`
    /// (`present`) or gone from it. Returns the event it causes, if any.
    pub fn delta(
        &mut self,
        room: &RoomName,
        gateway: &str,
        seq: u64,
        user: &Arc<str>,
        present: bool,
    ) -> Option<Event> {
        let state = self.rooms.get_mut(room)?;
        let listing = state.gateways.entry(gateway.into()).or_default();
        if seq <= listing.seq {
            return None;
        }
        listing.seq = seq;
        if present {
            if !listing.users.insert(user.clone()) {
                return None;
            }
            state.list(user.clone())
        } else {
            if !listing.users.remove(user) {
                return None;
            }
            state.unlist(user)
        }
    }

    /// `gateway` reports (at `seq`) every user it has in `room`. Replaces
    /// what it listed before; returns the events of the difference.
    pub fn snapshot(
        &mut self,
        room: &RoomName,
        gateway: &str,
        seq: u64,
        users: impl IntoIterator<Item = Arc<str>>,
    ) -> Vec<Event> {
        let Some(state) = self.rooms.get_mut(room) else {
            return Vec::new();
        };
        let listing = state.gateways.entry(gateway.into()).or_default();
        if seq <= listing.seq && listing.complete {
            return Vec::new();
        }
        listing.seq = listing.seq.max(seq);
        listing.complete = true;
        let new: HashSet<Arc<str>> = users.into_iter().collect();
        let old = std::mem::replace(&mut listing.users, new.clone());
        let mut events = Vec::new();
        for gone in old.difference(&new) {
            events.extend(state.unlist(gone));
        }
        for came in new.difference(&old) {
            events.extend(state.list(came.clone()));
        }
        events
    }

    /// Whether `gateway` has sent a full snapshot of `room`.
    pub fn has_snapshot(&self, room: &RoomName, gateway: &str) -> bool {
        self.rooms
            .get(room)
            .and_then(|r| r.gateways.get(gateway))
            .is_some_and(|l| l.complete)
    }

    /// Forgets `gateway` in every room (it died or left the cluster):
    /// `left` for each user only it listed.
    pub fn drop_gateway(&mut self, gateway: &str) -> Vec<(RoomName, Event)> {
        let mut events = Vec::new();
        for (name, state) in &mut self.rooms {
            let Some(listing) = state.gateways.remove(gateway) else {
                continue;
            };
            for user in &listing.users {
                if let Some(event) = state.unlist(user) {
                    events.push((name.clone(), event));
                }
            }
        }
        events
    }

    /// The users present in `room`, sorted; `None` when it is not tracked.
    pub fn members(&self, room: &RoomName) -> Option<Vec<Arc<str>>> {
        let state = self.rooms.get(room)?;
        let mut users: Vec<Arc<str>> = state.listed_by.keys().cloned().collect();
        users.sort_unstable();
        Some(users)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn u(name: &str) -> Arc<str> {
        name.into()
    }

    fn tracked(name: &str) -> (PresenceIndex, RoomName) {
        let mut index = PresenceIndex::default();
        let r = room(name);
        index.track(&r);
        (index, r)
    }

    #[test]
    fn one_user_on_two_gateways_is_one_joined_and_one_left() {
        let (mut ix, r) = tracked("r");
        assert_eq!(
            ix.delta(&r, "a", 1, &u("alice"), true),
            Some(Event::Joined(u("alice")))
        );
        assert_eq!(ix.delta(&r, "b", 1, &u("alice"), true), None);
        assert_eq!(ix.delta(&r, "a", 2, &u("alice"), false), None);
        assert_eq!(
            ix.delta(&r, "b", 2, &u("alice"), false),
            Some(Event::Left(u("alice")))
        );
        assert_eq!(ix.members(&r), Some(vec![]));
    }

    #[test]
    fn repeated_reports_cause_no_events() {
        let (mut ix, r) = tracked("r");
        assert!(ix.delta(&r, "a", 1, &u("x"), true).is_some());
        assert_eq!(ix.delta(&r, "a", 2, &u("x"), true), None, "already listed");
        assert_eq!(ix.delta(&r, "a", 3, &u("y"), false), None, "never listed");
        assert!(ix.snapshot(&r, "a", 4, [u("x")]).is_empty());
    }

    #[test]
    fn stale_reports_are_ignored() {
        let (mut ix, r) = tracked("r");
        assert!(ix.snapshot(&r, "a", 5, [u("x")]).len() == 1);
        assert_eq!(ix.delta(&r, "a", 4, &u("y"), true), None);
        assert_eq!(ix.delta(&r, "a", 5, &u("x"), false), None);
        assert!(ix.snapshot(&r, "a", 3, []).is_empty(), "no zombie left");
        assert_eq!(ix.members(&r), Some(vec![u("x")]));
        assert_eq!(
            ix.delta(&r, "a", 6, &u("x"), false),
            Some(Event::Left(u("x")))
        );
        assert!(
            ix.snapshot(&r, "a", 6, [u("x")]).is_empty(),
            "no zombie joined"
        );
    }

    #[test]
    fn a_snapshot_after_deltas_completes_the_listing() {
        let (mut ix, r) = tracked("r");
        assert!(ix.delta(&r, "a", 7, &u("x"), true).is_some());
        assert!(!ix.has_snapshot(&r, "a"));
        let events = ix.snapshot(&r, "a", 6, [u("y")]);
        assert_eq!(events, [Event::Left(u("x")), Event::Joined(u("y"))]);
        assert!(ix.has_snapshot(&r, "a"));
    }

    #[test]
    fn snapshots_emit_only_the_difference() {
        let (mut ix, r) = tracked("r");
        ix.snapshot(&r, "a", 1, [u("x"), u("y")]);
        ix.snapshot(&r, "b", 1, [u("y")]);
        let mut events = ix.snapshot(&r, "a", 2, [u("y"), u("z")]);
        events.sort_by_key(|e| e.user().clone());
        assert_eq!(events, [Event::Left(u("x")), Event::Joined(u("z"))]);
        assert_eq!(ix.members(&r), Some(vec![u("y"), u("z")]));
    }

    #[test]
    fn a_dead_gateway_takes_only_its_own_users_with_it() {
        let (mut ix, r) = tracked("r");
        let other = room("other");
        ix.track(&other);
        ix.snapshot(&r, "a", 1, [u("x"), u("shared")]);
        ix.snapshot(&r, "b", 1, [u("shared")]);
        ix.snapshot(&other, "a", 1, [u("w")]);
        let mut events = ix.drop_gateway("a");
        events.sort_by_key(|(room, e)| (room.clone(), e.user().clone()));
        assert_eq!(
            events,
            [
                (other.clone(), Event::Left(u("w"))),
                (r.clone(), Event::Left(u("x"))),
            ]
        );
        assert_eq!(ix.members(&r), Some(vec![u("shared")]));
        assert!(ix.drop_gateway("a").is_empty(), "dropping twice is a no-op");
    }

    #[test]
    fn a_gateway_that_comes_back_under_a_new_id_rejoins_without_duplicates() {
        let (mut ix, r) = tracked("r");
        ix.snapshot(&r, "old", 9, [u("x")]);
        // The user reconnected to the restarted gateway before the old one expired.
        assert!(ix.snapshot(&r, "new", 1, [u("x")]).is_empty());
        assert!(ix.drop_gateway("old").is_empty());
        assert_eq!(ix.members(&r), Some(vec![u("x")]));
    }

    #[test]
    fn untracked_rooms_ignore_reports() {
        let mut ix = PresenceIndex::default();
        let r = room("r");
        assert_eq!(ix.delta(&r, "a", 1, &u("x"), true), None);
        assert!(ix.snapshot(&r, "a", 1, [u("x")]).is_empty());
        assert_eq!(ix.members(&r), None);
        ix.track(&r);
        ix.snapshot(&r, "a", 1, [u("x")]);
        ix.untrack(&r);
        assert!(!ix.is_tracked(&r));
        assert!(ix.drop_gateway("a").is_empty());
    }
}
