//! The real-nats-server harness itself: its pure parsers, a standalone server
//! that stops and restarts on the same ports, and a 3-node routed cluster
//! whose nodes share interest. If these fail, the cluster tests cannot be trusted.

mod common;
mod nats;

use std::time::Duration;

use common::within;
use nats::{
    Interest, NatsCluster, NatsServer, Ports, all_subjects, client_conns, count_subscribers,
    parse_ports, raw_data, route_peers, thread_state,
};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[test]
fn ports_file_is_parsed_with_and_without_cluster() {
    let with = r#"{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"],"cluster":["nats://127.0.0.1:6222"]}"#;
    assert_eq!(
        parse_ports(with),
        Some(Ports {
            client: 4222,
            monitor: 8222,
            cluster: Some(6222)
        })
    );
    let without = r#"{"nats":["nats://127.0.0.1:1"],"monitoring":["http://127.0.0.1:2"]}"#;
    assert_eq!(parse_ports(without).map(|p| p.cluster), Some(None));
    assert_eq!(
        parse_ports(r#"{"nats":["nats://127.0.0.1:1"]"#),
        None,
        "partial write"
    );
}

#[test]
fn subscriptions_are_counted_exactly() {
    let connz = json!({"connections": [
        {"name": "gw-a", "subscriptions_list": ["t1.room.r", "t1.user.61"]},
        {"name": "gw-b", "subscriptions_list": ["t1.room.r", "t1.room.r2"]},
        {"name": "gw-c"}
    ]});
    let conns = client_conns(&connz);
    assert_eq!(conns.len(), 3);
    assert_eq!(count_subscribers(&conns, "t1.room.r"), 2);
    assert_eq!(count_subscribers(&conns, "t1.room.r2"), 1);
    assert_eq!(count_subscribers(&conns, "t1.room"), 0);
    assert_eq!(all_subjects(&conns).len(), 4);
}

#[test]
fn route_peers_are_distinct_servers() {
    let routez = json!({"routes": [
        {"remote_id": "A"}, {"remote_id": "A"}, {"remote_id": "B"}
    ]});
    assert_eq!(route_peers(&routez).len(), 2);
}

#[test]
fn raw_data_keeps_the_exact_text() {
    let frame = r#"{"type":"message","room":"r","from":null,"data":{ "a" : 1.50 }}"#;
    assert_eq!(raw_data(frame), r#"{ "a" : 1.50 }"#);
}

#[test]
fn thread_state_reads_past_a_command_name_with_spaces() {
    assert_eq!(thread_state("42 (nats server) T 1 42"), Some('T'));
    assert_eq!(thread_state("42 (a) b) S 1"), Some('S'));
    assert_eq!(thread_state("garbage"), None);
}

/// A bare NATS protocol client: enough to subscribe and see it in `/connz`.
struct Proto {
    lines: BufReader<TcpStream>,
}

impl Proto {
    async fn connect(url: &str) -> Proto {
        let addr = url.trim_start_matches("nats://");
        let stream = TcpStream::connect(addr)
            .await
            .expect("connect to nats-server");
        let mut p = Proto {
            lines: BufReader::new(stream),
        };
        let info = p.line().await;
        assert!(info.starts_with("INFO "), "{info}");
        p.write("CONNECT {\"verbose\":false,\"name\":\"probe\"}\r\n")
            .await;
        p
    }

    async fn write(&mut self, text: &str) {
        self.lines
            .get_mut()
            .write_all(text.as_bytes())
            .await
            .expect("write to nats-server");
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        self.lines
            .read_line(&mut line)
            .await
            .expect("read from nats-server");
        line
    }

    /// Round trip: every earlier command has been processed when PONG arrives.
    async fn flush(&mut self) {
        self.write("PING\r\n").await;
        loop {
            if self.line().await.starts_with("PONG") {
                return;
            }
        }
    }
}

#[tokio::test]
async fn standalone_server_shows_subscriptions_and_restarts_on_the_same_ports() {
    within(30, async {
        let mut server = NatsServer::start().await;
        let ports = server.ports();
        let mut probe = Proto::connect(&server.url()).await;
        probe.write("SUB t1.room.probe 1\r\n").await;
        probe.flush().await;
        assert_eq!(server.subscribers("t1.room.probe").await, 1);
        let clients = server.clients().await;
        assert_eq!(clients.len(), 1, "{clients:?}");
        assert_eq!(clients[0].name, "probe");

        // A frozen server accepts the bytes but answers nothing until thawed.
        {
            let frozen = server.freeze();
            assert!(frozen.all_threads_stopped());
            probe.write("PING\r\n").await;
            let line = tokio::time::timeout(Duration::from_millis(200), probe.line()).await;
            assert!(line.is_err(), "a frozen server answered {line:?}");
        }
        assert!(
            probe.line().await.starts_with("PONG"),
            "thawed: the PING is answered"
        );

        server.stop();
        assert!(!server.is_running());
        assert!(
            TcpStream::connect(("127.0.0.1", ports.client))
                .await
                .is_err(),
            "a stopped server refuses connections"
        );
        server.restart().await;
        assert_eq!(server.ports(), ports, "same ports after a restart");
        assert_eq!(server.subscribers("t1.room.probe").await, 0, "fresh state");
        let mut again = Proto::connect(&server.url()).await;
        again.flush().await;
    })
    .await;
}

#[tokio::test]
async fn three_node_cluster_routes_and_propagates_interest() {
    within(60, async {
        let cluster = NatsCluster::start(3).await;
        for node in &cluster.nodes {
            assert_eq!(
                node.route_peers().await.len(),
                2,
                "{} is fully routed",
                node.name()
            );
        }
        // A subscriber on n0 receives what a publisher on n2 sends.
        let mut sub = Proto::connect(&cluster.nodes[0].url()).await;
        sub.write("SUB x.y 7\r\n").await;
        sub.flush().await;
        let mut publisher = Proto::connect(&cluster.nodes[2].url()).await;
        // Interest crosses routes asynchronously: publish until one arrives.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let got = loop {
            publisher.write("PUB x.y 2\r\nhi\r\n").await;
            publisher.flush().await;
            let line = tokio::time::timeout(Duration::from_millis(100), sub.line()).await;
            if let Ok(line) = line {
                break line;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no routed message within 5s"
            );
        };
        assert!(got.starts_with("MSG x.y 7 2"), "{got}");
        assert_eq!(cluster.subscribers("x.y").await, 1, "client subs only");
    })
    .await;
}
