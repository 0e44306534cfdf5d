//! The JetStream history store against real nats-server processes with
//! JetStream: append/read, trimming by size and by age, the epoch after a
//! stream is deleted, two writers into one room seen in one order by every
//! subscriber of the RePublished stream, a store that is missing or
//! unreachable, and a 3-node JetStream cluster (3 replicas) losing the
//! stream's leader mid-stream without losing an accepted message.

mod common;
mod nats;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use roomcast_gateway::history::jetstream::{
    JetStreamConfig, JetStreamStore, Storage, republished, shard_of, stream_name,
};
use roomcast_gateway::history::{HistoryError, HistoryStore, Page};
use roomcast_gateway::namespace::{NamespaceSpec, Namespaces};

use common::{STEP, eventually, within};
use nats::{NatsCluster, NatsServer};

const PREFIX: &str = "t1";

fn namespaces(specs: &[&str]) -> Namespaces {
    Namespaces::from_specs(
        specs
            .iter()
            .map(|s| s.parse::<NamespaceSpec>().expect("spec")),
    )
    .expect("namespaces")
}

fn config(shards: u32, replicas: usize, timeout: Duration) -> JetStreamConfig {
    JetStreamConfig {
        prefix: PREFIX.into(),
        shards,
        replicas,
        storage: Storage::File,
        timeout,
    }
}

async fn connect(urls: Vec<String>) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .connect(urls)
        .await
        .expect("connect to nats-server")
}

async fn store(urls: Vec<String>, specs: &[&str], config: JetStreamConfig) -> JetStreamStore {
    let store = JetStreamStore::new(connect(urls).await, namespaces(specs), config);
    store.ensure_all().await.expect("streams created");
    store
}

/// A JetStream server and a store on it, its streams created.
async fn single(specs: &[&str], shards: u32) -> (NatsServer, JetStreamStore) {
    let nats = NatsServer::start_jetstream().await;
    let store = store(vec![nats.url()], specs, config(shards, 1, STEP)).await;
    (nats, store)
}

async fn append(store: &JetStreamStore, room: &str, text: &str) -> u64 {
    store
        .append(room, Bytes::from(text.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("append {text:?} to {room}: {e}"))
        .offset
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

/// A page's messages as (offset, text).
fn entries(page: &Page) -> Vec<(u64, String)> {
    page.messages
        .iter()
        .map(|m| (m.offset, text(&m.payload)))
        .collect()
}

fn texts(page: &Page) -> Vec<String> {
    entries(page).into_iter().map(|(_, t)| t).collect()
}

fn offsets(page: &Page) -> Vec<u64> {
    page.messages.iter().map(|m| m.offset).collect()
}

#[tokio::test]
async fn append_read_and_trim_by_size() {
    within(60, async {
        let (_nats, s) = single(&["chat:history_size=3"], 2).await;
        let before = s.position("chat:1").await.expect("position");
        assert_eq!(before.offset, 0, "no message yet");

        let mut o = Vec::new();
        for i in 0..5 {
            o.push(append(&s, "chat:1", &format!("m{i}")).await);
            append(&s, "chat:2", &format!("other{i}")).await;
        }
        assert!(o[0] >= 1 && o.windows(2).all(|w| w[0] < w[1]), "{o:?}");

        let last = s.last("chat:1", 10).await.expect("last");
        assert_eq!(texts(&last), ["m2", "m3", "m4"], "trimmed to history_size");
        assert_eq!(offsets(&last), o[2..]);
        assert_eq!(last.position.offset, o[4]);
        assert_eq!(
            texts(&s.last("chat:1", 2).await.expect("last 2")),
            ["m3", "m4"]
        );

        let after = s.after("chat:1", o[3], 100).await.expect("after");
        assert_eq!(texts(&after), ["m4"]);
        assert!(after.complete, "the client's own message is still kept");
        let after = s.after("chat:1", o[2], 1).await.expect("after, limit 1");
        assert_eq!(texts(&after), ["m3"]);
        assert!(after.complete);
        let dropped = s
            .after("chat:1", o[0], 100)
            .await
            .expect("after a dropped one");
        assert!(!dropped.complete, "m1 was dropped by size");
        assert!(!s.after("chat:1", 0, 100).await.expect("after 0").complete);
        assert!(
            !s.after("chat:1", u64::MAX / 2, 100)
                .await
                .expect("future")
                .complete
        );

        let position = s.position("chat:1").await.expect("position");
        assert_eq!(position.offset, o[4]);
        assert_eq!(position.epoch, last.position.epoch);
        assert_eq!(s.position("chat:none").await.expect("empty room").offset, 0);
        assert_eq!(
            s.append("lobby", Bytes::from_static(b"x")).await,
            Err(HistoryError::NoHistory)
        );
        assert_eq!(s.last("feed:1", 1).await, Err(HistoryError::NoHistory));
        // Bytes come back exactly as appended.
        let odd = Bytes::from_static(b"{ \"a\" : [1.50, -0.0] }\n\x00\xff");
        let at = s
            .append("chat:odd", odd.clone())
            .await
            .expect("append")
            .offset;
        let page = s.last("chat:odd", 1).await.expect("read");
        assert_eq!(page.messages[0].offset, at);
        assert_eq!(page.messages[0].payload, odd);
    })
    .await;
}

#[tokio::test]
async fn trims_by_age() {
    within(60, async {
        // Kept 3 s: the reads right after an append (here and of `c` below)
        // must come before the server expires it, however loaded the machine.
        let (_nats, s) = single(&["ttl:history_size=10,history_ttl_seconds=3"], 1).await;
        let a = append(&s, "ttl:1", "a").await;
        let b = append(&s, "ttl:1", "b").await;
        assert_eq!(texts(&s.last("ttl:1", 10).await.expect("read")), ["a", "b"]);
        // The server expires both after their 3 s: wait for that event.
        eventually(STEP * 3, "messages expired by age", || async {
            s.last("ttl:1", 10)
                .await
                .ok()
                .filter(|p| p.messages.is_empty())
        })
        .await;
        let position = s.position("ttl:1").await.expect("position");
        assert_eq!(position.offset, 0, "no message kept");
        let seen_all = s.after("ttl:1", b, 10).await.expect("after b");
        assert!(seen_all.complete, "nothing after b was dropped");
        assert!(seen_all.messages.is_empty());
        assert!(
            !s.after("ttl:1", a, 10).await.expect("after a").complete,
            "b expired"
        );
        let c = append(&s, "ttl:1", "c").await;
        assert!(c > b, "offsets keep increasing after expiry");
        let page = s.after("ttl:1", b, 10).await.expect("after b");
        assert_eq!(texts(&page), ["c"]);
        assert!(page.complete);
    })
    .await;
}

#[tokio::test]
async fn epoch_changes_when_the_stream_is_deleted() {
    within(60, async {
        let nats = NatsServer::start_jetstream().await;
        let specs = ["chat:history_size=100"];
        let a = store(vec![nats.url()], &specs, config(1, 1, STEP)).await;
        let b = store(vec![nats.url()], &specs, config(1, 1, STEP)).await;
        let first = a
            .append("chat:1", Bytes::from_static(b"one"))
            .await
            .expect("append");
        for _ in 0..3 {
            let on_b = b
                .append("chat:1", Bytes::from_static(b"b"))
                .await
                .expect("append");
            assert_eq!(on_b.epoch, first.epoch, "one stream, one epoch");
        }
        assert_eq!(
            b.position("chat:1").await.expect("position").epoch,
            first.epoch,
            "every gateway derives the same epoch"
        );

        let admin = async_nats::jetstream::new(connect(vec![nats.url()]).await);
        let name = stream_name(PREFIX, "chat", shard_of("chat:1", 1));
        assert!(admin.delete_stream(&name).await.expect("delete").success);

        // The next append recreates the stream: new epoch, offsets restart.
        let again = a
            .append("chat:1", Bytes::from_static(b"two"))
            .await
            .expect("append");
        assert_ne!(again.epoch, first.epoch, "history lost: epoch changed");
        assert_eq!(again.offset, 1);
        let page = a.last("chat:1", 10).await.expect("read");
        assert_eq!(texts(&page), ["two"]);
        assert_eq!(page.position.epoch, again.epoch);
        // A gateway that knew the old stream notices the lower sequence.
        let on_b = b
            .append("chat:1", Bytes::from_static(b"three"))
            .await
            .expect("append");
        assert_eq!(on_b.epoch, again.epoch);
        assert_eq!(
            b.position("chat:1").await.expect("position").epoch,
            again.epoch
        );
    })
    .await;
}

/// Messages each writer appends in the two-writer test.
const EACH: usize = 50;

/// Appends `<name>-0` … `<name>-49` one after the other: their offsets and texts.
async fn writes(w: &JetStreamStore, room: &str, name: &str) -> Vec<(u64, String)> {
    let mut acked = Vec::new();
    for i in 0..EACH {
        let text = format!("{name}-{i}");
        acked.push((append(w, room, &text).await, text));
    }
    acked
}

#[tokio::test]
async fn two_writers_into_one_room_are_seen_in_one_order() {
    within(60, async {
        let nats = NatsServer::start_jetstream().await;
        let specs = ["chat:history_size=1000"];
        let w1 = store(vec![nats.url()], &specs, config(4, 1, STEP)).await;
        let w2 = store(vec![nats.url()], &specs, config(4, 1, STEP)).await;
        let room = "chat:race";
        let subject = format!("{PREFIX}.room.{room}");
        let mut members = Vec::new();
        for _ in 0..2 {
            let client = connect(vec![nats.url()]).await;
            let mut sub = client.subscribe(subject.clone()).await.expect("subscribe");
            // The server has the subscription once it delivers our own probe
            // (one connection's operations are processed in order).
            client
                .publish(subject.clone(), "probe".into())
                .await
                .expect("probe");
            let probe = tokio::time::timeout(STEP, sub.next())
                .await
                .expect("probe in time");
            assert_eq!(probe.expect("subscription open").payload, "probe");
            members.push((client, sub));
        }
        let (a1, a2) = tokio::join!(writes(&w1, room, "w1"), writes(&w2, room, "w2"));

        let mut orders = Vec::new();
        for (_client, sub) in &mut members {
            let mut got = Vec::new();
            let mut previous = 0;
            while got.len() < 2 * EACH {
                let msg = tokio::time::timeout(STEP, sub.next())
                    .await
                    .expect("a RePublished message in time")
                    .expect("subscription open");
                let Some(r) = republished(msg.headers.as_ref()) else {
                    assert_eq!(msg.payload, "probe", "only probes are not RePublished");
                    continue;
                };
                assert_eq!(r.stream, stream_name(PREFIX, "chat", shard_of(room, 4)));
                assert_eq!(r.previous, previous, "the room's chain has no gap");
                previous = r.offset;
                got.push((r.offset, text(&msg.payload)));
            }
            assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "offset order");
            orders.push(got);
        }
        assert_eq!(orders[0], orders[1], "every member sees one order");
        // That order is the stores', and each writer's acks name it.
        let acked: BTreeMap<u64, String> = a1.iter().chain(&a2).cloned().collect();
        let seen: BTreeMap<u64, String> = orders[0].iter().cloned().collect();
        assert_eq!(acked, seen);
        for own in [&a1, &a2] {
            assert!(
                own.windows(2).all(|w| w[0].0 < w[1].0),
                "a writer's own order kept"
            );
        }
        let stored = entries(&w1.after(room, 0, 1000).await.expect("read"));
        assert_eq!(stored, orders[0], "replay order is delivery order");
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_unreachable_jetstream_is_unavailable() {
    within(60, async {
        // A server without JetStream.
        let plain = NatsServer::start().await;
        let s = JetStreamStore::new(
            connect(vec![plain.url()]).await,
            namespaces(&["chat:history_size=10"]),
            config(1, 1, Duration::from_secs(1)),
        );
        assert!(matches!(
            s.ensure_all().await,
            Err(HistoryError::Unavailable(_))
        ));
        assert!(matches!(
            s.append("chat:1", Bytes::from_static(b"x")).await,
            Err(HistoryError::Unavailable(_))
        ));
        assert!(matches!(
            s.last("chat:1", 1).await,
            Err(HistoryError::Unavailable(_))
        ));

        // A JetStream server that dies, then comes back with its store.
        let mut nats = NatsServer::start_jetstream().await;
        let s = store(
            vec![nats.url()],
            &["chat:history_size=10"],
            config(1, 1, Duration::from_secs(1)),
        )
        .await;
        let kept = append(&s, "chat:1", "kept").await;
        nats.stop();
        let down = s.append("chat:1", Bytes::from_static(b"lost")).await;
        assert!(
            matches!(down, Err(HistoryError::Unavailable(_))),
            "{down:?}"
        );
        let e = s.after("chat:1", 0, 10).await.expect_err("read while down");
        assert!(e.to_string().contains("unavailable"), "{e}");
        assert!(matches!(
            s.position("chat:1").await,
            Err(HistoryError::Unavailable(_))
        ));
        nats.restart().await;
        let back = eventually(STEP * 2, "appends accepted again", || async {
            s.append("chat:1", Bytes::from_static(b"back")).await.ok()
        })
        .await;
        assert!(back.offset > kept);
        let page = s.last("chat:1", 10).await.expect("read");
        assert_eq!(texts(&page).first().map(String::as_str), Some("kept"));
    })
    .await;
}

#[tokio::test]
async fn a_three_node_cluster_loses_the_leader_without_losing_accepted_messages() {
    within(150, async {
        let mut cluster = NatsCluster::start_jetstream(3).await;
        let specs = ["chat:history_size=1000"];
        let s = JetStreamStore::new(
            connect(cluster.urls()).await,
            namespaces(&specs),
            config(1, 3, Duration::from_secs(2)),
        );
        // The meta group elects a leader after the routes form.
        eventually(Duration::from_secs(30), "R3 streams created", || async {
            s.ensure_all().await.ok()
        })
        .await;
        let admin = async_nats::jetstream::new(connect(cluster.urls()).await);
        let name = stream_name(PREFIX, "chat", 0);
        let leader = eventually(STEP, "a stream leader", || async {
            let info = admin
                .get_stream(&name)
                .await
                .ok()?
                .info()
                .await
                .ok()?
                .clone();
            let cluster = info.cluster?;
            assert_eq!(
                cluster.replicas.len(),
                2,
                "3 replicas: a leader and 2 peers"
            );
            cluster.leader
        })
        .await;
        let room = "chat:ha";
        let mut accepted: Vec<(u64, String)> = Vec::new();
        let mut refused = 0;
        let mut i = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while accepted.len() < 60 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} accepted",
                accepted.len()
            );
            if accepted.len() == 20 && cluster.nodes.iter().all(|n| n.is_running()) {
                let node = cluster
                    .nodes
                    .iter_mut()
                    .find(|n| n.name() == leader)
                    .expect("the leader is a node");
                node.stop();
            }
            let text = format!("m{i}");
            match s.append(room, Bytes::from(text.clone())).await {
                Ok(at) => {
                    accepted.push((at.offset, text));
                    i += 1;
                }
                // Not accepted (no leader yet): the same message is retried.
                Err(HistoryError::Unavailable(_)) => refused += 1,
                Err(e) => panic!("append: {e}"),
            }
        }
        assert!(
            accepted.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets increase"
        );
        // Direct gets are answered by any replica, and a replica may not have applied
        // the newest message yet (seen once under load: the last accepted message
        // missing from the first read). Wait until the read reaches the last accepted
        // offset; what this test proves is that nothing accepted is lost.
        let last = accepted.last().map_or(0, |(offset, _)| *offset);
        let page = eventually(STEP * 2, "history readable after the failover", || async {
            s.after(room, 0, 1000)
                .await
                .ok()
                .filter(|page| page.messages.iter().any(|m| m.offset == last))
        })
        .await;
        let stored: BTreeMap<u64, String> = entries(&page).into_iter().collect();
        for (offset, text) in &accepted {
            assert_eq!(
                stored.get(offset),
                Some(text),
                "accepted message {text} at {offset} kept"
            );
        }
        eprintln!(
            "failover: {} accepted, {refused} refused while electing, {} stored",
            accepted.len(),
            stored.len()
        );
    })
    .await;
}
