//! The benchmark scenarios, each a bounded run that returns a serialisable
//! result: `fanout`, `floor`, `idle`, `connect_storm`, `drain`, `soak`, `formats` and `presence`; plus the helpers
//! they share for opening many connections.

pub mod connect_storm;
pub mod drain;
pub mod fanout;
pub mod floor;
pub mod formats;
pub mod idle;
pub mod presence;
pub mod soak;

use std::future::Future;

use futures_util::StreamExt;

use crate::BenchError;
use crate::progress;

/// Runs `open(i)` for `i` in `0..count`, at most `concurrency` at a time;
/// results in index order.
pub async fn open_all<T, F, Fut>(
    count: usize,
    concurrency: usize,
    what: &str,
    open: F,
) -> Vec<Result<T, BenchError>>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<T, BenchError>>,
{
    let bar = progress::bar(count as u64, what);
    let mut results: Vec<(usize, Result<T, BenchError>)> = futures_util::stream::iter(0..count)
        .map(|i| {
            let fut = open(i);
            let bar = bar.clone();
            async move {
                let result = fut.await;
                bar.inc(1);
                (i, result)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    bar.finish_and_clear();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// All results, or the first error with how many failed.
pub fn all_ok<T>(results: Vec<Result<T, BenchError>>, what: &str) -> Result<Vec<T>, BenchError> {
    let total = results.len();
    let mut ok = Vec::with_capacity(total);
    let mut first = None;
    let mut failed = 0;
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => {
                failed += 1;
                first.get_or_insert(e);
            }
        }
    }
    match first {
        None => Ok(ok),
        Some(e) => Err(BenchError::new(format!(
            "{failed} of {total} {what} failed; first: {e}"
        ))),
    }
}

/// `name` with `index`: room and label names.
pub fn room_name(prefix: &str, index: usize) -> String {
    format!("{prefix}{index}")
}

/// The CPU seconds of this process so far (the load generator's own cost).
pub fn own_cpu_seconds() -> f64 {
    crate::procstat::cpu_seconds(std::process::id()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn open_all_keeps_index_order_and_reports_failures() {
        let results = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            open_all(10, 3, "test", |i| async move {
                if i == 7 {
                    Err(BenchError::new("seven"))
                } else {
                    Ok(i * 2)
                }
            }),
        )
        .await
        .unwrap();
        assert_eq!(results.len(), 10);
        assert_eq!(results[3].as_ref().unwrap(), &6);
        let err = all_ok(results, "things").unwrap_err().to_string();
        assert!(
            err.contains("1 of 10 things failed") && err.contains("seven"),
            "{err}"
        );
        assert_eq!(all_ok(vec![Ok::<_, BenchError>(1)], "x").unwrap(), vec![1]);
    }
}
