//! What every load-generator test starts: a real gateway inside the test
//! process, alone on the in-process bus, on ephemeral loopback ports.

use roomcast_gateway::{Config, Gateway};

/// The configuration of a test gateway named `node`: loopback ports chosen
/// by the OS and a one-second drain, the rest as shipped.
pub fn config(node: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("literal address"),
        admin_listen: "127.0.0.1:0".parse().expect("literal address"),
        node_name: node.into(),
        drain_seconds: 1,
        ..Config::default()
    }
}

/// Starts a gateway with `config`, and the WebSocket URL to reach it.
pub async fn start(config: Config) -> (Gateway, String) {
    let gateway = Gateway::start(config).await.expect("gateway starts");
    let url = format!("ws://{}/ws", gateway.public_addr());
    (gateway, url)
}
