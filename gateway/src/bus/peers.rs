//! The other gateways of the cluster, as far as this one knows: learned from
//! their periodic hello on the bus and forgotten when they fall silent.
//!
//! Scatter-gather requests (presence, the join confirmation) wait for as many
//! replies as there are live peers, so they finish in one round trip instead
//! of always waiting out their deadline.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How often a gateway says hello.
pub const HELLO_INTERVAL: Duration = Duration::from_secs(2);

/// Silence after which a peer is no longer waited for: three missed hellos.
pub const PEER_TTL: Duration = Duration::from_secs(6);

/// Silence after which a peer counts as dead and is forgotten: its users
/// leave the presence of every room. Longer than [`PEER_TTL`] so a short
/// bus outage does not make every user of a gateway leave and rejoin, short
/// enough that the `left` events of a dead gateway come within the
/// contract's 30 s (this plus one [`HELLO_INTERVAL`] tick).
pub const PRESENCE_TTL: Duration = Duration::from_secs(15);

/// Known peers by instance id, with when each was last heard from.
#[derive(Debug, Default)]
pub struct Peers {
    seen: HashMap<String, Instant>,
}

impl Peers {
    /// Records a hello from `instance` at `now`; returns whether it is new,
    /// or back after more than [`PEER_TTL`] of silence.
    pub fn heard(&mut self, instance: &str, now: Instant) -> bool {
        self.seen
            .insert(instance.to_owned(), now)
            .is_none_or(|last| now.saturating_duration_since(last) > PEER_TTL)
    }

    /// Forgets `instance` (it said goodbye); returns whether it was known.
    pub fn forget(&mut self, instance: &str) -> bool {
        self.seen.remove(instance).is_some()
    }

    /// How many peers were heard from within [`PEER_TTL`].
    pub fn live(&self, now: Instant) -> usize {
        self.seen
            .values()
            .filter(|last| now.saturating_duration_since(**last) <= PEER_TTL)
            .count()
    }

    /// Forgets the peers silent for longer than [`PRESENCE_TTL`] and returns them.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let dead: Vec<String> = self
            .seen
            .iter()
            .filter(|(_, last)| now.saturating_duration_since(**last) > PRESENCE_TTL)
            .map(|(instance, _)| instance.clone())
            .collect();
        for instance in &dead {
            self.seen.remove(instance);
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_expire_after_their_ttl() {
        let t0 = Instant::now();
        let mut peers = Peers::default();
        assert!(peers.heard("a", t0));
        assert!(!peers.heard("a", t0));
        peers.heard("b", t0 + Duration::from_secs(4));
        assert_eq!(peers.live(t0 + PEER_TTL), 2);
        assert_eq!(peers.live(t0 + PEER_TTL + Duration::from_millis(1)), 1);
        assert!(peers.forget("b"));
        assert!(!peers.forget("b"));
        assert_eq!(peers.live(t0 + PEER_TTL + Duration::from_millis(1)), 0);
    }

    #[test]
    fn silent_peers_are_waited_for_less_long_than_they_are_remembered() {
        let t0 = Instant::now();
        let mut peers = Peers::default();
        peers.heard("a", t0);
        let later = t0 + Duration::from_secs(10);
        peers.heard("b", later);
        assert_eq!(peers.live(later), 1, "a is no longer waited for");
        assert!(peers.expire(later).is_empty(), "but not dead yet");
        assert!(
            peers.heard("a", later),
            "back after a silence counts as new"
        );
        assert!(!peers.heard("a", later), "then it is known");
        let dead = later + PRESENCE_TTL + Duration::from_millis(1);
        let mut gone = peers.expire(dead);
        gone.sort();
        assert_eq!(gone, ["a", "b"]);
        assert!(peers.expire(dead).is_empty());
    }
}
