//! Wire protocol v1 against an in-process gateway: welcome, subprotocol,
//! replies and ids, every client frame type, room-name rules and the
//! `bad_request` cases, each as the contract states it.

mod common;

use common::{Connect, STEP, start, start_with, within};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test]
async fn welcome_is_the_first_frame_with_session_user_node_and_heartbeat() {
    within(20, async {
        let gw = start_with(|c| c.heartbeat_ms = 4_321).await;
        let a = gw.client().await;
        let b = gw.client().await;
        for c in [&a, &b] {
            let w = &c.welcome;
            assert!(w["session"].as_str().is_some_and(|s| !s.is_empty()), "{w}");
            assert!(w["user"].is_string(), "{w}");
            assert_eq!(w["node"], "test-node", "{w}");
            assert_eq!(w["heartbeat_ms"], 4_321, "{w}");
        }
        assert_ne!(a.session(), b.session(), "sessions are distinct");
        // Without JWT every client is anonymous: its user id is its session id.
        assert_eq!(a.user(), a.session());
        assert_eq!(b.user(), b.session());
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn subprotocol_is_selected_when_offered_and_absent_otherwise() {
    within(20, async {
        let gw = start().await;
        let offered = Connect {
            subprotocol: Some("roomcast.v1".into()),
            ..Connect::default()
        };
        let mut with = gw
            .try_client(&offered)
            .await
            .expect("upgrade with roomcast.v1");
        assert_eq!(with.subprotocol.as_deref(), Some("roomcast.v1"));
        // Offered among others, it is still the one selected.
        let among = Connect {
            subprotocol: Some("chat.v2, roomcast.v1".into()),
            ..Connect::default()
        };
        let mut listed = gw
            .try_client(&among)
            .await
            .expect("upgrade offering chat.v2 and roomcast.v1");
        assert_eq!(listed.subprotocol.as_deref(), Some("roomcast.v1"));
        let mut without = gw.client().await;
        assert_eq!(without.subprotocol, None);
        // All speak the same JSON protocol.
        with.ok(json!({"type": "ping"})).await;
        listed.ok(json!({"type": "ping"})).await;
        without.ok(json!({"type": "ping"})).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn integer_and_string_ids_are_echoed_exactly() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        let ids = [
            json!(0),
            json!(42),
            json!(-7),
            json!(i64::MAX),
            json!(i64::MIN),
            json!(9_007_199_254_740_993_i64), // not representable as f64
            json!(""),
            json!("abc"),
            json!("42"),
            json!("x".repeat(64)),
            json!("é".repeat(32)), // 64 bytes, 32 characters
            json!("with \"quotes\" and \\ and \u{1F600}"),
        ];
        for id in ids {
            c.send_json(json!({"type": "ping", "id": id})).await;
            let reply = c.recv().await;
            assert_eq!(reply["type"], "ok", "ping {id}: {reply}");
            assert_eq!(reply["id"], id, "id echoed exactly");
            // Compare the literal too: 42 and "42" must not be conflated.
            assert_eq!(reply["id"].to_string(), id.to_string());
        }
        // Errors echo the id as well.
        for id in [json!(7), json!("seven")] {
            c.send_json(json!({"type": "nope", "id": id})).await;
            let reply = c.recv().await;
            assert_eq!(reply["type"], "error", "{reply}");
            assert_eq!(reply["code"], "bad_request", "{reply}");
            assert_eq!(reply["id"], id, "{reply}");
            common::check_error_shape(&reply);
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn every_frame_with_an_id_gets_exactly_one_reply() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        let frames = [
            json!({"type": "join", "room": "once"}),
            json!({"type": "join", "room": "once"}),
            json!({"type": "publish", "room": "once", "data": 1, "echo": false}),
            json!({"type": "send", "to": "nobody-here", "data": 1}),
            json!({"type": "presence", "room": "once"}),
            json!({"type": "ping"}),
            json!({"type": "leave", "room": "once"}),
            json!({"type": "join", "room": "a.b"}),
            json!({"type": "bogus"}),
        ];
        for (n, mut frame) in frames.into_iter().enumerate() {
            frame["id"] = json!(n);
            c.send_json(frame.clone()).await;
            let reply = c.recv().await;
            assert_eq!(reply["id"], json!(n), "first frame after {frame}: {reply}");
            assert!(reply["type"] == "ok" || reply["type"] == "error", "{reply}");
        }
        // No second reply to any of them is waiting.
        c.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn frames_without_id_get_no_ok_but_still_take_effect() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        c.send_json(json!({"type": "join", "room": "quiet"})).await;
        c.send_json(json!({"type": "ping"})).await;
        c.send_json(json!({"type": "publish", "room": "quiet", "data": "x", "echo": false}))
            .await;
        let reply = c.ok(json!({"type": "presence", "room": "quiet"})).await;
        assert_eq!(
            reply["members"],
            json!([c.user()]),
            "join without id took effect"
        );
        c.expect_quiet().await;
        c.send_json(json!({"type": "leave", "room": "quiet"})).await;
        let reply = c.ok(json!({"type": "presence", "room": "quiet"})).await;
        assert_eq!(reply["members"], json!([]), "leave without id took effect");
        c.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn errors_for_frames_without_id_carry_no_id() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        c.send_json(json!({"type": "join", "room": "bad room"}))
            .await;
        c.expect_error_without_id("invalid_room").await;
        c.send_json(json!({"type": "frobnicate"})).await;
        c.expect_error_without_id("bad_request").await;
        gw.stop().await;
    })
    .await;
}

/// Frames that must be answered with `bad_request`, sent as raw text.
const BAD_REQUESTS: &[(&str, &str)] = &[
    ("not JSON", "hello"),
    ("truncated JSON", r#"{"type":"ping""#),
    ("JSON array", r#"[{"type":"ping"}]"#),
    ("JSON string", r#""ping""#),
    ("JSON number", "17"),
    ("JSON null", "null"),
    ("missing type", r#"{"room":"r"}"#),
    ("numeric type", r#"{"type":5}"#),
    ("null type", r#"{"type":null}"#),
    ("unknown type", r#"{"type":"subscribe","room":"r"}"#),
    ("join without room", r#"{"type":"join"}"#),
    ("join with numeric room", r#"{"type":"join","room":5}"#),
    ("join with array room", r#"{"type":"join","room":["r"]}"#),
    ("leave without room", r#"{"type":"leave"}"#),
    ("presence without room", r#"{"type":"presence"}"#),
    ("publish without room", r#"{"type":"publish","data":1}"#),
    ("publish without data", r#"{"type":"publish","room":"r"}"#),
    (
        "publish with string echo",
        r#"{"type":"publish","room":"r","data":1,"echo":"no"}"#,
    ),
    ("send without to", r#"{"type":"send","data":1}"#),
    ("send without data", r#"{"type":"send","to":"u"}"#),
    ("send with numeric to", r#"{"type":"send","to":3,"data":1}"#),
];

#[tokio::test]
async fn malformed_frames_are_bad_request_and_the_connection_stays_usable() {
    within(30, async {
        let gw = start().await;
        let mut c = gw.client().await;
        for (what, text) in BAD_REQUESTS {
            c.send_text(text).await;
            let reply = c.recv().await;
            assert_eq!(reply["type"], "error", "{what}: {reply}");
            assert_eq!(reply["code"], "bad_request", "{what}: {reply}");
            common::check_error_shape(&reply);
            // Only frames that parse as an object can carry an id.
            assert!(reply.get("id").is_none(), "{what}: {reply}");
        }
        // The same field errors with an id: the error echoes it.
        let objects_with_type = BAD_REQUESTS.iter().filter_map(|(what, text)| {
            let frame = serde_json::from_str::<Value>(text).ok()?;
            frame["type"].is_string().then_some((what, frame))
        });
        for (what, mut frame) in objects_with_type {
            frame["id"] = json!(what);
            c.err(frame, "bad_request").await;
        }
        c.ok(json!({"type": "ping"})).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn mistyped_or_over_long_ids_are_bad_request() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        let bad_ids = [
            json!("x".repeat(65)),
            json!("é".repeat(33)), // 66 bytes, 33 characters: the limit is in bytes
            json!(true),
            json!({"n": 1}),
            json!([1]),
            json!(1.5),
        ];
        for id in bad_ids {
            c.send_json(json!({"type": "ping", "id": id})).await;
            let reply = c.recv().await;
            assert_eq!(reply["type"], "error", "ping with id {id}: {reply}");
            assert_eq!(reply["code"], "bad_request", "ping with id {id}: {reply}");
        }
        c.ok(json!({"type": "ping"})).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn binary_frames_are_bad_request_and_the_connection_stays_open() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        c.send_message(Message::binary(br#"{"type":"ping","id":1}"#.to_vec()))
            .await;
        c.expect_error_without_id("bad_request").await;
        c.ok(json!({"type": "ping"})).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_fields_are_ignored() {
    within(20, async {
        let gw = start().await;
        let mut a = gw.client().await;
        let mut b = gw.client().await;
        a.ok(json!({"type": "join", "room": "extra", "colour": "blue", "nested": {"x": [1]}}))
            .await;
        b.ok(json!({"type": "ping", "future_field": true})).await;
        b.ok(json!({"type": "publish", "room": "extra", "data": {"k": 1}, "priority": 9}))
            .await;
        let m = a.recv_type("message").await;
        assert_eq!(m["data"], json!({"k": 1}));
        let p = a
            .ok(json!({"type": "presence", "room": "extra", "verbose": 1}))
            .await;
        assert_eq!(p["members"], json!([a.user()]));
        gw.stop().await;
    })
    .await;
}

const INVALID_ROOMS: &[&str] = &[
    "", "a.b", "a*", "*", ">", "a.>", "a b", " a", "a\tb", "a\nb", "chat.*", "é", "a#b", "a?b",
    "a+b", "a%2Eb", "a,b", "\u{0000}",
];

fn valid_rooms() -> Vec<String> {
    vec![
        "a".into(),
        "Z".into(),
        "0".into(),
        "_".into(),
        "-".into(),
        ":".into(),
        "@".into(),
        "/".into(),
        "_:@/-".into(),
        "chat:lobby".into(),
        "user@example/inbox-1_b".into(),
        "x".repeat(128),
    ]
}

#[tokio::test]
async fn room_names_outside_the_pattern_are_invalid_room_everywhere() {
    within(30, async {
        let gw = start().await;
        let mut c = gw.client().await;
        let too_long = "x".repeat(129);
        let rooms = INVALID_ROOMS.iter().copied().chain([too_long.as_str()]);
        for room in rooms {
            for frame in [
                json!({"type": "join", "room": room}),
                json!({"type": "leave", "room": room}),
                json!({"type": "publish", "room": room, "data": 1}),
                json!({"type": "presence", "room": room}),
            ] {
                c.err(frame, "invalid_room").await;
            }
        }
        c.ok(json!({"type": "ping"})).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn room_names_inside_the_pattern_work() {
    within(30, async {
        let gw = start().await;
        let mut a = gw.client().await;
        let mut b = gw.client().await;
        for room in valid_rooms() {
            a.join(&room).await;
            b.ok(json!({"type": "publish", "room": room, "data": room}))
                .await;
            let m = a.recv_type("message").await;
            assert_eq!(m["room"], room.as_str(), "{m}");
            assert_eq!(m["data"], room.as_str(), "{m}");
            let p = a.ok(json!({"type": "presence", "room": room})).await;
            assert_eq!(p["members"], json!([a.user()]), "{room}");
            a.ok(json!({"type": "leave", "room": room})).await;
        }
        gw.stop().await;
    })
    .await;
}

/// The contract's rule, `^[A-Za-z0-9_:@/-]{1,128}$`, written out.
fn is_valid_room(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:@/-".contains(&b))
}

#[tokio::test]
async fn generated_room_names_are_judged_by_the_rule() {
    within(60, async {
        // Names near the length bound from the allowed alphabet, and names
        // mixing in bus syntax, whitespace and non-ASCII.
        let strategy = proptest::prop_oneof![
            "[A-Za-z0-9_:@/-]{0,3}",
            "[A-Za-z0-9_:@/-]{126,130}",
            "[A-Za-z0-9_:@/. *>#%\\t\\n\u{e9}\u{1F600}-]{0,12}",
            // Exactly one character outside the alphabet, among valid ones.
            "[A-Za-z0-9_:@/-]{0,4}[. *>#%,+?\\t\\n\u{e9}\u{1F600}][A-Za-z0-9_:@/-]{0,4}",
        ];
        let mut runner = TestRunner::deterministic();
        let names: Vec<String> = (0..400)
            .map(|_| {
                strategy
                    .new_tree(&mut runner)
                    .expect("generate a name")
                    .current()
            })
            .collect();
        assert!(names.iter().any(|n| is_valid_room(n)), "some valid names");
        assert!(
            names.iter().any(|n| !is_valid_room(n)),
            "some invalid names"
        );
        let gw = start().await;
        let mut c = gw.client().await;
        for name in names {
            let reply = c.request(json!({"type": "join", "room": name})).await;
            if is_valid_room(&name) {
                assert_eq!(reply["type"], "ok", "{name:?}: {reply}");
                c.ok(json!({"type": "leave", "room": name})).await;
            } else {
                assert_eq!(reply["code"], "invalid_room", "{name:?}: {reply}");
            }
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_normal_close_is_answered_with_1000() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        c.send_message(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await;
        assert_eq!(c.wait_close(STEP).await, Some(1000));
        gw.wait_metric("roomcast_connections", "", 0.0).await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_room_name_never_widens_a_subscription() {
    within(20, async {
        let gw = start().await;
        let mut watcher = gw.client().await;
        let mut publisher = gw.client().await;
        watcher.join("news").await;
        watcher.join("news:eu").await;
        for room in ["news:*", "news.*", "news.>", ">", "*"] {
            watcher
                .err(json!({"type": "join", "room": room}), "invalid_room")
                .await;
        }
        publisher
            .ok(json!({"type": "publish", "room": "news:us", "data": "us"}))
            .await;
        publisher
            .ok(json!({"type": "publish", "room": "news:eu", "data": "eu"}))
            .await;
        let m = watcher.recv_type("message").await;
        assert_eq!(
            m["room"], "news:eu",
            "only the exact room is delivered: {m}"
        );
        watcher.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn join_and_leave_are_idempotent() {
    within(20, async {
        let gw = start().await;
        let mut a = gw.client().await;
        let mut p = gw.client().await;
        a.join("idem").await;
        a.join("idem").await;
        let members = a.ok(json!({"type": "presence", "room": "idem"})).await;
        assert_eq!(members["members"], json!([a.user()]));
        p.ok(json!({"type": "publish", "room": "idem", "data": 1}))
            .await;
        let m = a.recv_type("message").await;
        assert_eq!(m["data"], 1);
        // Joined twice, delivered once.
        a.expect_quiet().await;
        a.ok(json!({"type": "leave", "room": "idem"})).await;
        a.ok(json!({"type": "leave", "room": "idem"})).await;
        a.ok(json!({"type": "leave", "room": "never-joined"})).await;
        p.ok(json!({"type": "publish", "room": "idem", "data": 2}))
            .await;
        // Left: nothing arrives.
        a.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn publish_reaches_every_member_with_room_from_and_data() {
    within(20, async {
        let gw = start().await;
        let mut members = Vec::new();
        for _ in 0..3 {
            let mut m = gw.client().await;
            m.join("lobby").await;
            members.push(m);
        }
        let mut outsider = gw.client().await;
        let mut sender = gw.client().await;
        let data = json!({"text": "hi", "n": [1, 2.5, null, true], "nested": {"a": "b"}});
        sender
            .ok(json!({"type": "publish", "room": "lobby", "data": data}))
            .await;
        for m in &mut members {
            let msg = m.recv_type("message").await;
            assert_eq!(msg["room"], "lobby");
            assert_eq!(msg["from"], sender.user().as_str());
            assert_eq!(msg["data"], data);
        }
        outsider.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn publish_data_may_be_any_json() {
    within(20, async {
        let gw = start().await;
        let mut a = gw.client().await;
        a.join("any").await;
        for data in [
            json!(null),
            json!(0),
            json!("s"),
            json!([]),
            json!({}),
            json!(false),
        ] {
            a.ok(json!({"type": "publish", "room": "any", "data": data}))
                .await;
            let m = a.recv_type("message").await;
            assert_eq!(m["data"], data, "{m}");
            assert!(m.get("data").is_some(), "data present even when null: {m}");
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn publish_echoes_to_a_joined_sender_unless_echo_is_false() {
    within(20, async {
        let gw = start().await;
        let mut s = gw.client().await;
        let mut other = gw.client().await;
        s.join("echo").await;
        other.join("echo").await;
        s.ok(json!({"type": "publish", "room": "echo", "data": "default"}))
            .await;
        s.ok(json!({"type": "publish", "room": "echo", "data": "no", "echo": false}))
            .await;
        s.ok(json!({"type": "publish", "room": "echo", "data": "yes", "echo": true}))
            .await;
        // Messages from one connection to one room arrive in order, so the
        // second message the sender sees must be "yes": "no" never came.
        let first = s.recv_type("message").await;
        let second = s.recv_type("message").await;
        assert_eq!(first["data"], "default", "echo defaults to true");
        assert_eq!(
            second["data"], "yes",
            "echo:false is not echoed, echo:true is"
        );
        assert_eq!(first["from"], s.user().as_str());
        // Other members get all three, in order.
        for want in ["default", "no", "yes"] {
            let m = other.recv_type("message").await;
            assert_eq!(m["data"], want);
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sender_need_not_have_joined_and_gets_no_echo() {
    within(20, async {
        let gw = start().await;
        let mut member = gw.client().await;
        let mut outsider = gw.client().await;
        member.join("open").await;
        outsider
            .ok(json!({"type": "publish", "room": "open", "data": "from outside"}))
            .await;
        let m = member.recv_type("message").await;
        assert_eq!(m["data"], "from outside");
        assert_eq!(m["from"], outsider.user().as_str());
        outsider.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn messages_from_one_connection_arrive_in_order() {
    within(30, async {
        let gw = start_with(|c| {
            c.limits.publish_rate_per_second = 100_000;
            c.limits.publish_burst = 100_000;
        })
        .await;
        let mut reader = gw.client().await;
        reader.join("ordered").await;
        let mut writer = gw.client().await;
        const N: u64 = 2_000;
        for n in 0..N {
            writer
                .send_json(json!({"type": "publish", "room": "ordered", "data": n}))
                .await;
        }
        for n in 0..N {
            let m = reader.recv_type("message").await;
            assert_eq!(m["data"], n, "message {n} in order, none lost");
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn send_reaches_the_user_as_direct() {
    within(20, async {
        let gw = start().await;
        let mut a = gw.client().await;
        let mut b = gw.client().await;
        let mut c = gw.client().await;
        let data = json!({"secret": [1, 2, 3]});
        a.ok(json!({"type": "send", "to": b.user(), "data": data}))
            .await;
        let d = b.recv_type("direct").await;
        assert_eq!(d["from"], a.user().as_str());
        assert_eq!(d["data"], data);
        c.expect_quiet().await;
        a.expect_quiet().await;
        // Sending to a user with no connection is not an error.
        a.ok(json!({"type": "send", "to": "no-such-user", "data": 1}))
            .await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn ping_answers_ok_with_server_time() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        let before = common::jwt::now() * 1000;
        let reply = c.ok(json!({"type": "ping"})).await;
        let after = common::jwt::now() * 1000 + 1000;
        let ts = reply["ts"].as_i64().expect("ok.ts is an integer");
        assert!(
            (before - 1000..=after).contains(&ts),
            "ts {ts} is ms since epoch, near [{before}, {after}]"
        );
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn presence_lists_joined_users() {
    within(20, async {
        let gw = start().await;
        let mut a = gw.client().await;
        let mut b = gw.client().await;
        let mut c = gw.client().await;
        let empty = c.ok(json!({"type": "presence", "room": "p"})).await;
        assert_eq!(empty["members"], json!([]));
        a.join("p").await;
        b.join("p").await;
        let reply = c.ok(json!({"type": "presence", "room": "p"})).await;
        let mut members: Vec<String> =
            serde_json::from_value(reply["members"].clone()).expect("members is a list of strings");
        members.sort();
        let mut want = vec![a.user(), b.user()];
        want.sort();
        assert_eq!(members, want);
        // A closed connection leaves its rooms.
        b.close().await;
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let r = c.ok(json!({"type": "presence", "room": "p"})).await;
            if r["members"] == json!([a.user()]) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "b still present: {r}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_connection_stays_usable_after_every_kind_of_error() {
    within(20, async {
        let gw = start().await;
        let mut c = gw.client().await;
        c.send_text("{{{").await;
        c.expect_error_without_id("bad_request").await;
        c.err(json!({"type": "join", "room": "no way"}), "invalid_room")
            .await;
        c.err(json!({"type": "teleport"}), "bad_request").await;
        c.join("after-errors").await;
        c.ok(json!({"type": "publish", "room": "after-errors", "data": "still here"}))
            .await;
        let m = c.recv_type("message").await;
        assert_eq!(m["data"], "still here");
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn demo_page_is_served_at_root() {
    within(20, async {
        let gw = start().await;
        let (status, ctype, body) = common::get(&gw.url("/")).await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/html"), "content-type {ctype}");
        assert!(body.contains("/ws"), "the demo page uses /ws");
        // The page's client (@roomcast/client, bundled) is served beside it, no CDN.
        assert!(
            body.contains(r#"<script src="/roomcast.js">"#),
            "the page loads /roomcast.js"
        );
        let (status, ctype, script) = common::get(&gw.url("/roomcast.js")).await;
        assert_eq!(status, 200);
        assert!(ctype.starts_with("text/javascript"), "content-type {ctype}");
        assert!(
            script.contains("RoomcastClient") && script.contains("/ws"),
            "the bundled client"
        );
        gw.stop().await;
    })
    .await;
}
