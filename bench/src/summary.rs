//! How a run's result leaves the process: one JSON object on stdout (for
//! scripts and the report) and the same figures as a readable table on
//! stderr.

use serde::Serialize;
use serde_json::Value;

use crate::BenchError;

/// Prints `result` as JSON on stdout and as a table on stderr.
pub fn emit(result: &impl Serialize) -> Result<(), BenchError> {
    let value = serde_json::to_value(result).map_err(|e| BenchError::new(e.to_string()))?;
    // Straight from the struct, so the JSON keeps its field order.
    let line = serde_json::to_string(result).map_err(|e| BenchError::new(e.to_string()))?;
    println!("{line}");
    eprint!("{}", table(&value));
    Ok(())
}

/// A two-column table of every leaf of `value`, keys joined with dots.
pub fn table(value: &Value) -> String {
    let mut rows = Vec::new();
    flatten("", value, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

fn flatten(prefix: &str, value: &Value, rows: &mut Vec<(String, String)>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(&key(k), v, rows);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(|v| !v.is_object()) => {
            let text: Vec<String> = items.iter().map(plain).collect();
            rows.push((prefix.to_owned(), text.join(", ")));
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&key(&i.to_string()), v, rows);
            }
        }
        other => rows.push((prefix.to_owned(), plain(other))),
    }
}

fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_values_become_dotted_rows() {
        let v = serde_json::json!({
            "scenario": "fanout",
            "latency": {"p50_ms": 1.5},
            "targets": ["a", "b"],
            "cpu": [{"pid": 1, "s": 2.0}],
            "none": null,
            "empty": {}
        });
        let t = table(&v);
        let row = |key: &str| {
            t.lines()
                .find(|l| l.split_whitespace().next() == Some(key))
                .map(|l| l[key.len()..].trim().to_owned())
        };
        assert_eq!(row("scenario").as_deref(), Some("fanout"), "{t}");
        assert_eq!(row("latency.p50_ms").as_deref(), Some("1.5"), "{t}");
        assert_eq!(row("targets").as_deref(), Some("a, b"), "{t}");
        assert_eq!(row("cpu.0.pid").as_deref(), Some("1"), "{t}");
        assert_eq!(row("none").as_deref(), Some("null"), "{t}");
        assert_eq!(row("empty").as_deref(), Some("{}"), "{t}");
    }
}
