//! Room names and the room patterns of a token's `rooms` claim.
//!
//! A [`RoomName`] can only be built through [`RoomName::parse`], which enforces
//! `^[A-Za-z0-9_:@/-]{1,128}$`. That rule is what keeps a room name from ever
//! widening a bus subscription: it admits no `.`, `*`, `>` or whitespace.

use std::fmt;
use std::sync::Arc;

/// Longest room name.
pub const MAX_ROOM_BYTES: usize = 128;

/// A valid room name; cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomName(Arc<str>);

impl RoomName {
    /// Validates `name` against the contract's rule.
    pub fn parse(name: &str) -> Option<Self> {
        is_valid(name).then(|| Self(name.into()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for RoomName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` matches `^[A-Za-z0-9_:@/-]{1,128}$`.
pub fn is_valid(name: &str) -> bool {
    (1..=MAX_ROOM_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'@' | b'/' | b'-'))
}

/// The rooms a user may use, from the token's `rooms` claim.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RoomAccess {
    /// No `rooms` claim: every room.
    #[default]
    Any,
    /// Only rooms matching one of these patterns.
    Patterns(Vec<RoomPattern>),
}

impl RoomAccess {
    /// Whether `room` may be used.
    pub fn allows(&self, room: &RoomName) -> bool {
        match self {
            RoomAccess::Any => true,
            RoomAccess::Patterns(patterns) => patterns.iter().any(|p| p.matches(room.as_str())),
        }
    }
}

/// One entry of a `rooms` claim: an exact name, or a prefix when it ends in `*`.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomPattern {
    /// Matches this name only.
    Exact(String),
    /// Matches every name starting with this prefix (`"chat:*"`; `"*"` matches all).
    Prefix(String),
}

impl RoomPattern {
    /// Reads a pattern; a trailing `*` makes it a prefix.
    pub fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => RoomPattern::Prefix(prefix.to_owned()),
            None => RoomPattern::Exact(pattern.to_owned()),
        }
    }

    /// Whether `room` matches.
    pub fn matches(&self, room: &str) -> bool {
        match self {
            RoomPattern::Exact(name) => name == room,
            RoomPattern::Prefix(prefix) => room.starts_with(prefix.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_rejects_bus_syntax() {
        for bad in [
            "",
            "a.b",
            "*",
            ">",
            "a b",
            "a\tb",
            "a.>",
            "ä",
            &"x".repeat(129),
        ] {
            assert!(RoomName::parse(bad).is_none(), "{bad:?}");
        }
        for good in ["a", "A-z_0:9@x/y", &"x".repeat(128)] {
            assert!(RoomName::parse(good).is_some(), "{good:?}");
        }
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let room = |n| RoomName::parse(n).unwrap();
        let access = RoomAccess::Patterns(vec![
            RoomPattern::parse("chat:*"),
            RoomPattern::parse("lobby"),
        ]);
        assert!(access.allows(&room("chat:1")));
        assert!(access.allows(&room("chat:")));
        assert!(access.allows(&room("lobby")));
        assert!(!access.allows(&room("lobby2")));
        assert!(!access.allows(&room("cha")));
        assert!(RoomAccess::Patterns(vec![RoomPattern::parse("*")]).allows(&room("any")));
        assert!(!RoomAccess::Patterns(vec![]).allows(&room("any")));
        assert!(RoomAccess::Any.allows(&room("any")));
    }
}
