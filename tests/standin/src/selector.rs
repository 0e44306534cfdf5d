//! Label and field selectors as they appear in `labelSelector=` / `fieldSelector=` query parameters.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key=value` / `key==value`.
    Equals(String, String),
    /// `key!=value` (also matches objects without the key).
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)` (also matches objects without the key).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed label selector: all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<LabelRequirement>);

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("unbalanced ')' in selector {s:?}"))?
            }
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in selector {s:?}"));
    }
    parts.push(&s[start..]);
    Ok(parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect())
}

fn valid_key(key: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key.len() <= 316
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_string())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn value_set(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised value set, got {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

/// Parses one requirement, e.g. `tier in (a, b)`.
fn parse_requirement(part: &str) -> Result<LabelRequirement, String> {
    if let Some(key) = part.strip_prefix('!') {
        return Ok(LabelRequirement::DoesNotExist(valid_key(key.trim())?));
    }
    for (op, ctor) in [("!=", 0), ("==", 1), ("=", 1)] {
        if let Some((k, v)) = part.split_once(op) {
            let (k, v) = (valid_key(k.trim())?, v.trim().to_string());
            return Ok(if ctor == 0 {
                LabelRequirement::NotEquals(k, v)
            } else {
                LabelRequirement::Equals(k, v)
            });
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    if rest.is_empty() {
        return Ok(LabelRequirement::Exists(valid_key(key)?));
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(LabelRequirement::NotIn(valid_key(key)?, value_set(set)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(LabelRequirement::In(valid_key(key)?, value_set(set)?));
    }
    Err(format!("unable to parse requirement {part:?}"))
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax.
    pub fn parse(s: &str) -> Result<Self, String> {
        split_top_level(s)?
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => get(k) == Some(v.as_str()),
            LabelRequirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            LabelRequirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelRequirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            LabelRequirement::Exists(k) => get(k).is_some(),
            LabelRequirement::DoesNotExist(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector: `path=value` / `path==value` / `path!=value` terms on dotted JSON paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax (any dotted field path is accepted).
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, equal, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, true, v)
            } else {
                return Err(format!("invalid field selector term {part:?}"));
            };
            terms.push((path.trim().to_string(), equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    /// Whether the object's fields satisfy every term; absent fields compare as "".
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, value)| {
            let field = path.split('.').try_fold(object, |v, k| v.get(k));
            let text = match field {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            (text == *value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "status": {"phase": "Running"}})
    }

    #[test]
    fn equality_and_inequality() {
        let o = obj(json!({"app": "web", "tier": "front"}));
        assert!(LabelSelector::parse("app=web").expect("parse").matches(&o));
        assert!(
            LabelSelector::parse("app==web,tier=front")
                .expect("parse")
                .matches(&o)
        );
        assert!(!LabelSelector::parse("app!=web").expect("parse").matches(&o));
        assert!(
            LabelSelector::parse("missing!=x")
                .expect("parse")
                .matches(&o)
        );
    }

    #[test]
    fn set_based_requirements() {
        let o = obj(json!({"app": "web"}));
        assert!(
            LabelSelector::parse("app in (db, web)")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            !LabelSelector::parse("app notin (web)")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            LabelSelector::parse("tier notin (a)")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            !LabelSelector::parse("tier in (a)")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            LabelSelector::parse("app,!tier")
                .expect("parse")
                .matches(&o)
        );
        assert!(!LabelSelector::parse("tier").expect("parse").matches(&o));
        assert_eq!(
            LabelSelector::parse("a in (x,y),b").expect("parse").0,
            vec![
                LabelRequirement::In("a".into(), vec!["x".into(), "y".into()]),
                LabelRequirement::Exists("b".into())
            ]
        );
    }

    #[test]
    fn empty_selector_matches_everything() {
        assert!(LabelSelector::parse("").expect("parse").matches(&json!({})));
    }

    #[test]
    fn malformed_selectors_are_errors() {
        assert!(LabelSelector::parse("a in (x").is_err());
        assert!(LabelSelector::parse("a in x").is_err());
        assert!(LabelSelector::parse("a b c").is_err());
        assert!(LabelSelector::parse("bad key=1").is_err());
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let o = obj(json!({}));
        assert!(
            FieldSelector::parse("metadata.name=a")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("metadata.namespace!=other,status.phase=Running")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            !FieldSelector::parse("metadata.name==b")
                .expect("parse")
                .matches(&o)
        );
        assert!(
            FieldSelector::parse("spec.nodeName=")
                .expect("parse")
                .matches(&o)
        );
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
