//! A stateful stand-in for the Kubernetes API server, for end-to-end tests without a cluster.
//!
//! It speaks the HTTP/JSON API that kube-rs and kubectl use, over plain HTTP on loopback:
//! discovery (custom resources appear once their CRD is created), create/get/list/replace/delete,
//! merge, JSON, strategic (approximated) and server-side apply (approximated) patches,
//! status/scale subresources, watches with resume and bookmarks, label and field selectors,
//! ownerReference cascade and namespace deletion. `docs/testing.md` lists what is approximated.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let standin = kube_standin::start().await?;
//! // KUBECONFIG for kubectl or the operator under test:
//! println!("{}", standin.kubeconfig_path.display());
//! standin.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod clock;
mod discovery;
mod errors;
mod fields;
mod kinds;
mod kubeconfig;
mod lifecycle;
mod patch;
mod routes;
mod selector;
mod server;
mod store;
mod table;
mod versions;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use kubeconfig::render as render_kubeconfig;

/// How to run the stand-in.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Interval between `BOOKMARK` events on watches that allow them.
    pub bookmark_interval: Duration,
    /// How many past events watches can resume from; older resourceVersions get 410 Gone.
    pub history_limit: usize,
    /// Where to write the kubeconfig; `None` writes a fresh file under the temp directory.
    pub kubeconfig_path: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bookmark_interval: Duration::from_secs(1),
            history_limit: 10_000,
            kubeconfig_path: None,
        }
    }
}

/// A running stand-in. Dropping it stops the server (without waiting); [`Running::shutdown`] waits.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    /// The kubeconfig file pointing at `addr`.
    pub kubeconfig_path: PathBuf,
    /// The kubeconfig text.
    pub kubeconfig: String,
    remove_kubeconfig: bool,
    store: Arc<Mutex<store::Store>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn store(&self) -> std::sync::MutexGuard<'_, store::Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ends every open watch stream, as an API server restart would; clients re-watch from the
    /// last resourceVersion they saw.
    pub fn end_watches(&self) {
        self.store().cut_watches();
    }

    /// Forgets the watch history, so re-watching from any earlier resourceVersion gets 410
    /// Expired and clients must relist. Combine with [`Running::end_watches`] to force relists.
    pub fn compact_history(&self) {
        self.store().compact();
    }

    /// How many watch streams are open, e.g. to wait until an operator's watches are established.
    pub fn open_watches(&self) -> usize {
        self.store().open_watches()
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.store().rv()
    }

    /// Stops the server and waits until it has stopped (open watches are cut).
    pub async fn shutdown(mut self) {
        self.end_watches();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if self.remove_kubeconfig {
            let _ = std::fs::remove_file(&self.kubeconfig_path);
        }
    }
}

fn temp_kubeconfig_path(addr: SocketAddr) -> PathBuf {
    std::env::temp_dir().join(format!(
        "kube-standin-{}-{}.kubeconfig",
        std::process::id(),
        addr.port()
    ))
}

/// Starts a stand-in with the default [`Config`] on 127.0.0.1 and a free port.
pub async fn start() -> std::io::Result<Running> {
    start_with(Config::default()).await
}

/// Starts a stand-in: binds, writes the kubeconfig and serves in a background task.
pub async fn start_with(config: Config) -> std::io::Result<Running> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let kubeconfig = kubeconfig::render(addr);
    let remove_kubeconfig = config.kubeconfig_path.is_none();
    let kubeconfig_path = config
        .kubeconfig_path
        .clone()
        .unwrap_or_else(|| temp_kubeconfig_path(addr));
    std::fs::write(&kubeconfig_path, &kubeconfig)?;
    let store = Arc::new(Mutex::new(store::Store::new(config.history_limit)));
    let app = server::App {
        store: Arc::clone(&store),
        address: addr.to_string(),
        bookmark_interval: config.bookmark_interval,
    };
    let router = axum::Router::new().fallback(server::handle).with_state(app);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        if let Err(e) = serve.await {
            eprintln!("kube-standin: server error: {e}");
        }
    });
    Ok(Running {
        addr,
        kubeconfig_path,
        kubeconfig,
        remove_kubeconfig,
        store,
        stop: Some(stop),
        task: Some(task),
    })
}
