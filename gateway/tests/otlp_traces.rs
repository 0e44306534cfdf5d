//! OpenTelemetry export of the real binaries, seen by an in-test OTLP/HTTP
//! receiver: a publish on gateway A and its delivery on gateway B (relayed
//! by a real nats-server) form one trace whose B side hangs under A's
//! `bus publish` span; and without any `OTEL_*` variable nothing is sent.

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod common;
mod nats;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::binary::{self, Process, spawn};
use common::{Client, Connect, STEP, get_status, within};
use nats::NatsServer;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use prost::Message as _;
use serde_json::json;
use tokio::sync::Notify;

/// Bodies POSTed to the receiver, by path.
#[derive(Default)]
struct Received {
    traces: Mutex<Vec<Bytes>>,
    other: Mutex<Vec<String>>,
    arrived: Notify,
}

/// An OTLP/HTTP receiver on `addr`: keeps every `/v1/traces` body, counts
/// every other export (metrics), answers 200 with an empty (valid) message.
async fn receiver(addr: &str) -> (SocketAddr, Arc<Received>) {
    let received = Arc::new(Received::default());
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|State(r): State<Arc<Received>>, body: Bytes| async move {
                r.traces.lock().unwrap().push(body);
                r.arrived.notify_waiters();
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }),
        )
        .route(
            "/v1/metrics",
            post(|State(r): State<Arc<Received>>| async move {
                r.other.lock().unwrap().push("/v1/metrics".into());
                r.arrived.notify_waiters();
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot bind the OTLP receiver on {addr}: {e}"));
    let bound = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (bound, received)
}

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attributes: Vec<(String, String)>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text_attributes(attrs: &[KeyValue]) -> Vec<(String, String)> {
    attrs
        .iter()
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some((kv.key.clone(), s.clone())),
            any_value::Value::IntValue(i) => Some((kv.key.clone(), i.to_string())),
            _ => None,
        })
        .collect()
}

fn spans(received: &Received) -> Vec<Span> {
    let bodies = received.traces.lock().unwrap().clone();
    let mut out = Vec::new();
    for body in bodies {
        let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
        for rs in request.resource_spans {
            let resource = text_attributes(&rs.resource.map(|r| r.attributes).unwrap_or_default());
            let service = resource
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                        attributes: text_attributes(&s.attributes),
                    });
                }
            }
        }
    }
    out
}

/// Waits (at most `limit`) until `check` finds what it needs in the spans received.
async fn await_spans<T>(
    received: &Received,
    limit: Duration,
    check: impl Fn(&[Span]) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let arrived = received.arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        let all = spans(received);
        if let Some(found) = check(&all) {
            return found;
        }
        if tokio::time::timeout_at(deadline, arrived).await.is_err() {
            panic!("spans not received within {limit:?}; got {all:#?}");
        }
    }
}

fn gateway_command(nats: &str, node: &str, otlp: Option<SocketAddr>) -> tokio::process::Command {
    let mut cmd = binary::command();
    cmd.args(["--node-name", node]);
    if !nats.is_empty() {
        cmd.args(["--nats-url", nats]);
    }
    if let Some(addr) = otlp {
        cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            // Export batches every 100 ms instead of 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    }
    cmd
}

/// A client of `gw`, once `gw` is ready (its bus connected).
async fn client(gw: &Process) -> Client {
    let readyz = format!("http://{}/readyz", gw.admin);
    common::eventually(STEP, "gateway ready", || async {
        (get_status(&readyz).await == 200).then_some(())
    })
    .await;
    Client::connect(&format!("ws://{}/ws", gw.public), &Connect::default())
        .await
        .expect("upgrade")
}

#[tokio::test]
async fn a_publish_and_its_delivery_on_another_gateway_share_one_trace() {
    within(60, async {
        let server = NatsServer::start().await;
        let (otlp, received) = receiver("127.0.0.1:0").await;
        let a = spawn(gateway_command(&server.url(), "gw-a", Some(otlp))).await;
        let b = spawn(gateway_command(&server.url(), "gw-b", Some(otlp))).await;

        let mut bob = client(&b).await;
        bob.join("traced").await;
        let mut alice = client(&a).await;
        alice
            .ok(json!({"type": "publish", "room": "traced", "data": "hi"}))
            .await;
        let got = bob.recv_type("message").await;
        assert_eq!(got["data"], "hi");

        let named = |all: &[Span], name: &str, node: &str| {
            all.iter()
                .find(|s| s.name == name && s.attr("roomcast.node") == Some(node))
                .cloned()
        };
        let (receive, publish, bus_receive, fanout_b) =
            await_spans(&received, Duration::from_secs(15), |all| {
                let receive = named(all, "receive", "gw-a")?;
                let publish = all
                    .iter()
                    .find(|s| s.name == "bus publish" && s.parent == receive.span_id)?
                    .clone();
                let bus_receive = named(all, "bus receive", "gw-b")?;
                let fanout_b = all
                    .iter()
                    .find(|s| s.name == "fanout" && s.parent == bus_receive.span_id)?
                    .clone();
                Some((receive, publish, bus_receive, fanout_b))
            })
            .await;

        assert_eq!(receive.trace_id.len(), 16);
        assert!(
            receive.parent.is_empty(),
            "receive is the root: {receive:?}"
        );
        assert_eq!(receive.attr("roomcast.room"), Some("traced"));
        assert_eq!(receive.attr("roomcast.via"), Some("websocket"));
        assert_eq!(receive.service, "roomcast-gateway");
        for span in [&publish, &bus_receive, &fanout_b] {
            assert_eq!(span.trace_id, receive.trace_id, "one trace: {span:?}");
        }
        assert_eq!(
            bus_receive.parent, publish.span_id,
            "B's bus receive is a child of A's bus publish"
        );
        assert!(
            publish
                .attr("messaging.destination.name")
                .is_some_and(|s| s.ends_with(".room.traced")),
            "{publish:?}"
        );
        assert_eq!(bus_receive.attr("roomcast.node"), Some("gw-b"));
        assert_eq!(fanout_b.attr("roomcast.recipients"), Some("1"));
        // A's own local fan-out (no local member: 0 recipients) is in the trace too.
        let all = spans(&received);
        assert!(
            all.iter()
                .any(|s| s.name == "fanout" && s.parent == receive.span_id),
            "A's fanout under receive: {all:#?}"
        );
    })
    .await;
}

/// Publishes once on a lone gateway, stops it with SIGTERM (which flushes
/// any exporter before exit) and returns its stderr.
async fn traffic_then_exit(cmd: tokio::process::Command) -> String {
    let mut gw = spawn(cmd).await;
    let mut c = client(&gw).await;
    c.join("quiet").await;
    c.ok(json!({"type": "publish", "room": "quiet", "data": 1}))
        .await;
    assert_eq!(c.recv_type("message").await["data"], 1);
    drop(c);
    gw.sigterm().await;
    let status = gw.wait_exit(STEP * 2).await;
    assert!(status.success(), "exit status {status:?}");
    gw.log.lock().unwrap().clone()
}

/// Binds the OTLP default endpoint (127.0.0.1:4318): this test is in the
/// `otlp-default-port` nextest group so nothing else races for the port.
#[tokio::test]
async fn nothing_is_exported_without_otel_variables() {
    within(60, async {
        let (_, received) = receiver("127.0.0.1:4318").await;

        // `binary::command` passes no OTEL_* variable on.
        let log = traffic_then_exit(gateway_command("", "quiet", None)).await;
        assert!(
            log.contains("OpenTelemetry export off"),
            "the binary says export is off:\n{log}"
        );
        // The process has exited: any export it made was answered already.
        assert_eq!(received.traces.lock().unwrap().len(), 0, "no span export");
        assert!(
            received.other.lock().unwrap().is_empty(),
            "no metric export"
        );

        // Control: one OTEL_* variable alone turns export on, to this very
        // receiver (the default endpoint), so the silence above means something.
        let mut cmd = gateway_command("", "loud", None);
        cmd.env("OTEL_SERVICE_NAME", "roomcast-control");
        let log = traffic_then_exit(cmd).await;
        assert!(log.contains("OpenTelemetry export on"), "{log}");
        let all = spans(&received);
        assert!(
            all.iter()
                .any(|s| s.name == "receive" && s.service == "roomcast-control"),
            "the control run exported its publish: {all:#?}"
        );
    })
    .await;
}
