//! Room namespaces and their options (protocol v1.1, "Room namespaces").
//!
//! A room's namespace is the part of its name before the first `:` (`chat:42`
//! is in `chat`; a name without `:` is in the default namespace, written with
//! an empty name). Each gateway is configured with one spec per namespace,
//! `NAME:option=value,...`, identical on every gateway of a cluster. This
//! module parses those specs and answers which options apply to a room; it
//! does no I/O.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Most messages a namespace may keep per room: replays and history reads are
/// bounded by it, so it bounds the memory one join or read can take.
pub const MAX_HISTORY_SIZE: u32 = 10_000;

/// Longest `history_ttl_seconds` (one year).
pub const MAX_HISTORY_TTL_SECONDS: u64 = 365 * 24 * 3600;

/// The options' names, in the order the contract lists them.
pub const OPTION_NAMES: [&str; 4] = [
    "history_size",
    "history_ttl_seconds",
    "client_publish",
    "presence_events",
];

/// The options of one namespace; [`Default`] gives the contract's defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceOptions {
    /// Messages kept per room; 0: the namespace has no history.
    pub history_size: u32,
    /// How long a kept message stays, in seconds (≥ 1).
    pub history_ttl_seconds: u64,
    /// false: only the HTTP API may publish; a client `publish` is `forbidden`.
    pub client_publish: bool,
    /// Whether members may ask for `joined`/`left` events.
    pub presence_events: bool,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            history_size: 0,
            history_ttl_seconds: 300,
            client_publish: true,
            presence_events: true,
        }
    }
}

impl NamespaceOptions {
    /// Whether rooms of this namespace keep history.
    pub fn has_history(&self) -> bool {
        self.history_size > 0
    }

    /// `history_ttl_seconds` as a duration.
    pub fn history_ttl(&self) -> Duration {
        Duration::from_secs(self.history_ttl_seconds)
    }
}

/// A bad namespace spec; the message names the namespace and the option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NamespaceError(pub String);

/// One parsed `NAME:option=value,...` spec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct NamespaceSpec {
    /// The namespace's name; empty for the default namespace.
    pub name: String,
    /// Its options: the defaults, overridden by those the spec sets.
    pub options: NamespaceOptions,
}

impl NamespaceSpec {
    /// Parses `NAME:option=value,...` (`NAME` may be empty, the option list
    /// may be empty). An unknown option, a bad value or an option given twice
    /// is an error that names it.
    pub fn parse(spec: &str) -> Result<Self, NamespaceError> {
        let Some((name, list)) = spec.split_once(':') else {
            return Err(NamespaceError(format!(
                "namespace {spec:?}: expected NAME:option=value,... (an empty NAME is the default namespace)"
            )));
        };
        let name = name.trim();
        if !is_valid_name(name) {
            return Err(NamespaceError(format!(
                "namespace {name:?}: a namespace name is at most 127 of A-Z a-z 0-9 _ @ / - (the part of a room name before its first ':')"
            )));
        }
        let label = display_name(name);
        let mut options = NamespaceOptions::default();
        let mut seen: Vec<&str> = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let Some((key, value)) = item.split_once('=') else {
                return Err(NamespaceError(format!(
                    "namespace {label}: {item:?} is not option=value"
                )));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(NamespaceError(format!(
                    "namespace {label}: option {key} given twice"
                )));
            }
            set_option(&mut options, key, value)
                .map_err(|why| NamespaceError(format!("namespace {label}: option {key}: {why}")))?;
            seen.push(key);
        }
        Ok(Self {
            name: name.to_owned(),
            options,
        })
    }
}

impl FromStr for NamespaceSpec {
    type Err = NamespaceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for NamespaceSpec {
    type Error = NamespaceError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<NamespaceSpec> for String {
    fn from(spec: NamespaceSpec) -> Self {
        spec.to_string()
    }
}

impl fmt::Display for NamespaceSpec {
    /// The canonical spec: every option spelled out, so it parses back equal.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        write!(
            f,
            "{}:history_size={},history_ttl_seconds={},client_publish={},presence_events={}",
            self.name, o.history_size, o.history_ttl_seconds, o.client_publish, o.presence_events
        )
    }
}

/// Sets one option from its text, or says what is wrong with the value.
fn set_option(options: &mut NamespaceOptions, key: &str, value: &str) -> Result<(), String> {
    match key {
        "history_size" => {
            options.history_size = parse_bounded(value, 0, u64::from(MAX_HISTORY_SIZE))? as u32
        }
        "history_ttl_seconds" => {
            options.history_ttl_seconds = parse_bounded(value, 1, MAX_HISTORY_TTL_SECONDS)?
        }
        "client_publish" => options.client_publish = parse_bool(value)?,
        "presence_events" => options.presence_events = parse_bool(value)?,
        _ => {
            return Err(format!(
                "unknown option (expected one of {})",
                OPTION_NAMES.join(", ")
            ));
        }
    }
    Ok(())
}

fn parse_bounded(value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{value:?} is not an integer from {min} to {max}")),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

/// Whether `name` can be the part of a room name before its first `:`.
fn is_valid_name(name: &str) -> bool {
    name.len() < crate::room::MAX_ROOM_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'/' | b'-'))
}

/// How errors and logs name a namespace (the default one has no name).
fn display_name(name: &str) -> String {
    if name.is_empty() {
        "\"\" (default)".to_owned()
    } else {
        format!("{name:?}")
    }
}

/// The namespace of `room`: the part before its first `:`, or `""` (the
/// default namespace) when it has none.
pub fn namespace_of(room: &str) -> &str {
    room.split_once(':').map_or("", |(ns, _)| ns)
}

/// Splits `ROOMCAST_NAMESPACES` into specs: several separated by `;`
/// (blank entries are skipped, so a trailing `;` is harmless).
pub fn split_env(value: &str) -> impl Iterator<Item = &str> {
    value.split(';').map(str::trim).filter(|s| !s.is_empty())
}

/// The options of every configured namespace; unconfigured namespaces get the
/// contract's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    by_name: BTreeMap<String, NamespaceOptions>,
}

impl Namespaces {
    /// Collects specs; a namespace configured twice is an error.
    pub fn from_specs(
        specs: impl IntoIterator<Item = NamespaceSpec>,
    ) -> Result<Self, NamespaceError> {
        let mut by_name = BTreeMap::new();
        for spec in specs {
            let label = display_name(&spec.name);
            if by_name.insert(spec.name, spec.options).is_some() {
                return Err(NamespaceError(format!(
                    "namespace {label} configured twice"
                )));
            }
        }
        Ok(Self { by_name })
    }

    /// The options of namespace `name` (`""`: the default namespace).
    pub fn get(&self, name: &str) -> NamespaceOptions {
        self.by_name.get(name).copied().unwrap_or_default()
    }

    /// The options that apply to `room`.
    pub fn for_room(&self, room: &str) -> NamespaceOptions {
        self.get(namespace_of(room))
    }

    /// The configured namespaces that keep history, by name.
    pub fn with_history(&self) -> impl Iterator<Item = (&str, NamespaceOptions)> {
        self.by_name
            .iter()
            .filter(|(_, o)| o.has_history())
            .map(|(n, o)| (n.as_str(), *o))
    }

    /// Every configured namespace, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, NamespaceOptions)> {
        self.by_name.iter().map(|(n, o)| (n.as_str(), *o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(spec: &str) -> String {
        NamespaceSpec::parse(spec).expect_err(spec).0
    }

    #[test]
    fn defaults_are_the_contracts() {
        let o = NamespaceOptions::default();
        assert_eq!(o.history_size, 0);
        assert_eq!(o.history_ttl_seconds, 300);
        assert!(o.client_publish);
        assert!(o.presence_events);
        assert!(!o.has_history());
        assert_eq!(o.history_ttl(), Duration::from_secs(300));
    }

    #[test]
    fn parses_the_issue_examples() {
        let chat = NamespaceSpec::parse("chat:history_size=200,history_ttl_seconds=600").unwrap();
        assert_eq!(chat.name, "chat");
        assert_eq!(chat.options.history_size, 200);
        assert_eq!(chat.options.history_ttl_seconds, 600);
        assert!(chat.options.client_publish && chat.options.presence_events);

        let feed = NamespaceSpec::parse("feed:client_publish=false").unwrap();
        assert_eq!(feed.name, "feed");
        assert!(!feed.options.client_publish);
        assert_eq!(feed.options.history_size, 0);

        let default = NamespaceSpec::parse(":history_size=50").unwrap();
        assert_eq!(default.name, "");
        assert_eq!(default.options.history_size, 50);
    }

    #[test]
    fn empty_option_list_and_spaces_are_accepted() {
        let spec = NamespaceSpec::parse("lobby:").unwrap();
        assert_eq!(spec.options, NamespaceOptions::default());
        let spec =
            NamespaceSpec::parse(" chat : history_size = 3 , presence_events=false ,").unwrap();
        assert_eq!(spec.name, "chat");
        assert_eq!(spec.options.history_size, 3);
        assert!(!spec.options.presence_events);
    }

    #[test]
    fn errors_name_the_bad_option() {
        let e = err("chat:histroy_size=5");
        assert!(
            e.contains("histroy_size") && e.contains("unknown option"),
            "{e}"
        );
        assert!(e.contains("\"chat\""), "{e}");
        let e = err("chat:history_size=-1");
        assert!(
            e.contains("option history_size") && e.contains("\"-1\""),
            "{e}"
        );
        let e = err("chat:history_size=10001");
        assert!(
            e.contains("history_size") && e.contains("0 to 10000"),
            "{e}"
        );
        let e = err(":history_ttl_seconds=0");
        assert!(
            e.contains("history_ttl_seconds") && e.contains("(default)"),
            "{e}"
        );
        let e = err("feed:client_publish=no");
        assert!(
            e.contains("client_publish") && e.contains("true or false"),
            "{e}"
        );
        let e = err("feed:presence_events");
        assert!(
            e.contains("presence_events") && e.contains("option=value"),
            "{e}"
        );
        let e = err("feed:client_publish=true,client_publish=false");
        assert!(e.contains("client_publish given twice"), "{e}");
    }

    #[test]
    fn errors_for_a_bad_name_or_shape() {
        assert!(err("chat").contains("expected NAME:option=value"));
        assert!(err("a.b:history_size=1").contains("namespace name"));
        assert!(err(&format!("{}:", "n".repeat(128))).contains("namespace name"));
        assert!(NamespaceSpec::parse(&format!("{}:", "n".repeat(127))).is_ok());
    }

    #[test]
    fn namespace_of_a_room_is_before_the_first_colon() {
        assert_eq!(namespace_of("chat:42"), "chat");
        assert_eq!(namespace_of("chat:42:x"), "chat");
        assert_eq!(namespace_of("lobby"), "");
        assert_eq!(namespace_of(":x"), "");
    }

    #[test]
    fn lookup_by_room_falls_back_to_defaults() {
        let ns = Namespaces::from_specs(
            [
                "chat:history_size=200",
                ":history_size=50",
                "feed:client_publish=false",
            ]
            .map(|s| s.parse().unwrap()),
        )
        .unwrap();
        assert_eq!(ns.for_room("chat:1").history_size, 200);
        assert_eq!(ns.for_room("lobby").history_size, 50);
        assert!(!ns.for_room("feed:x").client_publish);
        assert_eq!(ns.for_room("other:x"), NamespaceOptions::default());
        let with: Vec<&str> = ns.with_history().map(|(n, _)| n).collect();
        assert_eq!(with, ["", "chat"]);
        assert_eq!(ns.iter().count(), 3);
    }

    #[test]
    fn a_namespace_configured_twice_is_an_error() {
        let e =
            Namespaces::from_specs(["chat:", "chat:history_size=1"].map(|s| s.parse().unwrap()))
                .unwrap_err();
        assert!(e.0.contains("\"chat\" configured twice"), "{e}");
    }

    #[test]
    fn env_value_splits_on_semicolons() {
        let specs: Vec<&str> =
            split_env("chat:history_size=200,history_ttl_seconds=600; feed:client_publish=false;")
                .collect();
        assert_eq!(
            specs,
            [
                "chat:history_size=200,history_ttl_seconds=600",
                "feed:client_publish=false"
            ]
        );
    }

    #[test]
    fn yaml_strings_deserialize_through_the_parser() {
        let specs: Vec<NamespaceSpec> =
            serde_saphyr::from_str("- 'chat:history_size=2'\n- ':presence_events=false'\n")
                .unwrap();
        assert_eq!(specs[0].options.history_size, 2);
        assert!(!specs[1].options.presence_events);
        let e = serde_saphyr::from_str::<Vec<NamespaceSpec>>("- 'chat:bogus=1'\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    fn options() -> impl Strategy<Value = NamespaceOptions> {
        (
            0..=MAX_HISTORY_SIZE,
            1..=MAX_HISTORY_TTL_SECONDS,
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(size, ttl, publish, presence)| NamespaceOptions {
                history_size: size,
                history_ttl_seconds: ttl,
                client_publish: publish,
                presence_events: presence,
            })
    }

    proptest! {
        /// The canonical form of any spec parses back to the same spec.
        #[test]
        fn display_round_trips(name in "[A-Za-z0-9_@/-]{0,20}", options in options()) {
            let spec = NamespaceSpec { name, options };
            prop_assert_eq!(NamespaceSpec::parse(&spec.to_string()).unwrap(), spec);
        }

        /// Any text either parses or is an error: never a panic; and a room's
        /// namespace is always a prefix without `:`.
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,80}", room in "[A-Za-z0-9_:@/-]{1,40}") {
            let _ = NamespaceSpec::parse(&text);
            let ns = namespace_of(&room);
            prop_assert!(room.starts_with(ns) && !ns.contains(':'));
        }
    }
}
