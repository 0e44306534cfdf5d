//! The state a gateway's listeners, sessions and HTTP API share: its
//! configuration, name, hub, authenticator, metrics, drain, the options of
//! room namespaces, the presence service and the fallback sessions held
//! here.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::delivery::hub::Hub;
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::namespace::Namespaces;
use crate::presence::Presence;
use crate::transport::registry::Sessions;

/// State every request and session shares.
#[derive(Debug)]
pub struct Shared {
    /// The validated configuration.
    pub config: Config,
    /// This gateway's name (`welcome.node`).
    pub node: String,
    /// Connections and memberships.
    pub hub: Arc<Hub>,
    /// Upgrade and HTTP API checks.
    pub auth: Authenticator,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// Drain state.
    pub drain: Arc<Drain>,
    /// The options of every room namespace (`config.namespaces`, checked).
    pub namespaces: Namespaces,
    /// Presence events (`join` with `presence: true`).
    pub presence: Arc<Presence>,
    /// The fallback (SSE and long-polling) sessions held here.
    pub sessions: Arc<Sessions>,
}

impl Shared {
    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        !self.drain.is_draining() && self.hub.bus().is_ready()
    }

    /// Starts the drain (SIGTERM and `POST /drain`); false if already draining.
    pub fn start_drain(&self) -> bool {
        let period = Duration::from_secs(self.config.drain_seconds);
        self.drain.start(self.hub.clone(), &self.metrics, period)
    }
}
