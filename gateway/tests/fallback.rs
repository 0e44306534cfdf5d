//! The HTTP fallbacks on one gateway, with real HTTP clients: Server-Sent
//! Events and long polling end to end (join, publish, receive, presence,
//! ping, presence events), proxy headers and heartbeat comments, poll waits and expiry,
//! unknown sessions, bad bodies, JWT `sub` checks, Origin, and the closes
//! told as the last frame (drain 1012, slow consumer 4008, token expiry
//! 4001, a frame too big 1009).

mod common;

use std::time::Duration;

use common::fallback::{Session, poll_open_response, sse_response};
use common::{STEP, TestGateway, jwt, start_with, within};
use serde_json::{Value, json};

fn base(gw: &TestGateway) -> String {
    gw.url("")
}

/// A gateway with a short poll wait, so poll tests stay fast. Its sessions
/// expire only after a pause far longer than a loaded machine takes between
/// two polls of a test (with 1.5 s, a drain's close frame could expire
/// with its session before the test polled for it).
async fn gateway() -> TestGateway {
    start_with(|c| {
        c.polling.wait = Duration::from_millis(800);
        c.polling.expiry = Duration::from_secs(30);
    })
    .await
}

/// Join, publish (to itself and to a WebSocket member), receive from the
/// WebSocket member, presence and ping over one fallback session.
async fn protocol_end_to_end(gw: &TestGateway, mut session: Session) {
    let mut ws = gw.client().await;
    ws.join("fb").await;
    let joined = session.ok(json!({"type": "join", "room": "fb"})).await;
    assert_eq!(joined["type"], "ok");
    session
        .ok(json!({"type": "publish", "room": "fb", "data": {"n": 1}}))
        .await;
    let own = session.recv_type("message").await;
    assert_eq!(own["data"], json!({"n": 1}));
    assert_eq!(own["from"], session.user().as_str());
    let seen = ws.recv_type("message").await;
    assert_eq!(seen["data"], json!({"n": 1}));
    ws.send_json(json!({"type": "publish", "room": "fb", "data": "from ws"}))
        .await;
    let message = session.recv_type("message").await;
    assert_eq!(message["data"], "from ws");
    assert_eq!(message["from"], ws.user().as_str());
    let presence = session.ok(json!({"type": "presence", "room": "fb"})).await;
    let members = presence["members"].as_array().expect("members");
    assert!(members.contains(&json!(session.user())), "{presence}");
    assert!(members.contains(&json!(ws.user())), "{presence}");
    let ping = session.ok(json!({"type": "ping"})).await;
    assert!(ping["ts"].as_u64().is_some(), "{ping}");
    // Errors travel like any answer; a batch runs in order.
    session
        .send(json!([
            {"type": "join", "room": "bad room", "id": "e1"},
            {"type": "nope", "id": "e2"},
        ]))
        .await;
    let first = session.recv().await;
    assert_eq!(
        (&first["id"], &first["code"]),
        (&json!("e1"), &json!("invalid_room"))
    );
    let second = session.recv().await;
    assert_eq!(
        (&second["id"], &second["code"]),
        (&json!("e2"), &json!("bad_request"))
    );
    // A direct message to the fallback user.
    ws.send_json(json!({"type": "send", "to": session.user(), "data": 7}))
        .await;
    let direct = session.recv_type("direct").await;
    assert_eq!(direct["data"], 7);
    // Presence events (v1.1) travel like any frame.
    session
        .ok(json!({"type": "join", "room": "watched", "presence": true}))
        .await;
    let mut other = gw.client().await;
    other.join("watched").await;
    let joined = session.recv_type("joined").await;
    assert_eq!(joined["user"], other.user().as_str(), "{joined}");
}

#[tokio::test]
async fn sse_sessions_speak_the_whole_protocol_with_proxy_friendly_headers() {
    within(30, async {
        let gw = gateway().await;
        let response = sse_response(&base(&gw), None).await;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), "text/event-stream");
        assert_eq!(header("cache-control"), "no-cache");
        assert_eq!(header("x-accel-buffering"), "no");
        drop(response);
        let session = Session::sse(&base(&gw), None).await;
        assert_eq!(session.welcome["node"], "test-node");
        assert_eq!(session.id.len(), 64, "128 secret bits and more");
        assert_eq!(
            session.user(),
            session.id,
            "an anonymous client's user id is its session id"
        );
        protocol_end_to_end(&gw, session).await;
    })
    .await;
}

#[tokio::test]
async fn long_polling_sessions_speak_the_whole_protocol() {
    within(30, async {
        let gw = gateway().await;
        let session = Session::poll(&base(&gw), None).await;
        assert_eq!(session.welcome["heartbeat_ms"], 5_000);
        protocol_end_to_end(&gw, session).await;
    })
    .await;
}

#[tokio::test]
async fn sse_streams_carry_heartbeat_comments() {
    within(30, async {
        let gw = start_with(|c| c.heartbeat_ms = 200).await;
        let mut session = Session::sse(&base(&gw), None).await;
        session.wait_comments(3, STEP).await;
        // Still a live session after idling on comments alone.
        session.ok(json!({"type": "ping"})).await;
    })
    .await;
}

#[tokio::test]
async fn an_idle_poll_answers_an_empty_array_after_its_wait_and_an_unpolled_session_ends() {
    within(30, async {
        // A wait long enough that "at once" (below) has seconds of slack on
        // a loaded machine; a short expiry, waited out below.
        let wait = Duration::from_secs(3);
        let expiry = Duration::from_millis(1500);
        let gw = start_with(|c| {
            c.polling.wait = wait;
            c.polling.expiry = expiry;
        })
        .await;
        let session = Session::poll(&base(&gw), None).await;
        let started = tokio::time::Instant::now();
        let (status, answer) = session.poll_once_at(&base(&gw)).await;
        assert_eq!((status, answer), (200, json!([])));
        let waited = started.elapsed();
        assert!(
            waited >= wait - Duration::from_millis(100),
            "a poll waits while nothing comes: {waited:?}"
        );
        // A frame that arrives during a poll answers it at once.
        let waiting = {
            let base = base(&gw);
            let id = session.id.clone();
            tokio::spawn(async move {
                common::fallback::streaming()
                    .get(format!("{base}/poll/{id}"))
                    .send()
                    .await
                    .expect("poll")
                    .json::<Value>()
                    .await
                    .expect("JSON")
            })
        };
        // Sent while the poll waits, or just before it: either way it
        // answers at once, long before its wait is over.
        session.send(json!({"type": "ping", "id": 1})).await;
        let answer = tokio::time::timeout(wait * 2 / 3, waiting)
            .await
            .expect("answered before the wait is over")
            .expect("poll task");
        assert_eq!(answer[0]["id"], 1, "{answer}");
        // Not polled past the expiry: the session is gone.
        common::eventually(expiry + STEP, "the unpolled session ends", || async {
            let (status, _) = session
                .post_raw_to(&base(&gw), "{\"type\":\"ping\"}".into())
                .await;
            (status == 404).then_some(())
        })
        .await;
        let (status, answer) = session.poll_once_at(&base(&gw)).await;
        assert_eq!(status, 404, "{answer}");
        assert_eq!(answer["code"], "not_found");
    })
    .await;
}

#[tokio::test]
async fn unknown_sessions_are_404_and_bad_bodies_are_400_with_clear_errors() {
    within(30, async {
        let gw = gateway().await;
        let http = common::http();
        for id in ["nope", &"0".repeat(64), &"f".repeat(64)] {
            let poll = http
                .get(gw.url(&format!("/poll/{id}")))
                .send()
                .await
                .expect("poll");
            assert_eq!(poll.status(), 404, "{id}");
            let send = http
                .post(gw.url(&format!("/session/{id}")))
                .body("{\"type\":\"ping\"}")
                .send()
                .await
                .expect("send");
            assert_eq!(send.status(), 404, "{id}");
        }
        let mut session = Session::poll(&base(&gw), None).await;
        // A forged secret on a real index and route is just as unknown.
        let forged = format!(
            "{}{}",
            &session.id[..63],
            if session.id.ends_with('0') { '1' } else { '0' }
        );
        let status = http
            .get(gw.url(&format!("/poll/{forged}")))
            .send()
            .await
            .expect("poll")
            .status();
        assert_eq!(status, 404);
        let many = Value::Array(vec![json!({"type": "ping"}); 101]);
        let (status, answer) = session.post_raw_to(&base(&gw), many.to_string()).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["code"], "bad_request");
        assert!(
            answer["message"].as_str().unwrap().contains("at most 100"),
            "{answer}"
        );
        let (status, answer) = session.post_raw_to(&base(&gw), "not json".into()).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("bad_request")),
            "{answer}"
        );
        assert!(
            answer["message"].as_str().unwrap().contains("JSON"),
            "{answer}"
        );
        // A hundred is fine, and the session still works after the refusals.
        let hundred = Value::Array(vec![json!({"type": "ping"}); 100]);
        let (status, _) = session.post_raw_to(&base(&gw), hundred.to_string()).await;
        assert_eq!(status, 202);
        session.ok(json!({"type": "ping"})).await;
    })
    .await;
}

#[tokio::test]
async fn a_frame_over_the_limit_is_413_and_closes_the_session_with_1009() {
    within(30, async {
        let gw = start_with(|c| c.limits.max_frame_bytes = 1024).await;
        let mut session = Session::sse(&base(&gw), None).await;
        let big = json!({"type": "publish", "room": "r", "data": "x".repeat(2000)});
        let (status, answer) = session.post_raw_to(&base(&gw), big.to_string()).await;
        assert_eq!(
            (status, &answer["code"]),
            (413, &json!("payload_too_large")),
            "{answer}"
        );
        session.expect_close(1009).await;
    })
    .await;
}

#[tokio::test]
async fn with_jwt_requests_need_a_token_of_the_sessions_sub() {
    within(30, async {
        let gw = start_with(|c| c.auth.jwt_secret = Some(jwt::SECRET.into())).await;
        let (status, _) = poll_open_response(&base(&gw), None).await;
        assert_eq!(status, 401, "no token, no session");
        assert_eq!(sse_response(&base(&gw), Some("junk")).await.status(), 401);
        let alice = jwt::hs256(&jwt::claims("alice"));
        let mut session = Session::poll(&base(&gw), Some(&alice)).await;
        assert_eq!(session.user(), "alice");
        session.ok(json!({"type": "ping"})).await;
        let mut mallory = Session::poll(&base(&gw), Some(&alice)).await;
        mallory.id = session.id.clone();
        mallory.token = Some(jwt::hs256(&jwt::claims("mallory")));
        let (status, answer) = mallory.poll_once_at(&base(&gw)).await;
        assert_eq!(
            (status, &answer["code"]),
            (401, &json!("unauthorized")),
            "{answer}"
        );
        let (status, _) = mallory
            .post_raw_to(&base(&gw), "{\"type\":\"ping\"}".into())
            .await;
        assert_eq!(status, 401);
        mallory.token = None;
        let (status, _) = mallory.poll_once_at(&base(&gw)).await;
        assert_eq!(status, 401, "a token is required");
        // The token may come as the `token` query parameter too.
        let url = gw.url(&format!("/session/{}?token={alice}", session.id));
        let status = common::http()
            .post(url)
            .body("{\"type\":\"ping\",\"id\":\"q\"}")
            .send()
            .await
            .expect("send")
            .status();
        assert_eq!(status, 202);
        assert_eq!(session.recv().await["id"], "q");
    })
    .await;
}

#[tokio::test]
async fn an_expiring_token_ends_the_session_with_4001() {
    within(30, async {
        let gw = start_with(|c| c.auth.jwt_secret = Some(jwt::SECRET.into())).await;
        // At least 2 s to open the stream before it expires, loaded or not.
        let claims = json!({"sub": "brief", "exp": jwt::now() + 3});
        let mut session = Session::sse(&base(&gw), Some(&jwt::hs256(&claims))).await;
        let frames = session.expect_close(4001).await;
        assert_eq!(frames.len(), 1, "{frames:?}");
    })
    .await;
}

#[tokio::test]
async fn a_disallowed_origin_is_refused() {
    within(30, async {
        let gw = start_with(|c| c.auth.allowed_origins = vec!["https://good.example".into()]).await;
        let status = common::fallback::streaming()
            .get(gw.url("/sse"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .expect("sse")
            .status();
        assert_eq!(status, 403);
        let status = common::http()
            .post(gw.url("/poll"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .expect("poll")
            .status();
        assert_eq!(status, 403);
        let session = Session::poll(&base(&gw), None).await;
        let status = common::http()
            .get(gw.url(&format!("/poll/{}", session.id)))
            .header("origin", "https://evil.example")
            .send()
            .await
            .expect("poll")
            .status();
        assert_eq!(status, 403);
    })
    .await;
}

#[tokio::test]
async fn a_drain_closes_both_fallbacks_with_1012_as_their_last_frame() {
    within(30, async {
        let gw = gateway().await;
        let mut sse = Session::sse(&base(&gw), None).await;
        let mut poll = Session::poll(&base(&gw), None).await;
        gw.start_drain();
        sse.expect_close(1012).await;
        poll.expect_close(1012).await;
        assert_eq!(sse_response(&base(&gw), None).await.status(), 503);
        let (status, _) = poll_open_response(&base(&gw), None).await;
        assert_eq!(status, 503, "no new sessions while draining");
    })
    .await;
}

/// Publishes `n` messages of `size` bytes to `room` through the HTTP API.
async fn flood(gw: &TestGateway, room: &str, n: usize, size: usize) {
    let body = json!({"room": room, "data": "x".repeat(size)}).to_string();
    for _ in 0..n {
        let (status, answer) = gw.post("/v1/publish", &body, None).await;
        assert_eq!(status, 202, "{answer}");
    }
}

#[tokio::test]
async fn a_poller_that_falls_behind_is_closed_with_4008_as_its_last_frame() {
    within(60, async {
        let gw = start_with(|c| {
            c.polling.expiry = Duration::from_secs(30);
            c.limits.outbound_queue_frames = 8;
        })
        .await;
        let mut session = Session::poll(&base(&gw), None).await;
        session.ok(json!({"type": "join", "room": "flood"})).await;
        // A poll answer holds 256 KiB; eight more frames wait in the queue.
        flood(&gw, "flood", 30, 60_000).await;
        let frames = session.expect_close(4008).await;
        assert!(frames.len() < 30, "frames were dropped: {}", frames.len());
    })
    .await;
}

#[tokio::test]
async fn an_sse_reader_that_stops_reading_is_closed_with_4008_as_its_last_frame() {
    within(60, async {
        let gw = start_with(|c| {
            c.limits.outbound_queue_frames = 8;
            c.limits.slow_close_timeout_ms = 20_000;
        })
        .await;
        let mut session = Session::sse(&base(&gw), None).await;
        session.ok(json!({"type": "join", "room": "flood"})).await;
        // Far more than the socket buffers hold while the client reads nothing.
        flood(&gw, "flood", 600, 60_000).await;
        gw.wait_metric("roomcast_slow_consumer_closes_total", "", 1.0)
            .await;
        let frames = session.expect_close(4008).await;
        assert!(frames.len() < 600, "frames were dropped: {}", frames.len());
    })
    .await;
}
