//! Roomcast load generator: clients that speak protocol v1 against gateways
//! (or the Node.js baseline), the benchmark scenarios (`fanout`, `idle`,
//! `connect-storm`, `drain`, `soak`) and the report that turns their JSON
//! results into docs/benchmarks.md.

pub mod client;
pub mod fallback;
pub mod latency;
pub mod ledger;
pub mod procstat;
pub mod progress;
pub mod publisher;
pub mod report;
pub mod scenario;
pub mod subscriber;
pub mod summary;
pub mod target;
pub mod wire;
pub mod wsfeed;

use std::fmt;

/// Why a benchmark could not run (setup failures; not the measured losses,
/// which are results).
#[derive(Debug)]
pub struct BenchError(String);

impl BenchError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BenchError {}

impl From<std::io::Error> for BenchError {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

impl From<tokio_tungstenite::tungstenite::Error> for BenchError {
    fn from(e: tokio_tungstenite::tungstenite::Error) -> Self {
        Self(e.to_string())
    }
}
