//! The kubeconfig that points kubectl and kube-rs at a running stand-in.

use std::net::SocketAddr;

/// A kubeconfig for `http://addr` with context `standin`, default namespace `default` and no credentials.
pub fn render(addr: SocketAddr) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: http://{addr}
contexts:
- name: standin
  context:
    cluster: standin
    namespace: default
    user: standin
current-context: standin
preferences: {{}}
users:
- name: standin
  user: {{}}
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_server_and_parses_as_yaml() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().expect("addr");
        let text = render(addr);
        let doc: serde_json::Value = serde_saphyr::from_str(&text).expect("yaml");
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "http://127.0.0.1:4321"
        );
        assert_eq!(doc["current-context"], "standin");
    }
}
