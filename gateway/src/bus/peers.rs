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

/// Silence after which a peer is forgotten: three missed hellos.
pub const PEER_TTL: Duration = Duration::from_secs(6);

/// Live peers by instance id, with when each was last heard from.
#[derive(Debug, Default)]
pub struct Peers {
    seen: HashMap<String, Instant>,
}

impl Peers {
    /// Records a hello from `instance` at `now`; returns whether it is new.
    pub fn heard(&mut self, instance: &str, now: Instant) -> bool {
        self.seen.insert(instance.to_owned(), now).is_none()
    }

    /// Forgets `instance` (it said goodbye).
    pub fn forget(&mut self, instance: &str) {
        self.seen.remove(instance);
    }

    /// Forgets peers silent for longer than [`PEER_TTL`] and returns how many remain.
    pub fn live(&mut self, now: Instant) -> usize {
        self.seen
            .retain(|_, last| now.saturating_duration_since(*last) <= PEER_TTL);
        self.seen.len()
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
        peers.forget("b");
        assert_eq!(peers.live(t0), 0);
    }
}
