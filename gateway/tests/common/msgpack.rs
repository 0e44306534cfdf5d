//! A `roomcast.v1.msgpack` client (tokio-tungstenite, frames read with
//! rmpv) for the wire-format and history tests.

use futures_util::{SinkExt, StreamExt};
use rmpv::Value as Mp;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use base64::Engine as _;
use serde_json::json;

use super::fallback::Session;
use super::{Connect, STEP, TestGateway};

/// A `roomcast.v1.msgpack` client over tokio-tungstenite; every wait bounded by [`STEP`].
pub struct MsgPackClient {
    /// The connection itself, for frames the helpers do not send.
    pub ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
}

impl MsgPackClient {
    pub async fn connect(url: &str, token: Option<&str>) -> (MsgPackClient, Mp) {
        let mut req = url.into_client_request().expect("a ws URL");
        req.headers_mut().insert(
            "sec-websocket-protocol",
            HeaderValue::from_static("roomcast.v1.msgpack, roomcast.v1"),
        );
        if let Some(token) = token {
            req.headers_mut().insert(
                "authorization",
                HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value"),
            );
        }
        let (ws, resp) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(req))
            .await
            .expect("upgrade in time")
            .expect("upgrade");
        assert_eq!(
            resp.headers()["sec-websocket-protocol"],
            "roomcast.v1.msgpack",
            "the client's first choice"
        );
        let mut client = MsgPackClient { ws };
        let welcome = client.recv().await;
        assert_eq!(welcome["type"], Mp::from("welcome"));
        (client, welcome)
    }

    pub async fn send(&mut self, value: &Mp) {
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, value).expect("encodes into a Vec");
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    pub async fn recv(&mut self) -> Mp {
        loop {
            let msg = tokio::time::timeout(STEP, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("open")
                .expect("a frame");
            match msg {
                Message::Binary(bytes) => {
                    return rmpv::decode::read_value(&mut &bytes[..]).expect("MessagePack");
                }
                Message::Text(text) => panic!("text frame on a msgpack connection: {text}"),
                _ => continue,
            }
        }
    }

    /// Sends `frame` (which carries an `id`) and reads until the answer
    /// with that id: the frames before it (a join's replay, say) and the answer.
    pub async fn request(&mut self, frame: &Mp) -> (Vec<Mp>, Mp) {
        let id = frame["id"].clone();
        assert!(!id.is_nil(), "a request carries an id: {frame}");
        self.send(frame).await;
        let mut before = Vec::new();
        loop {
            let got = self.recv().await;
            if got["id"] == id && got["type"] != Mp::from("message") {
                return (before, got);
            }
            before.push(got);
        }
    }

    /// Joins a history room; the `ok`'s (offset, epoch).
    pub async fn join_at(&mut self, room: &str) -> (u64, String) {
        let (_, ok) = self
            .request(&map(vec![
                ("type", "join".into()),
                ("room", room.into()),
                ("id", 1.into()),
            ]))
            .await;
        position(&ok)
    }

    /// Joins a history room with `since`: the replay and the `ok`.
    pub async fn join_since(&mut self, room: &str, since: &(u64, String)) -> (Vec<Mp>, Mp) {
        let since = map(vec![
            ("offset", since.0.into()),
            ("epoch", since.1.as_str().into()),
        ]);
        self.request(&map(vec![
            ("type", "join".into()),
            ("room", room.into()),
            ("since", since),
            ("id", 3.into()),
        ]))
        .await
    }

    /// Publishes `data` to `room`; the answer.
    pub async fn publish(&mut self, room: &str, data: &Mp) -> Mp {
        let (_, ack) = self
            .request(&map(vec![
                ("type", "publish".into()),
                ("room", room.into()),
                ("data", data.clone()),
                ("id", 2.into()),
            ]))
            .await;
        assert_eq!(ack["type"], Mp::from("ok"), "{ack}");
        ack
    }

    /// The `data` of each message a `history` frame for `room` answers.
    pub async fn history(&mut self, room: &str) -> Vec<Mp> {
        let (_, answer) = self
            .request(&map(vec![
                ("type", "history".into()),
                ("room", room.into()),
                ("id", 4.into()),
            ]))
            .await;
        assert_eq!(answer["type"], Mp::from("ok"), "{answer}");
        answer["messages"].as_array().expect("messages").clone()
    }

    pub async fn join(&mut self, room: &str) {
        self.send(&map(vec![
            ("type", "join".into()),
            ("room", room.into()),
            ("id", 1.into()),
        ]))
        .await;
        let ok = self.recv().await;
        assert_eq!(ok["type"], Mp::from("ok"), "{ok}");
        assert_eq!(ok["id"], Mp::from(1));
    }
}

/// A MessagePack map with string keys, in order.
pub fn map(entries: Vec<(&str, Mp)>) -> Mp {
    Mp::Map(entries.into_iter().map(|(k, v)| (Mp::from(k), v)).collect())
}

/// Where a history room's message sits: (offset, epoch) of a MessagePack frame.
pub fn position(frame: &Mp) -> (u64, String) {
    (
        frame["offset"]
            .as_u64()
            .unwrap_or_else(|| panic!("an offset: {frame}")),
        frame["epoch"]
            .as_str()
            .unwrap_or_else(|| panic!("an epoch: {frame}"))
            .to_owned(),
    )
}

/// Binary `data` a MessagePack client publishes to the history room
/// `room` on `publish_at`, read on `read_at` by every kind of member:
/// MessagePack members get it byte for byte live, through recovery (`join`
/// with `since`) and in a `history` answer; JSON members (WebSocket, SSE,
/// long polling) and `GET /v1/history` get it with binary as base64.
/// `token` gives a user's token when the gateways want one; `api_key`
/// opens `GET /v1/history`.
pub async fn binary_survives_history_room(
    publish_at: &TestGateway,
    read_at: &TestGateway,
    room: &str,
    token: impl Fn(&str) -> Option<String>,
    api_key: Option<&str>,
) {
    let mp_url = read_at.ws_url();
    let (mut member, _) = MsgPackClient::connect(&mp_url, token("mia").as_deref()).await;
    let (start, epoch) = member.join_at(room).await;
    let mut json_member = match token("jo") {
        Some(t) => read_at
            .try_client(&Connect::bearer(&t))
            .await
            .expect("JSON member"),
        None => read_at.client().await,
    };
    json_member.join(room).await;
    let base = read_at.url("");
    let mut sse = Session::sse(&base, token("sam").as_deref()).await;
    let mut poll = Session::poll(&base, token("pol").as_deref()).await;
    for fallback in [&mut sse, &mut poll] {
        fallback.ok(json!({"type": "join", "room": room})).await;
    }

    let bytes: Vec<u8> = (0..=255).rev().collect();
    let data = map(vec![
        ("bin", Mp::Binary(bytes.clone())),
        (
            "nested",
            Mp::Array(vec![Mp::Binary(vec![0xc1]), Mp::from(-1), Mp::F64(0.5)]),
        ),
        ("s", "é".into()),
    ]);
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let as_json = json!({"bin": b64(&bytes), "nested": [b64(&[0xc1]), -1, 0.5], "s": "é"});
    let (mut publisher, sender) =
        MsgPackClient::connect(&publish_at.ws_url(), token("ann").as_deref()).await;
    let ack = publisher.publish(room, &data).await;
    let at = position(&ack);
    assert_eq!(at.1, epoch);
    assert!(at.0 > start);

    // Live.
    let live = member.recv().await;
    assert_eq!(live["type"], Mp::from("message"), "{live}");
    assert_eq!(live["data"], data, "live: byte for byte");
    assert_eq!(live["from"], sender["user"]);
    assert_eq!(position(&live), at);
    let m = json_member.recv_type("message").await;
    assert_eq!((&m["data"], &m["offset"]), (&as_json, &json!(at.0)), "{m}");
    for fallback in [&mut sse, &mut poll] {
        let m = fallback.recv_type("message").await;
        assert_eq!((&m["data"], &m["offset"]), (&as_json, &json!(at.0)), "{m}");
    }

    // Recovery: a MessagePack client joining with the position it had.
    let (mut back, _) = MsgPackClient::connect(&mp_url, token("mia").as_deref()).await;
    let (replay, ok) = back.join_since(room, &(start, epoch.clone())).await;
    assert_eq!(ok["recovered"], Mp::Boolean(true), "{ok}");
    assert_eq!(replay.len(), 1, "{replay:?}");
    assert_eq!(replay[0]["data"], data, "recovered: byte for byte");
    assert_eq!(position(&replay[0]), at);

    // The `history` frame: MessagePack byte for byte, JSON as base64.
    let kept = member.history(room).await;
    let last = kept.last().expect("the message is kept");
    assert_eq!(last["data"], data, "history: byte for byte");
    assert_eq!(last["offset"], Mp::from(at.0));
    assert_eq!(last["from"], sender["user"]);
    let answer = json_member
        .ok(json!({"type": "history", "room": room}))
        .await;
    assert_eq!(
        answer["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| &m["data"]),
        Some(&as_json)
    );
    let mut get = super::http().get(read_at.url(&format!("/v1/history?room={room}")));
    if let Some(key) = api_key {
        get = get.bearer_auth(key);
    }
    let body: serde_json::Value = get
        .send()
        .await
        .expect("GET /v1/history")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .map(|m| &m["data"]),
        Some(&as_json),
        "{body}"
    );
}
