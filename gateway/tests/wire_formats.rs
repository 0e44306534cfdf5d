//! Wire formats with real clients: permessage-deflate (RFC 7692) negotiated
//! with Python `websockets` and a raw client (one compression shared by every
//! recipient, a threshold, inflated client messages, decompression bombs
//! closed with 1009), and the `roomcast.v1.msgpack` subprotocol with Python
//! `msgpack` and a tokio-tungstenite client reading rmpv, on one gateway and
//! across two over a real nats-server, and in a history room.

mod common;
mod nats;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::msgpack::{MsgPackClient, map};
use common::{Connect, STEP, start_with, within};
use futures_util::SinkExt;
use rmpv::Value as Mp;
use roomcast_gateway::transport::deflate;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const EXTENSIONS: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Runs a scenario of `tests/clients/wire_client.py` (Python `websockets`
/// and `msgpack`, installed into .tools/pyws by scripts/install-deps).
async fn python(scenario: &str, url: &str) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let libs = root.join("../.tools/pyws");
    assert!(
        libs.join("websockets").is_dir(),
        "Python websockets is missing from {}: run scripts/install-deps",
        libs.display()
    );
    let run = tokio::process::Command::new("python3")
        .arg(root.join("tests/clients/wire_client.py"))
        .args([scenario, url])
        .env("PYTHONPATH", &libs)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(40), run)
        .await
        .expect("the Python client finishes in time")
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{scenario} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the Python client prints JSON")
}

/// A server frame as read by [`Raw`]: its first byte and payload.
#[derive(Debug)]
struct RawFrame {
    first: u8,
    payload: Vec<u8>,
}

impl RawFrame {
    fn compressed(&self) -> bool {
        self.first & 0x40 != 0
    }

    /// The payload as JSON, inflated first when it came compressed.
    fn json(&self) -> Value {
        let payload = if self.compressed() {
            deflate::inflate(&self.payload, 1 << 24).expect("a valid compressed message")
        } else {
            self.payload.clone()
        };
        serde_json::from_slice(&payload).expect("JSON")
    }
}

/// A hand-rolled client that can offer an extension, set RSV bits and
/// fragment, and sees every server frame's bytes.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The upgrade response's `Sec-WebSocket-Extensions`.
    extensions: Option<String>,
}

impl Raw {
    async fn connect(addr: SocketAddr, extensions: Option<&str>) -> Raw {
        let offer = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let (stream, buf, head) = common::raw::upgrade(addr, "/ws", &offer).await;
        let extensions = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-extensions: "))
            .map(str::to_owned);
        let mut raw = Raw {
            stream,
            buf,
            extensions,
        };
        assert_eq!(raw.recv().await["type"], "welcome");
        raw
    }

    /// Sends one masked frame with this first byte (FIN, RSV, opcode).
    async fn send(&mut self, first: u8, payload: &[u8]) {
        let mask = [1u8, 2, 3, 4];
        let mut frame = vec![first];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame).await.expect("write frame");
    }

    async fn send_json(&mut self, value: Value) {
        self.send(0x81, value.to_string().as_bytes()).await;
    }

    /// The next data or close frame (pings skipped).
    async fn frame(&mut self) -> RawFrame {
        loop {
            if let Some((frame, used)) = parse(&self.buf) {
                self.buf.drain(..used);
                if frame.first & 0x0f == 0x9 {
                    continue;
                }
                return frame;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout(STEP, self.stream.read(&mut chunk))
                .await
                .expect("a frame in time")
                .expect("read");
            assert!(n > 0, "the server closed without a close frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn recv(&mut self) -> Value {
        self.frame().await.json()
    }

    /// Reads until the server's close frame and returns its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            let frame = self.frame().await;
            if frame.first & 0x0f == 0x8 {
                return u16::from_be_bytes([frame.payload[0], frame.payload[1]]);
            }
        }
    }
}

/// One unmasked server frame from the front of `buf` and the bytes it used.
fn parse(buf: &[u8]) -> Option<(RawFrame, usize)> {
    let (len, at) = match *buf.get(1)? & 0x7f {
        126 => (
            u16::from_be_bytes(buf.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            u64::from_be_bytes(buf.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    let payload = buf.get(at..at + len)?.to_vec();
    Some((
        RawFrame {
            first: buf[0],
            payload,
        },
        at + len,
    ))
}

#[tokio::test]
async fn python_websockets_negotiates_deflate_and_reads_every_message() {
    within(60, async {
        let gw = start_with(|c| c.websocket.compression = true).await;
        let seen = python("deflate", &gw.ws_url()).await;
        assert_eq!(seen["extensions"], EXTENSIONS, "{seen}");
        assert_eq!(
            seen["plain_extensions"],
            Value::Null,
            "not offered, not used"
        );
        assert_eq!(seen["intact"], json!([true, true]));
        assert_eq!(seen["small"], json!(["hi", "hi"]));
        gw.stop().await;

        let off = start_with(|_| {}).await;
        let seen = python("deflate", &off.ws_url()).await;
        assert_eq!(seen["extensions"], Value::Null, "off by default");
        assert_eq!(seen["intact"], json!([true, true]));
        off.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_message_is_compressed_once_for_every_recipient_and_small_ones_go_plain() {
    within(30, async {
        let gw = start_with(|c| {
            c.websocket.compression = true;
            c.websocket.compression_threshold = 200;
        })
        .await;
        let mut a = Raw::connect(
            gw.public,
            Some("permessage-deflate; client_max_window_bits"),
        )
        .await;
        let mut b = Raw::connect(gw.public, Some("permessage-deflate")).await;
        let mut plain = Raw::connect(gw.public, None).await;
        assert_eq!(a.extensions.as_deref(), Some(EXTENSIONS));
        assert_eq!(plain.extensions, None);
        for c in [&mut a, &mut b, &mut plain] {
            c.send_json(json!({"type":"join","room":"z","id":1})).await;
            assert_eq!(c.recv().await["type"], "ok");
        }
        let text = "compress me ".repeat(100);
        let (status, _) = gw
            .post(
                "/v1/publish",
                &json!({"room":"z","data":text}).to_string(),
                None,
            )
            .await;
        assert_eq!(status, 202);
        let (fa, fb, fp) = (a.frame().await, b.frame().await, plain.frame().await);
        assert!(fa.compressed() && fb.compressed() && !fp.compressed());
        assert_eq!(fa.payload, fb.payload, "the same compressed bytes for both");
        assert!(
            fa.payload.len() * 5 < fp.payload.len(),
            "{} vs {}",
            fa.payload.len(),
            fp.payload.len()
        );
        assert_eq!(fa.json(), fp.json());
        assert_eq!(fa.json()["data"], text.as_str());
        // Under the threshold: plain for everyone.
        gw.post("/v1/publish", r#"{"room":"z","data":"tiny"}"#, None)
            .await;
        for c in [&mut a, &mut b, &mut plain] {
            let frame = c.frame().await;
            assert!(!frame.compressed());
            assert_eq!(frame.json()["data"], "tiny");
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn compressed_client_messages_are_inflated_whole_or_fragmented() {
    within(30, async {
        let gw = start_with(|c| c.websocket.compression = true).await;
        let mut c = Raw::connect(gw.public, Some("permessage-deflate")).await;
        c.send_json(json!({"type":"join","room":"f","id":1})).await;
        assert_eq!(c.recv().await["type"], "ok");
        let frame = json!({"type":"publish","room":"f","id":2,"data":"x".repeat(3000)}).to_string();
        let compressed = deflate::compress(frame.as_bytes()).unwrap();
        c.send(0xC1, &compressed).await;
        let mut got = [c.recv().await, c.recv().await];
        got.sort_by_key(|v| v["type"].to_string());
        assert_eq!(got[0]["data"].as_str().map(str::len), Some(3000));
        assert_eq!(got[1]["id"], 2);
        // RSV1 on the first frame only; the continuation carries the rest.
        let (head, tail) = compressed.split_at(compressed.len() / 2);
        c.send(0x41, head).await;
        c.send(0x80, tail).await;
        assert_eq!(c.recv().await["type"], "message");
        assert_eq!(c.recv().await["type"], "ok");
        // Uncompressed messages stay allowed.
        c.send_json(json!({"type":"ping","id":3})).await;
        assert_eq!(c.recv().await["id"], 3);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn decompression_bombs_close_1009_at_the_limit() {
    within(30, async {
        let gw = start_with(|c| {
            c.websocket.compression = true;
            c.limits.max_frame_bytes = 64 * 1024;
        })
        .await;
        // 32 MiB of zeros in about 32 KiB: refused long before it inflates.
        let mut bomb = b"{\"type\":\"publish\",\"room\":\"b\",\"data\":\"".to_vec();
        bomb.resize(32 * 1024 * 1024, b'0');
        let compressed = deflate::compress(&bomb).unwrap();
        drop(bomb);
        assert!(compressed.len() < 64 * 1024);
        // Compressed, it fits in frames under the limit; inflated it does not.
        let mut c = Raw::connect(gw.public, Some("permessage-deflate")).await;
        let chunk = compressed.len() / 4 + 1;
        let parts: Vec<&[u8]> = compressed.chunks(chunk).collect();
        for (i, part) in parts.iter().enumerate() {
            let fin = if i + 1 == parts.len() { 0x80 } else { 0 };
            let first = if i == 0 { 0x41 } else { 0 };
            c.send(fin | first, part).await;
        }
        assert_eq!(c.close_code().await, 1009);
        // One byte over the limit after inflating, in one small frame.
        let mut c = Raw::connect(gw.public, Some("permessage-deflate")).await;
        let over = vec![b' '; 64 * 1024 + 1];
        c.send(0xC1, &deflate::compress(&over).unwrap()).await;
        assert_eq!(c.close_code().await, 1009);
        // Exactly at the limit is fine (whitespace around a JSON frame).
        let mut c = Raw::connect(gw.public, Some("permessage-deflate")).await;
        let mut exact = br#"{"type":"ping","id":9}"#.to_vec();
        exact.resize(64 * 1024, b' ');
        c.send(0xC1, &deflate::compress(&exact).unwrap()).await;
        assert_eq!(c.recv().await["id"], 9);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rsv1_where_it_does_not_belong_is_a_protocol_error() {
    within(30, async {
        let gw = start_with(|c| c.websocket.compression = true).await;
        // Not negotiated (not offered).
        let mut c = Raw::connect(gw.public, None).await;
        c.send(0xC1, &deflate::compress(b"{}").unwrap()).await;
        assert_eq!(c.close_code().await, 1002);
        // On a continuation frame.
        let mut c = Raw::connect(gw.public, Some("permessage-deflate")).await;
        c.send(0x01, b"{\"type\":").await;
        c.send(0xC0, b"\"ping\"}").await;
        assert_eq!(c.close_code().await, 1002);
        // Compressed data that does not inflate.
        let mut c = Raw::connect(gw.public, Some("permessage-deflate")).await;
        c.send(0xC1, &[0xff; 32]).await;
        assert_eq!(c.close_code().await, 1002);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn python_msgpack_clients_exchange_binary_data_with_json_clients() {
    within(60, async {
        let gw = start_with(|c| c.websocket.compression = true).await;
        let seen = python("msgpack", &gw.ws_url()).await;
        assert_eq!(seen["subprotocol"], "roomcast.v1.msgpack", "{seen}");
        assert_eq!(seen["extensions"], EXTENSIONS);
        assert_eq!(seen["welcome"], "welcome");
        assert_eq!(seen["join"], json!({"type":"ok","id":1}));
        assert_eq!(seen["msgpack_gets_bytes"], true);
        assert_eq!(seen["json_gets_base64"], true);
        assert_eq!(seen["from_json"], json!({"from_json":[1,"two",null]}));
        assert_eq!(seen["bad"]["type"], "error");
        assert_eq!(seen["bad"]["code"], "bad_request");
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn python_msgpack_clients_get_binary_data_back_from_history_rooms() {
    within(60, async {
        let gw = start_with(|c| {
            c.namespaces = vec!["chat:history_size=10".parse().expect("spec")];
        })
        .await;
        let seen = python("msgpack_history", &gw.ws_url()).await;
        assert_eq!(
            seen,
            json!({"live": true, "history": [true], "replayed": true, "recovered": true})
        );
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn rust_msgpack_clients_get_binary_http_api_and_errors_in_msgpack() {
    within(30, async {
        let gw = start_with(|_| {}).await;
        let (mut mp, welcome) = MsgPackClient::connect(&gw.ws_url(), None).await;
        assert_eq!(welcome["node"], Mp::from("test-node"));
        let mut js = gw.client().await;
        mp.join("m").await;
        js.join("m").await;
        let data = map(vec![
            ("bin", Mp::Binary(vec![0, 159, 146, 150])),
            ("i", Mp::from(-7)),
            ("u", Mp::from(u64::MAX)),
            ("s", Mp::from("é")),
        ]);
        mp.send(&map(vec![
            ("type", "publish".into()),
            ("room", "m".into()),
            ("data", data.clone()),
        ]))
        .await;
        let mine = mp.recv().await;
        assert_eq!(mine["data"], data, "exactly as sent");
        assert_eq!(mine["room"], Mp::from("m"));
        let theirs = js.recv_type("message").await;
        assert_eq!(
            theirs["data"],
            json!({"bin":"AJ+Slg==","i":-7,"u":u64::MAX,"s":"é"})
        );
        // The HTTP API (JSON) reaches MessagePack clients value for value.
        gw.post(
            "/v1/publish",
            r#"{"room":"m","data":{"x":[1.5,null,true]}}"#,
            None,
        )
        .await;
        let api = mp.recv().await;
        assert_eq!(api["from"], Mp::Nil);
        assert_eq!(
            api["data"],
            map(vec![(
                "x",
                Mp::Array(vec![Mp::F64(1.5), Mp::Nil, Mp::Boolean(true)])
            )])
        );
        js.recv_type("message").await;
        // Contract errors come back in MessagePack, with the id.
        mp.send(&map(vec![
            ("type", "join".into()),
            ("room", "no good".into()),
            ("id", "q".into()),
        ]))
        .await;
        let err = mp.recv().await;
        assert_eq!(err["code"], Mp::from("invalid_room"));
        assert_eq!(err["id"], Mp::from("q"));
        mp.send(&map(vec![
            ("type", "publish".into()),
            ("room", "m".into()),
            ("data", Mp::Ext(5, vec![1])),
        ]))
        .await;
        assert_eq!(mp.recv().await["code"], Mp::from("bad_request"));
        mp.ws
            .send(Message::Text("{\"type\":\"ping\"}".into()))
            .await
            .unwrap();
        assert_eq!(mp.recv().await["code"], Mp::from("bad_request"));
        // A JSON client sending binary is told so, in JSON.
        js.send_message(Message::Binary(vec![0x80].into())).await;
        js.expect_error_without_id("bad_request").await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn binary_data_crosses_gateways_intact_for_msgpack_and_as_base64_for_json() {
    within(60, async {
        let server = nats::NatsServer::start().await;
        let gws = nats::gateways(vec![vec![server.url()]; 2]).await;
        let token = |user: &str| common::jwt::hs256(&common::jwt::claims(user));
        let (mut sender, _) = MsgPackClient::connect(&gws[0].ws_url(), Some(&token("ann"))).await;
        let (mut far, _) = MsgPackClient::connect(&gws[1].ws_url(), Some(&token("bob"))).await;
        let mut far_json = gws[1]
            .try_client(&Connect::bearer(&token("cy")))
            .await
            .unwrap();
        far.join("x").await;
        far_json.join("x").await;
        let blob = Mp::Binary((0..=255).collect());
        sender
            .send(&map(vec![
                ("type", "publish".into()),
                ("room", "x".into()),
                ("data", blob.clone()),
            ]))
            .await;
        let got = far.recv().await;
        assert_eq!(got["data"], blob);
        assert_eq!(got["from"], Mp::from("ann"));
        let got = far_json.recv_type("message").await;
        let expected = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode((0..=255).collect::<Vec<u8>>())
        };
        assert_eq!(got["data"], expected.as_str());
        // A direct message too.
        sender
            .send(&map(vec![
                ("type", "send".into()),
                ("to", "bob".into()),
                ("data", Mp::Binary(vec![1, 2])),
            ]))
            .await;
        let got = far.recv().await;
        assert_eq!(got["type"], Mp::from("direct"));
        assert_eq!(got["data"], Mp::Binary(vec![1, 2]));
        for gw in gws {
            gw.stop().await;
        }
    })
    .await;
}
