//! Helpers shared by the integration tests.

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::future::Future;
use std::time::Duration;

/// Runs a test body with a deadline, so a hung watch or command fails instead of stalling the suite.
pub async fn bounded<F: Future<Output = ()>>(limit: Duration, body: F) {
    tokio::time::timeout(limit, body)
        .await
        .expect("test exceeded its deadline");
}

/// A kube-rs client configured from the stand-in's kubeconfig, as the operator builds one.
pub async fn client(standin: &kube_standin::Running) -> Client {
    let kubeconfig = Kubeconfig::from_yaml(&standin.kubeconfig).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig loads");
    Client::try_from(config).expect("client builds")
}
