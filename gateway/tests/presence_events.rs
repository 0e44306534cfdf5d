//! Presence events (protocol v1.1, "Presence events") against real gateways:
//! one gateway alone, two gateways on a real nats-server, a gateway binary
//! killed with SIGKILL and started again, and a nats-server that dies and
//! comes back. Per user, not per connection (three tabs are one `joined` and
//! one `left`), never about the watcher's own user, `forbidden` where the
//! namespace turns them off, and what a join costs on the bus.
//!
//! "No event" is proved by order, never by waiting: reports from one gateway
//! arrive in order, so when a later change's event is the next one a watcher
//! gets, nothing came in between.

mod common;
mod nats;

use std::time::Duration;

use common::binary::{self, Process};
use common::{Client, Connect, STEP, TestGateway, eventually, http, jwt, within};
use nats::scenarios::presence;
use nats::{
    NatsServer, discover, eventually_count, gateway, gateway_with, metric, token, user, wait_ready,
};
use roomcast_gateway::namespace::NamespaceSpec;
use serde_json::{Value, json};

const KEY: &str = "presence-test-key";

/// Joins `room` asking for presence events.
async fn watch(c: &mut Client, room: &str) {
    c.ok(json!({"type": "join", "room": room, "presence": true}))
        .await;
}

fn joined(user: &str) -> (String, String) {
    ("joined".into(), user.into())
}

fn left(user: &str) -> (String, String) {
    ("left".into(), user.into())
}

/// The next `joined`/`left` frame `c` receives within `limit`, as (type,
/// user); its room must be `room`. Other frames are kept for later reads.
async fn next_event_within(c: &mut Client, room: &str, limit: Duration) -> (String, String) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut skipped = Vec::new();
    let event = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.try_recv(left).await {
            Some(v) if v["type"] == "joined" || v["type"] == "left" => break v,
            Some(v) => skipped.push(v),
            None => panic!("no presence event within {limit:?}; got instead {skipped:?}"),
        }
    };
    c.unread(skipped);
    assert_eq!(event["room"], room, "{event}");
    assert_eq!(
        event.as_object().map(|o| o.len()),
        Some(3),
        "exactly type, room, user: {event}"
    );
    (
        event["type"].as_str().expect("type").to_owned(),
        event["user"].as_str().expect("user is a string").to_owned(),
    )
}

async fn next_event(c: &mut Client, room: &str) -> (String, String) {
    next_event_within(c, room, STEP).await
}

/// `GET /v1/presence?room=R` with the API key: the sorted members.
async fn api_members(public: std::net::SocketAddr, room: &str) -> Vec<String> {
    let resp = http()
        .get(format!("http://{public}/v1/presence?room={room}"))
        .bearer_auth(KEY)
        .send()
        .await
        .expect("GET /v1/presence");
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("JSON body");
    let mut members: Vec<String> = body["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members in {body}"))
        .iter()
        .map(|m| m.as_str().expect("string ids").to_owned())
        .collect();
    members.sort();
    members
}

async fn single() -> TestGateway {
    common::start_with(|c| {
        c.auth.jwt_secret = Some(jwt::SECRET.into());
        c.auth.api_key = Some(KEY.into());
        c.namespaces = vec![NamespaceSpec::parse("quiet:presence_events=false").expect("spec")];
    })
    .await
}

#[tokio::test]
async fn three_tabs_of_one_user_are_one_joined_and_one_left_on_one_gateway() {
    within(60, async {
        let gw = single().await;
        let room = "lobby";
        let mut w = user(&gw, "watcher").await;
        watch(&mut w, room).await;
        let mut tabs = Vec::new();
        for _ in 0..3 {
            let mut tab = user(&gw, "alice").await;
            tab.join(room).await;
            tabs.push(tab);
        }
        assert_eq!(next_event(&mut w, room).await, joined("alice"));
        let mut marker = user(&gw, "marker").await;
        marker.join(room).await;
        assert_eq!(
            next_event(&mut w, room).await,
            joined("marker"),
            "tabs two and three raised nothing"
        );
        assert_eq!(presence(&mut w, room).await, ["alice", "marker", "watcher"]);
        assert_eq!(
            api_members(gw.public, room).await,
            ["alice", "marker", "watcher"]
        );

        // One tab leaves, one disconnects: alice is still there.
        tabs[0].ok(json!({"type": "leave", "room": room})).await;
        tabs.remove(1).close().await;
        marker.ok(json!({"type": "leave", "room": room})).await;
        assert_eq!(next_event(&mut w, room).await, left("marker"));
        // The last one goes: one left.
        tabs.pop().expect("third tab").close().await;
        assert_eq!(next_event(&mut w, room).await, left("alice"));
        assert_eq!(presence(&mut w, room).await, ["watcher"]);
        w.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_watcher_gets_no_events_about_its_own_user() {
    within(60, async {
        let gw = single().await;
        let room = "mirror";
        let mut other = user(&gw, "other").await;
        watch(&mut other, room).await;
        let mut me = user(&gw, "me").await;
        watch(&mut me, room).await;
        assert_eq!(next_event(&mut other, room).await, joined("me"));
        // My second tab comes and goes; then someone else joins.
        let mut my_tab = user(&gw, "me").await;
        watch(&mut my_tab, room).await;
        my_tab.close().await;
        let mut third = user(&gw, "third").await;
        third.join(room).await;
        assert_eq!(
            next_event(&mut me, room).await,
            joined("third"),
            "nothing about my own user came first"
        );
        assert_eq!(next_event(&mut other, room).await, joined("third"));
        me.close().await;
        assert_eq!(next_event(&mut other, room).await, left("me"));
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn presence_true_is_forbidden_where_the_namespace_turns_events_off() {
    within(30, async {
        let gw = single().await;
        let mut c = user(&gw, "someone").await;
        let err = c
            .err(
                json!({"type": "join", "room": "quiet:1", "presence": true}),
                "forbidden",
            )
            .await;
        assert!(
            err["message"]
                .as_str()
                .is_some_and(|m| m.contains("presence_events")),
            "{err}"
        );
        // Not joined by the refused frame; a plain join works.
        assert_eq!(presence(&mut c, "quiet:1").await, Vec::<String>::new());
        c.join("quiet:1").await;
        watch(&mut c, "loud:1").await;
        c.err(
            json!({"type": "join", "room": "loud:2", "presence": "yes"}),
            "bad_request",
        )
        .await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn v1_presence_needs_the_api_key_and_a_valid_room() {
    within(30, async {
        let gw = single().await;
        let url = |q: &str| format!("http://{}/v1/presence{q}", gw.public);
        let status = |r: reqwest::Response| r.status().as_u16();
        assert_eq!(
            status(http().get(url("?room=r")).send().await.expect("GET")),
            401
        );
        for (query, code) in [("?room=a.b", "invalid_room"), ("", "bad_request")] {
            let resp = http()
                .get(url(query))
                .bearer_auth(KEY)
                .send()
                .await
                .expect("GET");
            assert_eq!(resp.status(), 400, "{query}");
            let body: Value = resp.json().await.expect("JSON");
            assert_eq!(body["code"], code, "{query}: {body}");
        }
        assert_eq!(api_members(gw.public, "empty").await, Vec::<String>::new());
        gw.stop().await;
    })
    .await;
}

async fn cluster_gateway(name: &str, nats: &NatsServer) -> TestGateway {
    gateway_with(name, vec![nats.url()], |c| {
        c.auth.api_key = Some(KEY.into())
    })
    .await
}

#[tokio::test]
async fn one_user_on_two_gateways_is_one_joined_and_one_left_and_unwatched_rooms_cost_nothing() {
    within(90, async {
        let nats = NatsServer::start().await;
        let a = cluster_gateway("gw-a", &nats).await;
        let b = cluster_gateway("gw-b", &nats).await;
        discover(&[&a, &b]).await;
        let room = "both";
        let out = "roomcast_presence_bus_messages_out_total";

        // Nobody watches: joins and leaves cost no presence traffic.
        let mut idle = user(&b, "idle").await;
        idle.join("unwatched").await;
        idle.ok(json!({"type": "leave", "room": "unwatched"})).await;
        assert_eq!(metric(&b, out).await, 0.0);
        assert_eq!(metric(&a, out).await, 0.0);

        let mut w = user(&a, "watcher").await;
        watch(&mut w, room).await;
        // The watch (a) and b's snapshot of the room.
        assert_eq!(metric(&a, out).await, 1.0);
        eventually(STEP, "b's snapshot", || async {
            (metric(&b, out).await == 1.0).then_some(())
        })
        .await;

        let mut on_b = user(&b, "alice").await;
        on_b.join(room).await;
        assert_eq!(next_event(&mut w, room).await, joined("alice"));
        let mut on_a = user(&a, "alice").await;
        on_a.join(room).await;
        let mut on_b2 = user(&b, "alice").await;
        on_b2.join(room).await;
        let mut marker = user(&b, "marker").await;
        marker.join(room).await;
        assert_eq!(
            next_event(&mut w, room).await,
            joined("marker"),
            "alice's other tabs raised nothing"
        );
        // b reported two users (one message each), not four connections.
        eventually(STEP, "b's reports counted", || async {
            (metric(&b, out).await == 3.0).then_some(())
        })
        .await;
        for gw in [&a, &b] {
            assert_eq!(
                api_members(gw.public, room).await,
                ["alice", "marker", "watcher"]
            );
        }

        on_a.close().await;
        on_b.ok(json!({"type": "leave", "room": room})).await;
        marker.close().await;
        assert_eq!(next_event(&mut w, room).await, left("marker"));
        on_b2.close().await;
        assert_eq!(next_event(&mut w, room).await, left("alice"));

        // Once the watcher leaves, a drops the room's report subscription.
        let subject = format!("{}.pres.{room}", nats::CLUSTER);
        eventually_count(&nats, &subject, 1).await;
        w.ok(json!({"type": "leave", "room": room})).await;
        eventually_count(&nats, &subject, 0).await;
        a.stop().await;
        b.stop().await;
    })
    .await;
}

/// The gateway binary on `nats`, in the test cluster, with the test JWT secret.
async fn spawn_gateway(nats: &NatsServer, node: &str) -> Process {
    let mut cmd = binary::command();
    cmd.args([
        "--node-name",
        node,
        "--nats-url",
        &nats.url(),
        "--nats-cluster-name",
        nats::CLUSTER,
        "--auth-jwt-secret",
        jwt::SECRET,
        "--auth-api-key",
        KEY,
    ]);
    let process = binary::spawn(cmd).await;
    let readyz = format!("http://{}/readyz", process.admin);
    eventually(STEP * 2, "the gateway binary ready", || async {
        (common::get_status(&readyz).await == 200).then_some(())
    })
    .await;
    process
}

async fn user_of(process: &Process, name: &str) -> Client {
    Client::connect(
        &format!("ws://{}/ws", process.public),
        &Connect::bearer(&token(name)),
    )
    .await
    .expect("upgrade")
}

#[tokio::test]
async fn a_killed_gateway_takes_its_users_with_it_and_a_restarted_one_brings_them_back_once() {
    within(120, async {
        let nats = NatsServer::start().await;
        let a = cluster_gateway("gw-a", &nats).await;
        let mut b = spawn_gateway(&nats, "gw-b").await;
        let room = "doomed";
        let mut w = user(&a, "watcher").await;
        watch(&mut w, room).await;
        let mut alice = user_of(&b, "alice").await;
        alice.join(room).await;
        let mut shared_tab = user_of(&b, "shared").await;
        shared_tab.join(room).await;
        let mut shared_on_a = user(&a, "shared").await;
        shared_on_a.join(room).await;
        let mut got = vec![
            next_event(&mut w, room).await,
            next_event(&mut w, room).await,
        ];
        got.sort();
        assert_eq!(got, [joined("alice"), joined("shared")]);

        b.child.start_kill().expect("SIGKILL gw-b");
        let killed = tokio::time::Instant::now();
        b.wait_exit(STEP).await;
        assert_eq!(
            next_event_within(&mut w, room, Duration::from_secs(30)).await,
            left("alice"),
            "only the user who was on gw-b alone leaves"
        );
        assert!(killed.elapsed() < Duration::from_secs(30));
        // No zombie: neither presence answer lists alice.
        assert_eq!(presence(&mut w, room).await, ["shared", "watcher"]);
        assert_eq!(api_members(a.public, room).await, ["shared", "watcher"]);
        drop(alice);
        drop(shared_tab);

        // The gateway comes back; alice reconnects to it: one joined.
        let b2 = spawn_gateway(&nats, "gw-b").await;
        let mut alice = user_of(&b2, "alice").await;
        alice.join(room).await;
        assert_eq!(next_event(&mut w, room).await, joined("alice"));
        let mut marker = user_of(&b2, "marker").await;
        marker.join(room).await;
        assert_eq!(
            next_event(&mut w, room).await,
            joined("marker"),
            "no duplicate"
        );
        assert_eq!(
            api_members(a.public, room).await,
            ["alice", "marker", "shared", "watcher"]
        );
        a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_bus_that_recovers_emits_what_changed_meanwhile_without_duplicates() {
    within(120, async {
        let mut nats = NatsServer::start().await;
        let a = gateway("gw-a", vec![nats.url()]).await;
        let b = gateway("gw-b", vec![nats.url()]).await;
        discover(&[&a, &b]).await;
        let room = "weather";
        let mut w = user(&a, "watcher").await;
        watch(&mut w, room).await;
        let mut carol = user(&b, "carol").await;
        carol.join(room).await;
        assert_eq!(next_event(&mut w, room).await, joined("carol"));
        let mut alice = user(&b, "alice").await;
        alice.join(room).await;
        assert_eq!(next_event(&mut w, room).await, joined("alice"));

        nats.stop();
        for gw in [&a, &b] {
            wait_ready(gw, 503).await;
        }
        // While the bus is down alice leaves; gw-b cannot tell anyone.
        alice.ok(json!({"type": "leave", "room": room})).await;
        nats.restart().await;
        for gw in [&a, &b] {
            wait_ready(gw, 200).await;
        }
        assert_eq!(
            next_event_within(&mut w, room, Duration::from_secs(20)).await,
            left("alice")
        );
        let mut marker = user(&b, "marker").await;
        marker.join(room).await;
        assert_eq!(
            next_event(&mut w, room).await,
            joined("marker"),
            "carol neither left nor joined again"
        );
        a.stop().await;
        b.stop().await;
    })
    .await;
}
