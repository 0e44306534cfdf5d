//! History, offsets and recovery (protocol v1.1) on one gateway with the
//! in-process bus and its in-memory store, over real WebSockets and HTTP:
//! offsets and epochs on messages, acks and join answers; `join` with
//! `since` (recovered, trimmed by size and by age, another epoch); the
//! `history` frame and `GET /v1/history`; `no_history`; rooms without
//! history unchanged; one order for every member with two publishers; a
//! replay racing live publishes; MessagePack binary data kept byte for byte.

mod common;

use std::collections::BTreeSet;

use common::{Client, STEP, TestGateway, get, http, position, start_with, within};
use roomcast_gateway::namespace::NamespaceSpec;
use serde_json::{Value, json};

const KEY: &str = "k3y";

async fn gateway(specs: &[&str]) -> TestGateway {
    let specs: Vec<NamespaceSpec> = specs.iter().map(|s| s.parse().expect("spec")).collect();
    start_with(|c| {
        c.namespaces = specs;
        c.auth.api_key = Some(KEY.into());
    })
    .await
}

/// Publishes `data` to `room` with an id; the `ok`'s (offset, epoch).
async fn publish(c: &mut Client, room: &str, data: Value) -> (u64, String) {
    let ok = c
        .ok(json!({"type": "publish", "room": room, "data": data}))
        .await;
    position(&ok)
}

/// The next `n` messages of `room`, as (offset, data).
async fn messages(c: &mut Client, room: &str, n: usize) -> Vec<(u64, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = c
            .recv_where("a message", |v| v["type"] == "message" && v["room"] == room)
            .await;
        out.push((m["offset"].as_u64().expect("offset"), m["data"].clone()));
    }
    out
}

/// Sends `n` publishes to `chat:race` without waiting for answers.
async fn burst(c: &mut Client, tag: &str, n: usize) {
    for i in 0..n {
        c.send_json(json!({"type": "publish", "room": "chat:race", "data": format!("{tag}{i}")}))
            .await;
    }
}

async fn http_history(gw: &TestGateway, query: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = http().get(gw.url(&format!("/v1/history?{query}")));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let resp = req.send().await.expect("GET /v1/history");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn messages_acks_and_joins_carry_offsets_and_epochs() {
    within(30, async {
        let gw = gateway(&["chat:history_size=10"]).await;
        let mut a = gw.client().await;
        let mut b = gw.client().await;
        let ok = a.ok(json!({"type": "join", "room": "chat:1"})).await;
        let (empty, epoch) = position(&ok);
        assert_eq!(empty, 0, "no message yet: offset 0");
        assert!(
            ok.get("recovered").is_none(),
            "no since, no recovered: {ok}"
        );
        b.join("chat:1").await;

        let (o1, e1) = publish(&mut a, "chat:1", json!("one")).await;
        assert!(o1 >= 1);
        assert_eq!(e1, epoch);
        let (status, body) = gw
            .post(
                "/v1/publish",
                &json!({"room": "chat:1", "data": "two"}).to_string(),
                Some(KEY),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        assert_eq!(body["ok"], true);
        let (o2, e2) = position(&body);
        assert!(o2 > o1);
        assert_eq!(e2, epoch);
        for c in [&mut a, &mut b] {
            let got = messages(c, "chat:1", 2).await;
            assert_eq!(got, [(o1, json!("one")), (o2, json!("two"))]);
        }
        let m = b.ok(json!({"type": "join", "room": "chat:1"})).await;
        assert_eq!(
            position(&m),
            (o2, epoch.clone()),
            "joined again: the position"
        );
        let mut c = gw.client().await;
        let ok = c.ok(json!({"type": "join", "room": "chat:1"})).await;
        assert_eq!(position(&ok), (o2, epoch.clone()));
        c.expect_quiet().await;

        // A room without history: v1 exactly.
        a.join("lobby").await;
        let ok = a
            .ok(json!({"type": "publish", "room": "lobby", "data": 1}))
            .await;
        assert!(
            ok.get("offset").is_none() && ok.get("epoch").is_none(),
            "{ok}"
        );
        let m = a.recv_type("message").await;
        assert!(m.get("offset").is_none() && m.get("epoch").is_none(), "{m}");
        let (status, body) = gw
            .post(
                "/v1/publish",
                &json!({"room": "lobby", "data": 2}).to_string(),
                Some(KEY),
            )
            .await;
        assert_eq!((status, body), (202, json!({"ok": true})));
        let ok = a
            .ok(json!({"type": "join", "room": "plain", "since": {"offset": 3, "epoch": "x"}}))
            .await;
        assert!(
            ok.get("offset").is_none() && ok.get("recovered").is_none(),
            "since ignored: {ok}"
        );
        a.err(json!({"type": "history", "room": "lobby"}), "no_history")
            .await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn join_with_since_replays_then_answers_recovered() {
    within(30, async {
        let gw = gateway(&["chat:history_size=5"]).await;
        let mut w = gw.client().await;
        let mut o = Vec::new();
        for i in 0..4 {
            o.push(publish(&mut w, "chat:r", json!(i)).await);
        }
        let epoch = o[0].1.clone();

        // Recovered: every message after since, in order, then the ok.
        let mut c = gw.client().await;
        let id = c.fresh_id();
        c.send_json(json!({"type": "join", "room": "chat:r", "id": id,
            "since": {"offset": o[1].0, "epoch": epoch}}))
            .await;
        for (offset, data) in [(o[2].0, json!(2)), (o[3].0, json!(3))] {
            let m = c.recv().await;
            assert_eq!(m["type"], "message", "replay before the ok: {m}");
            assert_eq!((m["offset"].as_u64(), &m["data"]), (Some(offset), &data));
            assert_eq!(m["epoch"], epoch.as_str());
        }
        let ok = c.recv().await;
        assert_eq!(ok["id"], id);
        assert_eq!(ok["recovered"], true, "{ok}");
        assert_eq!(position(&ok), (o[3].0, epoch.clone()));
        // Live messages follow.
        let next = publish(&mut w, "chat:r", json!(4)).await;
        assert_eq!(messages(&mut c, "chat:r", 1).await, [(next.0, json!(4))]);

        // Up to date: nothing replayed, recovered.
        let mut d = gw.client().await;
        let ok = d
            .ok(json!({"type": "join", "room": "chat:r", "since": {"offset": next.0, "epoch": epoch}}))
            .await;
        assert_eq!(ok["recovered"], true);
        d.expect_quiet().await;

        // Trimmed by size: 6 published, 5 kept; since 0 lost the first.
        let next = publish(&mut w, "chat:r", json!(5)).await;
        let mut e = gw.client().await;
        let ok = e
            .ok(json!({"type": "join", "room": "chat:r", "since": {"offset": 0, "epoch": epoch}}))
            .await;
        assert_eq!(ok["recovered"], false, "{ok}");
        assert_eq!(position(&ok), (next.0, epoch.clone()));
        e.expect_quiet().await;

        // Another epoch: nothing replayed, the room's position.
        let mut f = gw.client().await;
        let ok = f
            .ok(json!({"type": "join", "room": "chat:r", "since": {"offset": 1, "epoch": "other"}}))
            .await;
        assert_eq!(ok["recovered"], false);
        assert_eq!(position(&ok), (next.0, epoch.clone()));
        f.expect_quiet().await;

        // A malformed since is a bad request.
        f.err(json!({"type": "join", "room": "chat:x", "since": {"offset": -1, "epoch": "e"}}), "bad_request")
            .await;
        f.err(json!({"type": "join", "room": "chat:x", "since": 5}), "bad_request")
            .await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn messages_dropped_by_age_are_not_recovered() {
    within(30, async {
        let gw = gateway(&["ttl:history_size=10,history_ttl_seconds=1"]).await;
        let mut w = gw.client().await;
        let a = publish(&mut w, "ttl:1", json!("a")).await;
        let b = publish(&mut w, "ttl:1", json!("b")).await;
        // Both expire after a second: wait for the store to say so.
        common::eventually(STEP, "messages expired", || async {
            let mut probe = gw.client().await;
            let ok = probe.ok(json!({"type": "history", "room": "ttl:1"})).await;
            (ok["messages"].as_array().is_some_and(Vec::is_empty)).then_some(())
        })
        .await;
        let mut c = gw.client().await;
        let ok = c
            .ok(json!({"type": "join", "room": "ttl:1", "since": {"offset": a.0, "epoch": a.1}}))
            .await;
        assert_eq!(ok["recovered"], false, "b expired: {ok}");
        assert_eq!(ok["offset"], 0, "nothing kept");
        let mut d = gw.client().await;
        let ok = d
            .ok(json!({"type": "join", "room": "ttl:1", "since": {"offset": b.0, "epoch": b.1}}))
            .await;
        assert_eq!(ok["recovered"], true, "nothing after b was dropped: {ok}");
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn history_frame_and_http_history() {
    within(30, async {
        let gw = gateway(&["chat:history_size=200"]).await;
        let mut w = gw.client().await;
        let mut o = Vec::new();
        for i in 0..120 {
            o.push(publish(&mut w, "chat:h", json!({"i": i})).await.0);
        }
        let ok = w.ok(json!({"type": "history", "room": "chat:h"})).await;
        let got = ok["messages"].as_array().expect("messages");
        assert_eq!(got.len(), 100, "default and maximum limit");
        assert_eq!(got[0]["offset"].as_u64(), Some(o[20]), "the last 100, oldest first");
        assert_eq!(got[99]["data"], json!({"i": 119}));
        assert_eq!(got[0]["from"], w.user().as_str());
        assert_eq!(ok["offset"].as_u64(), Some(o[119]));
        let epoch = ok["epoch"].as_str().expect("epoch").to_owned();

        let ok = w
            .ok(json!({"type": "history", "room": "chat:h", "limit": 2, "since": {"offset": o[9], "epoch": epoch}}))
            .await;
        let data: Vec<&Value> = ok["messages"].as_array().unwrap().iter().map(|m| &m["data"]).collect();
        assert_eq!(data, [&json!({"i": 10}), &json!({"i": 11})], "the first 2 after since");
        w.err(json!({"type": "history", "room": "chat:h", "limit": 0}), "bad_request").await;
        w.err(json!({"type": "history", "room": "chat:h", "limit": 101}), "bad_request").await;
        w.err(json!({"type": "history", "room": "a b"}), "invalid_room").await;
        w.err(json!({"type": "history", "room": "lobby"}), "no_history").await;
        let ok = w.ok(json!({"type": "history", "room": "chat:empty"})).await;
        assert_eq!(ok["messages"], json!([]));
        assert_eq!(ok["offset"], 0);

        // The same over HTTP, behind the key.
        let (status, body) = http_history(&gw, "room=chat:h&limit=3", Some(KEY)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["messages"].as_array().map(Vec::len), Some(3));
        assert_eq!(body["messages"][2]["data"], json!({"i": 119}));
        assert!(body["messages"][2]["from"].is_string());
        assert_eq!(body["epoch"], epoch.as_str());
        assert!(body.get("type").is_none() && body.get("id").is_none());
        let (status, body) = http_history(
            &gw,
            &format!("room=chat:h&limit=1&since_offset={}&epoch={epoch}", o[0]),
            Some(KEY),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["messages"][0]["offset"].as_u64(), Some(o[1]));
        let (status, body) = http_history(&gw, "room=lobby", Some(KEY)).await;
        assert_eq!((status, &body["code"]), (400, &json!("no_history")), "{body}");
        let (status, _) = http_history(&gw, "room=chat:h", None).await;
        assert_eq!(status, 401);
        let (status, body) = http_history(&gw, "room=chat:h&limit=x", Some(KEY)).await;
        assert_eq!((status, &body["code"]), (400, &json!("bad_request")));
        let (status, body) = http_history(&gw, "limit=3", Some(KEY)).await;
        assert_eq!((status, &body["code"]), (400, &json!("bad_request")));
        let (status, _, _) = get(&gw.url("/v1/history?room=chat:h")).await;
        assert_eq!(status, 401);
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn two_publishers_one_order_and_no_echo() {
    within(30, async {
        let gw = gateway(&["chat:history_size=1000"]).await;
        let (mut p1, mut p2) = (gw.client().await, gw.client().await);
        let mut members = Vec::new();
        for _ in 0..3 {
            let mut m = gw.client().await;
            m.join("chat:race").await;
            members.push(m);
        }
        const N: usize = 100;
        tokio::join!(burst(&mut p1, "a", N), burst(&mut p2, "b", N));
        let mut orders = Vec::new();
        for m in &mut members {
            let got = messages(m, "chat:race", 2 * N).await;
            assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "offset order");
            orders.push(got);
        }
        assert!(
            orders.windows(2).all(|w| w[0] == w[1]),
            "one order for every member"
        );
        // Each publisher's own order is kept within it.
        for tag in ["a", "b"] {
            let own: Vec<String> = orders[0]
                .iter()
                .filter_map(|(_, d)| d.as_str().filter(|s| s.starts_with(tag)).map(str::to_owned))
                .collect();
            let want: Vec<String> = (0..N).map(|i| format!("{tag}{i}")).collect();
            assert_eq!(own, want);
        }

        // echo:false leaves the sender out, not the others.
        let mut s = gw.client().await;
        s.join("chat:race").await;
        let ok = s
            .ok(json!({"type": "publish", "room": "chat:race", "data": "quiet", "echo": false}))
            .await;
        let at = position(&ok).0;
        assert_eq!(
            messages(&mut members[0], "chat:race", 1).await,
            [(at, json!("quiet"))]
        );
        s.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_replay_racing_live_publishes_is_exactly_once_in_order() {
    within(60, async {
        let gw = gateway(&["chat:history_size=10000"]).await;
        let mut w = gw.client().await;
        let mut seen = Vec::new();
        for i in 0..50 {
            seen.push(publish(&mut w, "chat:live", json!(i)).await);
        }
        let (since, epoch) = seen[9].clone();
        // A publisher keeps going while clients join with since.
        let publisher = {
            let mut p = gw.client().await;
            tokio::spawn(async move {
                for i in 50..350 {
                    p.send_json(json!({"type": "publish", "room": "chat:live", "data": i}))
                        .await;
                }
                p
            })
        };
        let mut joiners = Vec::new();
        for _ in 0..4 {
            let mut c = gw.client().await;
            let id = c.fresh_id();
            c.send_json(json!({"type": "join", "room": "chat:live", "id": id,
                "since": {"offset": since, "epoch": epoch}}))
                .await;
            joiners.push((c, id));
        }
        let _p = publisher.await.expect("publisher");
        for (c, id) in &mut joiners {
            // Everything after since exactly once in order: 10..350.
            let mut data = Vec::new();
            let mut offsets = Vec::new();
            let mut ok = None;
            while data.len() < 340 || ok.is_none() {
                let f = c.recv().await;
                match f["type"].as_str() {
                    Some("message") => {
                        offsets.push(f["offset"].as_u64().expect("offset"));
                        data.push(f["data"].as_i64().expect("number"));
                    }
                    Some("ok") if f["id"] == *id => ok = Some(f),
                    other => panic!("unexpected {other:?}: {f}"),
                }
            }
            let ok = ok.expect("the ok came within the stream");
            assert_eq!(ok["recovered"], true);
            assert_eq!(data, (10..350).collect::<Vec<i64>>());
            assert!(offsets.windows(2).all(|w| w[0] < w[1]));
            let distinct: BTreeSet<u64> = offsets.iter().copied().collect();
            assert_eq!(distinct.len(), offsets.len());
            c.expect_quiet().await;
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn msgpack_binary_data_survives_the_in_process_store() {
    within(30, async {
        let gw = gateway(&["chat:history_size=10"]).await;
        common::msgpack::binary_survives_history_room(&gw, &gw, "chat:bin", |_| None, Some(KEY))
            .await;
        gw.stop().await;
    })
    .await;
}
