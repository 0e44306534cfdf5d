//! History, offsets and recovery across gateways on real nats-servers with
//! JetStream, over real WebSockets and HTTP: recovery on another gateway
//! after a drain; two publishers on two gateways seen in one order by every
//! member; a replay racing live publishes; the epoch after the stream is
//! deleted; a JetStream that is missing (history rooms `unavailable`,
//! readiness says so, other rooms work); a 3-node NATS cluster losing a node
//! mid-stream without losing an accepted message; MessagePack binary data
//! through history rooms, and entries stored the older way (JSON) read back;
//! a member whose gateway lost its NATS connection gets what it missed, in
//! order and once, without rejoining (or a 1012 when the store no longer has
//! it).

mod common;
mod nats;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::msgpack::{MsgPackClient, binary_survives_history_room, map, position as mp_position};
use common::{Client, STEP, TestGateway, eventually, get, http, position, within};
use nats::{CLUSTER, NatsCluster, NatsServer, discover, gateway_with, metric, user, wait_ready};
use rmpv::Value as Mp;
use roomcast_gateway::history::HistoryStore;
use roomcast_gateway::history::jetstream::{
    JetStreamConfig, JetStreamStore, Storage, shard_of, stream_name,
};
use roomcast_gateway::namespace::{NamespaceSpec, Namespaces};
use serde_json::{Value, json};

/// A gateway on `urls` whose `chat` namespace keeps `size` messages.
async fn history_gateway(node: &str, urls: Vec<String>, size: u32, replicas: u8) -> TestGateway {
    let spec: NamespaceSpec = format!("chat:history_size={size}").parse().expect("spec");
    gateway_with(node, urls, |c| {
        c.namespaces = vec![spec];
        c.nats.history_shards = 2;
        c.nats.history_replicas = replicas;
        c.nats.history_timeout_ms = 2_000;
    })
    .await
}

async fn pair(nats: &NatsServer, size: u32) -> (TestGateway, TestGateway) {
    let a = history_gateway("gw-a", vec![nats.url()], size, 1).await;
    let b = history_gateway("gw-b", vec![nats.url()], size, 1).await;
    discover(&[&a, &b]).await;
    (a, b)
}

async fn publish(c: &mut Client, room: &str, data: Value) -> (u64, String) {
    let ok = c
        .ok(json!({"type": "publish", "room": room, "data": data}))
        .await;
    position(&ok)
}

/// The next `n` messages of `room`: (offset, epoch, data).
async fn messages(c: &mut Client, room: &str, n: usize) -> Vec<(u64, String, Value)> {
    let mut out = Vec::new();
    while out.len() < n {
        let m = c
            .recv_where("a message", |v| v["type"] == "message" && v["room"] == room)
            .await;
        let (offset, epoch) = position(&m);
        out.push((offset, epoch, m["data"].clone()));
    }
    out
}

/// Joins with `since`; the frames before the answer (the replay) and the answer.
async fn join_since(c: &mut Client, room: &str, since: &(u64, String)) -> (Vec<Value>, Value) {
    let id = c.fresh_id();
    c.send_json(json!({"type": "join", "room": room, "id": id,
        "since": {"offset": since.0, "epoch": since.1}}))
        .await;
    let mut replay = Vec::new();
    loop {
        let f = c.recv().await;
        if f["id"] == id {
            return (replay, f);
        }
        assert_eq!(
            f["type"], "message",
            "only the replay comes before the ok: {f}"
        );
        replay.push(f);
    }
}

#[tokio::test]
async fn drained_clients_recover_on_another_gateway() {
    within(90, async {
        let nats = NatsServer::start_jetstream().await;
        let (a, b) = pair(&nats, 100).await;
        let room = "chat:drain";
        let mut member = user(&a, "alice").await;
        let ok = member.ok(json!({"type": "join", "room": room})).await;
        assert_eq!(ok["offset"], 0);
        let mut writer = user(&b, "bob").await;
        let mut acked = Vec::new();
        for i in 0..5 {
            acked.push(publish(&mut writer, room, json!(i)).await);
        }
        let got = messages(&mut member, room, 5).await;
        let offsets: Vec<u64> = got.iter().map(|m| m.0).collect();
        assert_eq!(offsets, acked.iter().map(|a| a.0).collect::<Vec<_>>());
        let last = (got[4].0, got[4].1.clone());

        // gw-a drains: alice is told to reconnect; meanwhile bob keeps publishing.
        a.start_drain();
        member.expect_close(1012).await;
        for i in 5..10 {
            acked.push(publish(&mut writer, room, json!(i)).await);
        }
        // alice reconnects to gw-b and recovers what she missed, then live.
        let mut again = user(&b, "alice").await;
        let (replay, ok) = join_since(&mut again, room, &last).await;
        assert_eq!(ok["recovered"], true, "{ok}");
        let data: Vec<&Value> = replay.iter().map(|m| &m["data"]).collect();
        assert_eq!(
            data,
            (5..10)
                .map(|i| json!(i))
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>()
        );
        let replayed: Vec<u64> = replay.iter().map(|m| position(m).0).collect();
        assert_eq!(replayed, acked[5..].iter().map(|a| a.0).collect::<Vec<_>>());
        assert_eq!(position(&ok), acked[9].clone());
        let next = publish(&mut writer, room, json!(10)).await;
        assert_eq!(
            messages(&mut again, room, 1).await,
            [(next.0, next.1, json!(10))]
        );
        again.expect_quiet().await;
        b.stop().await;
        a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn two_publishers_on_two_gateways_one_order_for_every_member() {
    within(90, async {
        let nats = NatsServer::start_jetstream().await;
        let (a, b) = pair(&nats, 1000).await;
        let room = "chat:race";
        let mut members = Vec::new();
        for (gw, name) in [(&a, "m1"), (&a, "m2"), (&b, "m3"), (&b, "m4")] {
            let mut m = user(gw, name).await;
            m.join(room).await;
            members.push(m);
        }
        let (mut p1, mut p2) = (user(&a, "p1").await, user(&b, "p2").await);
        const N: usize = 60;
        let (acks1, acks2) = tokio::join!(
            publishes(&mut p1, room, "a", N),
            publishes(&mut p2, room, "b", N)
        );
        let mut orders = Vec::new();
        for m in &mut members {
            let got = messages(m, room, 2 * N).await;
            assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "offset order");
            orders.push(got);
        }
        assert!(
            orders.windows(2).all(|w| w[0] == w[1]),
            "one order for every member"
        );
        let acked: BTreeMap<u64, String> = acks1.into_iter().chain(acks2).collect();
        let seen: BTreeMap<u64, String> = orders[0]
            .iter()
            .map(|(o, _, d)| (*o, d.as_str().expect("text").to_owned()))
            .collect();
        assert_eq!(acked, seen, "every ack's offset is the one delivered");

        // echo:false on NATS: the sender alone is left out.
        let ok = members[0]
            .ok(json!({"type": "publish", "room": room, "data": "quiet", "echo": false}))
            .await;
        let at = position(&ok).0;
        for m in &mut members[1..] {
            assert_eq!(messages(m, room, 1).await[0].0, at);
        }
        members[0].expect_quiet().await;
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// `n` publishes with ids, one after the other: (offset, data) of each ack.
async fn publishes(c: &mut Client, room: &str, tag: &str, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let text = format!("{tag}{i}");
        out.push((publish(c, room, json!(text)).await.0, text));
    }
    out
}

#[tokio::test]
async fn a_replay_racing_live_publishes_on_another_gateway() {
    within(90, async {
        let nats = NatsServer::start_jetstream().await;
        let (a, b) = pair(&nats, 1000).await;
        let room = "chat:live";
        let mut w = user(&a, "writer").await;
        let mut first = Vec::new();
        for i in 0..20 {
            first.push(publish(&mut w, room, json!(i)).await);
        }
        let since = first[4].clone();
        let publisher = tokio::spawn(async move {
            for i in 20..220 {
                w.send_json(json!({"type": "publish", "room": room, "data": i}))
                    .await;
            }
            w.expect_quiet().await;
            w
        });
        let mut joiners = Vec::new();
        for k in 0..3 {
            let mut c = user(&b, &format!("j{k}")).await;
            let id = c.fresh_id();
            c.send_json(json!({"type": "join", "room": room, "id": id,
                "since": {"offset": since.0, "epoch": since.1}}))
                .await;
            joiners.push((c, id));
        }
        let _w = publisher.await.expect("publisher");
        for (c, id) in &mut joiners {
            let (mut data, mut offsets, mut ok) = (Vec::new(), Vec::new(), None);
            while data.len() < 215 || ok.is_none() {
                let f = c.recv().await;
                if f["type"] == "message" {
                    offsets.push(f["offset"].as_u64().expect("offset"));
                    data.push(f["data"].as_i64().expect("number"));
                } else {
                    assert_eq!(f["id"], *id, "{f}");
                    ok = Some(f);
                }
            }
            assert_eq!(ok.expect("ok")["recovered"], true);
            assert_eq!(data, (5..220).collect::<Vec<i64>>(), "each once, in order");
            assert!(offsets.windows(2).all(|w| w[0] < w[1]));
            c.expect_quiet().await;
        }
        b.stop().await;
        a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_epoch_changes_when_the_stream_is_deleted() {
    within(90, async {
        let nats = NatsServer::start_jetstream().await;
        let (a, b) = pair(&nats, 100).await;
        let room = "chat:gone";
        let mut member = user(&b, "member").await;
        member.join(room).await;
        let mut w = user(&a, "writer").await;
        let mut old = Vec::new();
        for i in 0..3 {
            old.push(publish(&mut w, room, json!(i)).await);
        }
        assert_eq!(messages(&mut member, room, 3).await.len(), 3);

        let client = async_nats::connect(nats.url()).await.expect("connect");
        let admin = async_nats::jetstream::new(client);
        let name = stream_name(CLUSTER, "chat", shard_of(room, 2));
        assert!(admin.delete_stream(&name).await.expect("delete").success);

        // The next publish recreates the stream: a new epoch, and members
        // on every gateway get the message in it.
        let fresh = publish(&mut w, room, json!("new")).await;
        assert_ne!(fresh.1, old[0].1, "history lost: the epoch changed");
        let got = messages(&mut member, room, 1).await;
        assert_eq!(got, [(fresh.0, fresh.1.clone(), json!("new"))]);

        // A client recovering with the old epoch is told to reload.
        let mut back = user(&b, "back").await;
        let (replay, ok) = join_since(&mut back, room, &old[2]).await;
        assert!(replay.is_empty());
        assert_eq!(ok["recovered"], false, "{ok}");
        assert_eq!(position(&ok), fresh.clone());
        let mut again = user(&a, "again").await;
        let (replay, ok) = join_since(&mut again, room, &(0, fresh.1.clone())).await;
        assert_eq!(ok["recovered"], true, "{ok}");
        assert_eq!(replay.len(), 1);
        b.stop().await;
        a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_missing_jetstream_takes_out_history_rooms_only() {
    within(60, async {
        let nats = NatsServer::start().await;
        let gw = history_gateway("gw-a", vec![nats.url()], 10, 1).await;
        let (status, _, body) = get(&gw.admin_url("/readyz")).await;
        assert_eq!(status, 200, "other rooms keep working: {body}");
        eventually(STEP, "readiness says JetStream is unavailable", || async {
            let (_, _, body) = get(&gw.admin_url("/readyz")).await;
            body.contains("history store (JetStream) unavailable")
                .then_some(())
        })
        .await;
        assert_eq!(gw.metric("roomcast_history_up", "").await, Some(0.0));
        let mut c = user(&gw, "c").await;
        c.err(
            json!({"type": "publish", "room": "chat:1", "data": 1}),
            "unavailable",
        )
        .await;
        c.err(json!({"type": "join", "room": "chat:1"}), "unavailable")
            .await;
        c.err(json!({"type": "history", "room": "chat:1"}), "unavailable")
            .await;
        let (status, body) = gw
            .post(
                "/v1/publish",
                &json!({"room": "chat:1", "data": 1}).to_string(),
                None,
            )
            .await;
        assert_eq!(
            (status, &body["code"]),
            (503, &json!("unavailable")),
            "{body}"
        );
        let resp = http()
            .get(gw.url("/v1/history?room=chat:1"))
            .send()
            .await
            .expect("GET /v1/history");
        assert_eq!(resp.status(), 503);
        // A room without history is untouched.
        c.join("lobby").await;
        c.ok(json!({"type": "publish", "room": "lobby", "data": "fine"}))
            .await;
        assert_eq!(c.recv_type("message").await["data"], "fine");
        c.expect_quiet().await;
        gw.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_three_node_cluster_losing_a_node_loses_no_accepted_message() {
    within(180, async {
        let mut cluster = NatsCluster::start_jetstream(3).await;
        let urls = cluster.urls();
        // Each gateway prefers another node; all know every node.
        let rotate = |k: usize| {
            let mut u = urls.clone();
            u.rotate_left(k);
            u
        };
        let a = history_gateway("gw-a", rotate(1), 1000, 3).await;
        let b = history_gateway("gw-b", rotate(2), 1000, 3).await;
        let room = "chat:ha";
        let client = async_nats::connect(urls.clone()).await.expect("connect");
        let admin = async_nats::jetstream::new(client);
        let name = stream_name(CLUSTER, "chat", shard_of(room, 2));
        // The meta group elects a leader, then the gateways create the R3 streams.
        let leader = eventually(
            Duration::from_secs(60),
            "an R3 stream with a leader",
            || async {
                let mut stream = admin.get_stream(&name).await.ok()?;
                let info = stream.info().await.ok()?;
                info.cluster.as_ref()?.leader.clone()
            },
        )
        .await;
        let mut member = user(&b, "member").await;
        member.join(room).await;

        let mut accepted: Vec<(u64, String)> = Vec::new();
        let mut epoch = String::new();
        let mut refused = 0;
        let mut i = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while accepted.len() < 40 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} accepted",
                accepted.len()
            );
            if accepted.len() == 15 && cluster.nodes.iter().all(|n| n.is_running()) {
                cluster
                    .nodes
                    .iter_mut()
                    .find(|n| n.name() == leader)
                    .expect("the leader is a node")
                    .stop();
            }
            let text = format!("m{i}");
            let (status, body) = a
                .post(
                    "/v1/publish",
                    &json!({"room": room, "data": text}).to_string(),
                    None,
                )
                .await;
            match status {
                202 => {
                    let (offset, e) = position(&body);
                    epoch = e;
                    accepted.push((offset, text));
                    i += 1;
                }
                // Not stored (no leader yet): not accepted, retried.
                503 => refused += 1,
                other => panic!("publish answered {other}: {body}"),
            }
        }
        assert!(
            accepted.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets increase"
        );
        // Every accepted message is kept and recoverable on any gateway.
        let last = accepted.last().map_or(0, |m| m.0);
        let replayed = eventually(STEP * 4, "a full recovery after the failover", || async {
            let mut c = user(&a, "probe").await;
            let (replay, ok) = join_since(&mut c, room, &(0, epoch.clone())).await;
            let replayed: BTreeMap<u64, String> = replay
                .iter()
                .map(|m| {
                    (
                        position(m).0,
                        m["data"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            (ok["recovered"] == true && replayed.contains_key(&last)).then_some(replayed)
        })
        .await;
        for (offset, text) in &accepted {
            assert_eq!(
                replayed.get(offset),
                Some(text),
                "accepted {text} at {offset} kept"
            );
        }
        // The member saw no accepted message twice or out of order.
        let mut seen = BTreeSet::new();
        let mut last = 0;
        while let Some(f) = member.try_recv(Duration::from_millis(200)).await {
            if f["type"] == "message" {
                let o = f["offset"].as_u64().expect("offset");
                assert!(o > last && seen.insert(o), "{o} after {last}");
                last = o;
            }
        }
        eprintln!(
            "failover: {} accepted, {refused} refused while electing",
            accepted.len()
        );
        wait_ready(&a, 200).await;
        b.stop().await;
        a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn msgpack_binary_data_survives_history_rooms_across_gateways() {
    within(90, async {
        let nats = NatsServer::start_jetstream().await;
        let (a, b) = pair(&nats, 100).await;
        let token = |u: &str| Some(nats::token(u));
        binary_survives_history_room(&a, &b, "chat:bin", token, None).await;

        // An entry an older gateway stored (JSON, binary as base64): what
        // its append wrote, through the same store on the same stream.
        let room = "chat:old";
        let (mut member, _) = MsgPackClient::connect(&b.ws_url(), token("mia").as_deref()).await;
        let (start, epoch) = member.join_at(room).await;
        let mut json_member = user(&b, "jo").await;
        json_member.join(room).await;
        let older = JetStreamStore::new(
            async_nats::connect(nats.url()).await.expect("connect"),
            Namespaces::from_specs(["chat:history_size=100".parse().expect("spec")])
                .expect("namespaces"),
            JetStreamConfig {
                prefix: CLUSTER.into(),
                shards: 2,
                replicas: 1,
                storage: Storage::File,
                timeout: STEP,
            },
        );
        let old = older
            .append(
                room,
                Bytes::from_static(
                    br#"{"type":"message","room":"chat:old","from":"ann","data":{"bin":"3q0="}}"#,
                ),
            )
            .await
            .expect("stored the old way");
        let as_string = map(vec![("bin", "3q0=".into())]);
        let live = member.recv().await;
        assert_eq!(
            (&live["data"], &live["from"]),
            (&as_string, &Mp::from("ann"))
        );
        assert_eq!(mp_position(&live), (old.offset, epoch.clone()));
        let m = json_member.recv_type("message").await;
        assert_eq!(m["data"], json!({"bin": "3q0="}));
        // A MessagePack publish after it, on the other gateway.
        let (mut publisher, _) = MsgPackClient::connect(&a.ws_url(), token("ann").as_deref()).await;
        let blob = map(vec![("bin", Mp::Binary(vec![0xde, 0xad]))]);
        let ack = publisher.publish(room, &blob).await;
        assert_eq!(member.recv().await["data"], blob);
        assert_eq!(
            json_member.recv_type("message").await["data"],
            json!({"bin": "3q0="})
        );
        // Both read back: recovery on one gateway, history on the other.
        let (mut back, _) = MsgPackClient::connect(&b.ws_url(), token("mia").as_deref()).await;
        let (replay, ok) = back.join_since(room, &(start, epoch.clone())).await;
        assert_eq!(ok["recovered"], Mp::Boolean(true), "{ok}");
        let data: Vec<&Mp> = replay.iter().map(|m| &m["data"]).collect();
        assert_eq!(data, [&as_string, &blob]);
        assert_eq!(mp_position(&replay[1]), mp_position(&ack));
        let kept = publisher.history(room).await;
        let kept: Vec<&Mp> = kept.iter().map(|m| &m["data"]).collect();
        assert_eq!(kept, [&as_string, &blob]);
        let answer = json_member
            .ok(json!({"type": "history", "room": room}))
            .await;
        assert_eq!(
            answer["messages"],
            json!([
                {"offset": old.offset, "from": "ann", "data": {"bin": "3q0="}},
                {"offset": mp_position(&ack).0, "from": "ann", "data": {"bin": "3q0="}},
            ])
        );
        b.stop().await;
        a.stop().await;
    })
    .await;
}

/// A TCP relay in front of a nats-server that can cut every connection
/// through it and refuse new ones until reopened: one gateway loses its bus
/// while the other gateway and JetStream carry on.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().expect("relay address");
        let open = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (open, links) = (open.clone(), links.clone());
            async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(Ordering::SeqCst) {
                        continue; // dropped: the connection attempt fails
                    }
                    let link = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    links.lock().unwrap_or_else(|e| e.into_inner()).push(link);
                }
            }
        });
        Self {
            addr,
            open,
            links,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Drops every connection through the relay and refuses new ones.
    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for link in self
            .links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            link.abort();
        }
    }

    fn reopen(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// gw-a straight on a JetStream nats-server, gw-b behind a relay to it.
struct Outage {
    /// The member, on gw-b.
    bob: Client,
    /// Every offset published, in order.
    offsets: Vec<u64>,
    /// The room's epoch.
    epoch: String,
    a: TestGateway,
    b: TestGateway,
    _relay: Relay,
    _nats: NatsServer,
}

/// A member on gw-b joined to `room` (history kept: `size`) and a publisher
/// on gw-a; 2 messages published, then gw-b loses NATS while `during` more
/// are published, gets it back (ready again), and `after` more are published.
async fn outage(room: &str, size: u32, during: usize, after: usize) -> Outage {
    let nats = NatsServer::start_jetstream().await;
    let upstream: SocketAddr = format!("127.0.0.1:{}", nats.ports().client)
        .parse()
        .expect("address");
    let relay = Relay::start(upstream).await;
    let a = history_gateway("gw-a", vec![nats.url()], size, 1).await;
    let b = history_gateway("gw-b", vec![relay.url()], size, 1).await;
    discover(&[&a, &b]).await;
    let mut alice = user(&a, "alice").await;
    let mut bob = user(&b, "bob").await;
    bob.join(room).await;
    let mut offsets = Vec::new();
    for i in 0..2 {
        offsets.push(publish(&mut alice, room, json!(i)).await.0);
    }
    let live = messages(&mut bob, room, 2).await;
    assert_eq!(live.iter().map(|m| m.0).collect::<Vec<_>>(), offsets);
    let epoch = live[1].1.clone();

    relay.cut();
    eventually(STEP * 4, "gw-b's bus down", || async {
        (metric(&b, "roomcast_bus_up").await == 0.0).then_some(())
    })
    .await;
    for i in 0..during {
        offsets.push(
            publish(&mut alice, room, json!(format!("during {i}")))
                .await
                .0,
        );
    }
    relay.reopen();
    wait_ready(&b, 200).await;
    for i in 0..after {
        offsets.push(
            publish(&mut alice, room, json!(format!("after {i}")))
                .await
                .0,
        );
    }
    Outage {
        bob,
        offsets,
        epoch,
        a,
        b,
        _relay: relay,
        _nats: nats,
    }
}

#[tokio::test]
async fn a_member_whose_gateway_lost_nats_gets_what_it_missed_in_order_once() {
    within(120, async {
        let room = "chat:outage";
        let mut o = outage(room, 1000, 5, 3).await;
        // Published while gw-b was cut off, then after: all of them, in
        // order, once, on the same connection (no rejoin).
        let got = messages(&mut o.bob, room, 8).await;
        let data: Vec<Value> = got.iter().map(|m| m.2.clone()).collect();
        let want: Vec<Value> = (0..5)
            .map(|i| json!(format!("during {i}")))
            .chain((0..3).map(|i| json!(format!("after {i}"))))
            .collect();
        assert_eq!(data, want);
        assert_eq!(
            got.iter().map(|m| m.0).collect::<Vec<_>>(),
            o.offsets[2..].to_vec()
        );
        assert!(got.iter().all(|m| m.1 == o.epoch));
        o.bob.expect_quiet().await;
        o.b.stop().await;
        o.a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_quiet_room_gets_what_it_missed_once_the_bus_is_back() {
    within(120, async {
        let room = "chat:quiet";
        // Nothing is published after gw-b is back: the reconnection itself
        // has the room's history read.
        let mut o = outage(room, 1000, 4, 0).await;
        let got = messages(&mut o.bob, room, 4).await;
        assert_eq!(
            got.iter().map(|m| m.0).collect::<Vec<_>>(),
            o.offsets[2..].to_vec()
        );
        o.bob.expect_quiet().await;
        o.b.stop().await;
        o.a.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_gap_the_store_no_longer_keeps_closes_with_1012_for_a_rejoin() {
    within(120, async {
        let room = "chat:trimmed";
        // Keeps 3 messages; 6 are published while gw-b is cut off.
        let mut o = outage(room, 3, 6, 0).await;
        o.bob.expect_close(1012).await;
        // Its rejoin with `since` (the last it got) learns that the gap is
        // lost, and where the room is.
        let mut again = user(&o.b, "bob").await;
        let (replay, ok) = join_since(&mut again, room, &(o.offsets[1], o.epoch.clone())).await;
        assert!(replay.is_empty(), "{replay:?}");
        assert_eq!(ok["recovered"], false, "{ok}");
        assert_eq!(ok["epoch"], o.epoch.as_str(), "{ok}");
        assert_eq!(ok["offset"], *o.offsets.last().expect("published"), "{ok}");
        o.b.stop().await;
        o.a.stop().await;
    })
    .await;
}
