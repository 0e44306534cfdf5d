//! The protocol contract's clauses played with the parties on different
//! gateways. Each scenario takes already running gateways, so the same clause
//! is checked on one nats-server and on a routed NATS cluster with the
//! gateways attached to different nodes. Rooms are named per scenario, so
//! scenarios can share gateways.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{CLUSTER, Interest, TextClient, metric, raw_data, room_subject, user};
use crate::common::{Client, TestGateway};

/// A payload whose spelling any re-encoding would change: whitespace,
/// escapes, a surrogate pair, number forms and an integer beyond f64.
pub const ODD_DATA: &str = r#"{ "text" : "h\u00e9llo \ud83d\ude00 \"q\"\n", "n": [1.50, -0.0, 1e300, 9007199254740993], "o": {"a":null,"b":true} }"#;

/// Asserts `frame` is the `message` of `room` from `from` carrying `data`.
fn assert_message(frame: &Value, room: &str, from: Value, data: &Value) {
    assert_eq!(frame["type"], "message", "{frame}");
    assert_eq!(frame["room"], room, "{frame}");
    assert_eq!(frame["from"], from, "{frame}");
    assert_eq!(&frame["data"], data, "{frame}");
}

/// A publish on gateway `a` reaches members on gateway `b` with `from`,
/// `room` and `data` byte for byte, and every member on `b` gets it.
pub async fn publish_crosses_byte_exact(a: &TestGateway, b: &TestGateway) {
    let room = "cross-exact";
    let mut alice = user(a, "alice").await;
    let (mut bob, _) = TextClient::connect(b, "bob").await;
    bob.send(&format!(r#"{{"type":"join","room":"{room}","id":1}}"#))
        .await;
    let ok: Value = serde_json::from_str(&bob.recv().await).expect("JSON");
    assert_eq!(ok, json!({"type": "ok", "id": 1}));
    let mut carol = user(b, "carol").await;
    carol.join(room).await;

    let frame = format!(r#"{{"type":"publish","room":"{room}","data":{ODD_DATA},"id":"p"}}"#);
    alice.send_text(&frame).await;
    let reply = alice.reply_to(&json!("p")).await;
    assert_eq!(reply["type"], "ok", "{reply}");

    let text = bob.recv().await;
    let got: Value = serde_json::from_str(&text).expect("JSON");
    let data: Value = serde_json::from_str(ODD_DATA).expect("JSON");
    assert_message(&got, room, json!("alice"), &data);
    assert_eq!(raw_data(&text), ODD_DATA, "data crossed byte for byte");
    let got = carol.recv_type("message").await;
    assert_message(&got, room, json!("alice"), &data);
    carol.expect_quiet().await;
}

/// Echo rules with members on both gateways: the sender gets its echo unless
/// `echo` is false; everyone else always gets the message, once.
pub async fn echo_rules_hold(a: &TestGateway, b: &TestGateway) {
    let room = "cross-echo";
    let mut sender = user(a, "sender").await;
    let mut near = user(a, "near").await;
    let mut far = user(b, "far").await;
    for c in [&mut sender, &mut near, &mut far] {
        c.join(room).await;
    }
    let from = json!("sender");

    sender
        .ok(json!({"type": "publish", "room": room, "data": 1}))
        .await;
    sender
        .ok(json!({"type": "publish", "room": room, "data": 2, "echo": true}))
        .await;
    sender
        .ok(json!({"type": "publish", "room": room, "data": 3, "echo": false}))
        .await;
    for c in [&mut near, &mut far] {
        for n in [1, 2, 3] {
            let got = c.recv_type("message").await;
            assert_message(&got, room, from.clone(), &json!(n));
        }
        c.expect_quiet().await;
    }
    for n in [1, 2] {
        let got = sender.recv_type("message").await;
        assert_message(&got, room, from.clone(), &json!(n));
    }
    // `far` got message 3, so message 3 was delivered everywhere it would go.
    sender.expect_quiet().await;

    // A sender that has not joined, on the other gateway: members on both get it.
    let mut outsider = user(b, "outsider").await;
    outsider
        .ok(json!({"type": "publish", "room": room, "data": "x"}))
        .await;
    for c in [&mut sender, &mut near, &mut far] {
        let got = c.recv_type("message").await;
        assert_message(&got, room, json!("outsider"), &json!("x"));
    }
    outsider.expect_quiet().await;
}

/// After `leave`, a member on the other gateway gets nothing more from the
/// room, while one who stayed still does.
pub async fn leave_stops_delivery(a: &TestGateway, b: &TestGateway) {
    let room = "cross-leave";
    let mut publisher = user(a, "pub").await;
    let mut leaver = user(b, "leaver").await;
    let mut stayer = user(b, "stayer").await;
    leaver.join(room).await;
    stayer.join(room).await;
    publisher
        .ok(json!({"type": "publish", "room": room, "data": "before"}))
        .await;
    for c in [&mut leaver, &mut stayer] {
        let got = c.recv_type("message").await;
        assert_eq!(got["data"], "before", "{got}");
    }
    leaver.ok(json!({"type": "leave", "room": room})).await;
    publisher
        .ok(json!({"type": "publish", "room": room, "data": "after"}))
        .await;
    let got = stayer.recv_type("message").await;
    assert_eq!(got["data"], "after", "{got}");
    // The same NATS message was fanned out to `stayer`: `leaver` would have it by now.
    leaver.expect_quiet().await;
    // Leaving a room not joined (any more) is a success.
    leaver.ok(json!({"type": "leave", "room": room})).await;
}

/// `send` (WebSocket and HTTP API) reaches every connection of the user on
/// every gateway, and nobody else; a user id that would be a NATS wildcard
/// addresses only a user of exactly that name.
pub async fn send_reaches_every_connection(a: &TestGateway, b: &TestGateway) {
    let mut bob = user(a, "bob").await;
    let mut alice_a = user(a, "alice").await;
    let mut alice_b1 = user(b, "alice").await;
    let mut alice_b2 = user(b, "alice").await;
    let mut other = user(b, "other").await;

    bob.ok(json!({"type": "send", "to": "alice", "data": {"k": [1, "x"]}}))
        .await;
    for c in [&mut alice_a, &mut alice_b1, &mut alice_b2] {
        let got = c.recv_type("direct").await;
        assert_eq!(got["from"], "bob", "{got}");
        assert_eq!(got["data"], json!({"k": [1, "x"]}), "{got}");
        c.expect_quiet().await;
    }
    bob.expect_quiet().await;

    let (status, body) = b
        .post(
            "/v1/send",
            &json!({"to": "alice", "data": "from backend"}).to_string(),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    for c in [&mut alice_a, &mut alice_b1, &mut alice_b2] {
        let got = c.recv_type("direct").await;
        assert_eq!(got["from"], Value::Null, "{got}");
        assert_eq!(got["data"], "from backend", "{got}");
    }

    // Wildcard-looking user ids are just names: nobody named so is connected.
    for to in ["*", ">", "alice.*", "t1.user.*"] {
        bob.ok(json!({"type": "send", "to": to, "data": "nobody"}))
            .await;
    }
    for c in [&mut alice_a, &mut alice_b1, &mut alice_b2, &mut other] {
        c.expect_quiet().await;
    }
}

/// Presence from any gateway lists the distinct members across all of them:
/// a user on two gateways once, non-members never; a leave shows.
pub async fn presence_is_distinct_across_gateways(gws: &[&TestGateway]) {
    assert!(gws.len() >= 2, "presence needs two gateways");
    let room = "cross-presence";
    let mut members = Vec::new();
    // "dup" is joined on the first two gateways, "m<i>" on each gateway.
    for (i, gw) in gws.iter().enumerate() {
        let mut c = user(gw, &format!("m{i}")).await;
        c.join(room).await;
        members.push(c);
    }
    for gw in &gws[..2] {
        let mut c = user(gw, "dup").await;
        c.join(room).await;
        members.push(c);
    }
    let mut onlooker = user(gws[gws.len() - 1], "onlooker").await;
    let mut expected: Vec<String> = (0..gws.len()).map(|i| format!("m{i}")).collect();
    expected.push("dup".into());
    expected.sort();
    for gw in gws {
        let mut asker = user(gw, "asker").await;
        assert_eq!(
            presence(&mut asker, room).await,
            expected,
            "asked on {}",
            gw.config.node_name
        );
    }
    assert_eq!(presence(&mut onlooker, room).await, expected);
    // One of dup's two connections leaves: dup is still a member.
    members[gws.len()]
        .ok(json!({"type": "leave", "room": room}))
        .await;
    assert_eq!(presence(&mut onlooker, room).await, expected);
    // m0 leaves: gone from every answer.
    members[0].ok(json!({"type": "leave", "room": room})).await;
    expected.retain(|m| m != "m0");
    assert_eq!(presence(&mut onlooker, room).await, expected);
    assert_eq!(
        presence(&mut members[1], "cross-empty").await,
        Vec::<String>::new()
    );
}

/// The sorted `members` of a presence answer, with no duplicates allowed.
pub async fn presence(c: &mut Client, room: &str) -> Vec<String> {
    let reply = c.ok(json!({"type": "presence", "room": room})).await;
    let mut members: Vec<String> = reply["members"]
        .as_array()
        .unwrap_or_else(|| panic!("presence without members: {reply}"))
        .iter()
        .map(|m| m.as_str().expect("member ids are strings").to_owned())
        .collect();
    let listed = members.len();
    members.sort();
    members.dedup();
    assert_eq!(members.len(), listed, "duplicate members in {reply}");
    members
}

/// `POST /v1/publish` on `a` reaches members on `b` (and on `a`) with `from`
/// null and `data` byte for byte.
pub async fn http_publish_crosses(a: &TestGateway, b: &TestGateway) {
    let room = "cross-http";
    let (mut far, _) = TextClient::connect(b, "far").await;
    far.send(&format!(r#"{{"type":"join","room":"{room}","id":1}}"#))
        .await;
    assert!(far.recv().await.contains(r#""ok""#));
    let mut near = user(a, "near").await;
    near.join(room).await;
    let body = format!(r#"{{"room":"{room}","data":{ODD_DATA}}}"#);
    let (status, reply) = a.post("/v1/publish", &body, None).await;
    assert_eq!(status, 202, "{reply}");
    assert_eq!(reply, json!({"ok": true}));
    let text = far.recv().await;
    let got: Value = serde_json::from_str(&text).expect("JSON");
    let data: Value = serde_json::from_str(ODD_DATA).expect("JSON");
    assert_message(&got, room, Value::Null, &data);
    assert_eq!(raw_data(&text), ODD_DATA, "data crossed byte for byte");
    let got = near.recv_type("message").await;
    assert_message(&got, room, Value::Null, &data);
}

/// The moment a join's `ok` arrives, a publish from another gateway reaches
/// the new member, every time (fresh rooms, so every join subscribes anew).
pub async fn join_ok_then_publish_elsewhere_arrives(
    subscriber_gw: &TestGateway,
    publisher_gw: &TestGateway,
    rounds: usize,
) {
    let mut subscriber = user(subscriber_gw, "subscriber").await;
    let mut publisher = user(publisher_gw, "publisher").await;
    for round in 0..rounds {
        let room = format!("fresh-{round}");
        subscriber.join(&room).await;
        publisher
            .ok(json!({"type": "publish", "room": room, "data": round}))
            .await;
        let got = subscriber.recv_type("message").await;
        assert_message(&got, &room, json!("publisher"), &json!(round));
    }
    subscriber.expect_quiet().await;
}

/// Concurrent publishers, one per gateway, each publishing `n` numbered
/// messages: every member on every gateway (publishers included, by echo)
/// sees each publisher's messages in order, none lost, none twice.
pub async fn concurrent_publishers_keep_order(gws: &[&TestGateway], n: u64) {
    let room = "cross-order";
    let mut publishers = Vec::new();
    let mut readers = Vec::new();
    for (i, gw) in gws.iter().enumerate() {
        let mut p = user(gw, &format!("p{i}")).await;
        p.join(room).await;
        publishers.push(p);
        let mut r = user(gw, &format!("r{i}")).await;
        r.join(room).await;
        readers.push(r);
    }
    let expected = gws.len() as u64 * n;
    let mut tasks = Vec::new();
    for (i, mut p) in publishers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for seq in 0..n {
                // No id: the publisher does not wait for replies, so the
                // publishers really race; any error would arrive unsolicited.
                p.send_json(json!({"type": "publish", "room": room, "data": {"p": i, "seq": seq}}))
                    .await;
            }
            (format!("p{i}"), collect_sequences(&mut p, expected).await)
        }));
    }
    for (i, mut r) in readers.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            (format!("r{i}"), collect_sequences(&mut r, expected).await)
        }));
    }
    let want: Vec<u64> = (0..n).collect();
    for task in tasks {
        let (who, seen) = task.await.expect("collector task");
        assert_eq!(seen.len(), gws.len(), "{who} heard every publisher");
        for (from, seqs) in seen {
            assert_eq!(seqs, want, "{who}: messages of {from} in order, once each");
        }
    }
}

/// Reads `count` messages and groups their sequence numbers by sender.
async fn collect_sequences(c: &mut Client, count: u64) -> BTreeMap<String, Vec<u64>> {
    let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..count {
        let got = c.recv().await;
        assert_eq!(got["type"], "message", "only messages expected: {got}");
        let from = got["from"].as_str().expect("from").to_owned();
        let seq = got["data"]["seq"].as_u64().expect("seq");
        seen.entry(from).or_default().push(seq);
    }
    c.expect_quiet().await;
    seen
}

/// Interest-based routing with three gateways: only gateways with a local
/// member subscribe to a room; one NATS publish per client publish; each
/// receiving gateway gets each message once however many members it has;
/// a gateway without members gets none; the last leave or disconnect
/// unsubscribes.
pub async fn interest_follows_local_members(
    a: &TestGateway,
    b: &TestGateway,
    c: &TestGateway,
    nats: &impl Interest,
) {
    let room = "cross-interest";
    let subject = room_subject(CLUSTER, room);
    let mut pubr = user(a, "pub").await;
    let mut b1 = user(b, "b1").await;
    let mut b2 = user(b, "b2").await;
    // C hosts a user in another room: it is connected and subscribed, just not here.
    let mut bystander = user(c, "bystander").await;
    bystander.join("cross-elsewhere").await;
    assert_eq!(nats.subscribers(&subject).await, 0, "no member yet");

    // Subscriptions of b: one per local user (b1, b2), one per hosted room.
    assert_eq!(metric(b, "roomcast_bus_subscriptions").await, 2.0);
    b1.join(room).await;
    // The ok came after the server confirmed the subscription: it shows now.
    assert_eq!(nats.subscribers(&subject).await, 1, "b subscribed");
    assert_eq!(metric(b, "roomcast_bus_subscriptions").await, 3.0);
    b2.join(room).await;
    assert_eq!(nats.subscribers(&subject).await, 1, "still one for b");

    let messages: u64 = 20;
    let a_out = metric(a, "roomcast_bus_messages_out_total").await;
    let b_in = metric(b, "roomcast_bus_messages_in_total").await;
    let c_in = metric(c, "roomcast_bus_messages_in_total").await;
    for i in 0..messages {
        pubr.ok(json!({"type": "publish", "room": room, "data": i}))
            .await;
    }
    for m in [&mut b1, &mut b2] {
        for i in 0..messages {
            let got = m.recv_type("message").await;
            assert_eq!(got["data"], i, "{got}");
        }
    }
    let n = messages as f64;
    assert_eq!(
        metric(a, "roomcast_bus_messages_out_total").await - a_out,
        n,
        "one NATS publish per client publish"
    );
    assert_eq!(
        metric(b, "roomcast_bus_messages_in_total").await - b_in,
        n,
        "b received each message once for its two members"
    );
    assert_eq!(
        metric(c, "roomcast_bus_messages_in_total").await - c_in,
        0.0,
        "c hosts no member of the room and received none of its traffic"
    );
    bystander.expect_quiet().await;

    // The publisher is no member: a has no subscription either.
    assert_eq!(nats.subscribers(&subject).await, 1, "only b is subscribed");
    b1.ok(json!({"type": "leave", "room": room})).await;
    assert_eq!(nats.subscribers(&subject).await, 1, "b2 is still a member");
    // The last local member disconnects: b unsubscribes.
    b2.close().await;
    super::eventually_count(nats, &subject, 0).await;
    assert_eq!(
        metric(b, "roomcast_bus_subscriptions").await,
        1.0,
        "b keeps only b1's user subscription"
    );
    // Rejoining subscribes again, and the room works.
    b1.join(room).await;
    assert_eq!(nats.subscribers(&subject).await, 1);
    pubr.ok(json!({"type": "publish", "room": room, "data": "again"}))
        .await;
    let got = b1.recv_type("message").await;
    assert_eq!(got["data"], "again", "{got}");
}

/// Room names that would be NATS wildcards or separators are `invalid_room`
/// on every path and never change any gateway's subscriptions.
pub async fn wildcard_rooms_are_rejected(a: &TestGateway, b: &TestGateway, nats: &impl Interest) {
    let mut c = user(a, "prober").await;
    let mut member = user(b, "member").await;
    member.join("a").await;
    let before = namespaced(nats.subjects().await);
    let bad = [
        "a.b",
        "*",
        ">",
        "a.*",
        "a.>",
        "a b",
        "a\tb",
        "a\r\nb",
        "",
        ".",
        "a.",
        "t1.room.a",
    ];
    for room in bad {
        c.err(json!({"type": "join", "room": room}), "invalid_room")
            .await;
        c.err(
            json!({"type": "publish", "room": room, "data": "x"}),
            "invalid_room",
        )
        .await;
        c.err(json!({"type": "presence", "room": room}), "invalid_room")
            .await;
        c.err(json!({"type": "leave", "room": room}), "invalid_room")
            .await;
        let (status, body) = a
            .post(
                "/v1/publish",
                &json!({"room": room, "data": "x"}).to_string(),
                None,
            )
            .await;
        assert_eq!(status, 400, "HTTP publish to {room:?}: {body}");
        assert_eq!(body["code"], "invalid_room", "HTTP publish to {room:?}");
    }
    let after = nats.subjects().await;
    assert_eq!(namespaced(after.clone()), before, "no subscription changed");
    // The only wildcard subscriptions are the NATS client's reply inboxes
    // and each gateway's one subscription to direct messages.
    let wild: Vec<&String> = after
        .iter()
        .filter(|s| (s.contains('*') || s.contains('>')) && !s.starts_with("_INBOX."))
        .filter(|s| !s.ends_with(".user.>"))
        .collect();
    assert!(wild.is_empty(), "wildcard subscriptions: {wild:?}");
    // Nothing leaked into room "a", whose subject the bad names resemble.
    member.expect_quiet().await;
    // The probe can see a change: a valid join does subscribe.
    c.join("a-b").await;
    let after = nats.subjects().await;
    assert!(
        after.contains(&room_subject(CLUSTER, "a-b")),
        "a valid join subscribes: {after:?}"
    );
}

/// The subjects in the gateways' namespace (the NATS client's own `_INBOX`
/// subscription comes and goes with its first request).
fn namespaced(mut subjects: Vec<String>) -> Vec<String> {
    subjects.retain(|s| s.starts_with(&format!("{CLUSTER}.")));
    subjects
}

/// A join's `ok` must wait for the NATS server to have the subscription:
/// while the server is frozen (it accepts bytes but processes nothing) a
/// join may wait or answer `unavailable`, never `ok`. Once it thaws, the join
/// succeeds and a publish from the other gateway arrives.
pub async fn join_ok_needs_the_server(
    subscriber_gw: &TestGateway,
    publisher_gw: &TestGateway,
    server: &super::NatsServer,
) {
    let mut subscriber = user(subscriber_gw, "subscriber").await;
    let mut publisher = user(publisher_gw, "publisher").await;
    {
        let frozen = server.freeze();
        let asked = std::time::Instant::now();
        let reply = subscriber
            .request(json!({"type": "join", "room": "frozen"}))
            .await;
        assert_eq!(
            reply["type"],
            "error",
            "join answered {reply} after {:?} while nats-server (all threads stopped: {}) could not have processed the SUB",
            asked.elapsed(),
            frozen.all_threads_stopped()
        );
        assert_eq!(reply["code"], "unavailable", "{reply}");
    }
    subscriber.join("frozen").await;
    publisher
        .ok(json!({"type": "publish", "room": "frozen", "data": "thawed"}))
        .await;
    let got = subscriber.recv_type("message").await;
    assert_message(&got, "frozen", json!("publisher"), &json!("thawed"));
}
