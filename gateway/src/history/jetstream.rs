//! Room history in NATS JetStream, shared by every gateway of a cluster.
//!
//! Layout (docs/cluster.md has the reasoning):
//! - every namespace with history gets a fixed set of `shards` streams,
//!   `<c>-hist-<ns>-<k>`, each holding the subjects `<c>.hist.<ns>.<k>.*`; a
//!   room lives in shard `fnv1a64(room) % shards`, so the number of streams
//!   is bounded whatever the number of rooms;
//! - a room's messages are stored on `<c>.hist.<ns>.<k>.<room>`: the stream
//!   sequence is the message's offset (increasing, not consecutive);
//! - `MaxMsgsPerSubject` = `history_size`, `MaxAge` = `history_ttl_seconds`;
//! - the stream RePublishes every stored message to the room's ordinary
//!   subject `<c>.room.<room>`, with `Nats-Sequence` (its offset) and
//!   `Nats-Last-Sequence` (the room's previous offset) headers: members
//!   receive the room in stream order from the stream leader, with no
//!   consumer at all;
//! - the epoch is the stream's creation time, so deleting and recreating a
//!   stream (which restarts its sequences) changes it.
//!
//! Every gateway creates or updates the streams with the same configuration
//! (idempotent). Any failure to reach JetStream is [`HistoryError::Unavailable`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{Epoch, HistoryError, HistoryStore, Page, Position, Stored};
use crate::namespace::{NamespaceOptions, Namespaces, namespace_of};

/// Header of a stored publish whose sender asked for no echo: the
/// publishing gateway's origin and the connection to leave out. The
/// stream's RePublish carries it to every member gateway.
pub const SKIP_HEADER: &str = "Roomcast-Skip";

/// How the streams are laid out and kept; identical on every gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// The cluster's subject namespace (`nats.cluster_name`).
    pub prefix: String,
    /// Streams per namespace with history; rooms are spread over them.
    pub shards: u32,
    /// Replicas of each stream (1 for a single server, 3 for a cluster).
    pub replicas: usize,
    /// Where the streams keep messages.
    pub storage: Storage,
    /// How long one JetStream request may take before the store is
    /// reported unavailable.
    pub timeout: Duration,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            prefix: "roomcast".into(),
            shards: 8,
            replicas: 1,
            storage: Storage::File,
            timeout: Duration::from_secs(5),
        }
    }
}

/// JetStream storage of the history streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// On disk: survives a nats-server restart.
    File,
    /// In memory: faster, lost when a nats-server restarts (the epoch changes).
    Memory,
}

/// A room history store on JetStream.
pub struct JetStreamStore {
    client: async_nats::Client,
    js: jetstream::Context,
    config: JetStreamConfig,
    namespaces: Namespaces,
    /// The shards of each namespace with history.
    shards: HashMap<String, Vec<Shard>>,
}

/// One stream and what this gateway knows of it.
struct Shard {
    name: String,
    stream: stream::Config,
    state: Mutex<ShardState>,
}

#[derive(Default)]
struct ShardState {
    /// Known once the stream was created or looked up.
    epoch: Option<Epoch>,
    /// The highest sequence an append got: a lower one means the stream
    /// may have been recreated (or acks completed out of order).
    highest: u64,
    /// The highest sequence RePublished to this gateway, likewise.
    republished: u64,
    /// When the epoch was last re-read because of a lower sequence.
    refreshed: Option<Instant>,
}

/// How often a shard's epoch may be re-read because an append got a lower
/// sequence than before (acks of concurrent appends complete in any order).
const REFRESH_EVERY: Duration = Duration::from_secs(1);

impl JetStreamStore {
    /// A store on `client` for the namespaces with history; no I/O (streams
    /// are created by [`ensure_all`](Self::ensure_all) or on first use).
    pub fn new(
        client: async_nats::Client,
        namespaces: Namespaces,
        config: JetStreamConfig,
    ) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(config.timeout)
            .build(client.clone());
        let shards = namespaces
            .with_history()
            .map(|(ns, options)| {
                let shards = (0..config.shards.max(1))
                    .map(|k| Shard {
                        name: stream_name(&config.prefix, ns, k),
                        stream: stream_config(&config, ns, k, &options),
                        state: Mutex::new(ShardState::default()),
                    })
                    .collect();
                (ns.to_owned(), shards)
            })
            .collect();
        Self {
            client,
            js,
            config,
            namespaces,
            shards,
        }
    }

    /// Creates or updates every stream and re-reads every epoch: at start-up
    /// and for readiness. Unavailable when JetStream is missing or unreachable.
    pub async fn ensure_all(&self) -> Result<(), HistoryError> {
        for shard in self.shards.values().flatten() {
            self.create(shard).await?;
        }
        Ok(())
    }

    /// The names of every stream this store uses.
    pub fn stream_names(&self) -> impl Iterator<Item = &str> {
        self.shards.values().flatten().map(|s| s.name.as_str())
    }

    /// The epoch of stream `name` as last known, e.g. for a RePublished message.
    pub fn epoch_of_stream(&self, name: &str) -> Option<Epoch> {
        let shard = self.shards.values().flatten().find(|s| s.name == name)?;
        shard.lock().epoch.clone()
    }

    /// The room's namespace options, its shard and its storage subject.
    fn locate(&self, room: &str) -> Result<(NamespaceOptions, &Shard, String), HistoryError> {
        let ns = namespace_of(room);
        let options = self.namespaces.get(ns);
        let shards = self.shards.get(ns).ok_or(HistoryError::NoHistory)?;
        let k = shard_of(room, shards.len() as u32);
        let subject = store_subject(&self.config.prefix, ns, k, room);
        Ok((options, &shards[k as usize], subject))
    }

    /// Creates or updates the shard's stream and records its epoch.
    async fn create(&self, shard: &Shard) -> Result<Epoch, HistoryError> {
        let info = self
            .js
            .create_or_update_stream(shard.stream.clone())
            .await
            .map_err(|e| unavailable(&format!("create stream {}", shard.name), e))?;
        Ok(shard.learn(&info))
    }

    /// The shard's epoch, creating the stream on first use.
    async fn epoch(&self, shard: &Shard) -> Result<Epoch, HistoryError> {
        let known = shard.lock().epoch.clone();
        match known {
            Some(epoch) => Ok(epoch),
            None => self.create(shard).await,
        }
    }

    /// Re-reads the shard's stream info: its epoch, first and last sequence.
    async fn info(&self, shard: &Shard) -> Result<(Epoch, stream::State), HistoryError> {
        let handle = self
            .js
            .get_stream_no_info(&shard.name)
            .await
            .map_err(|e| unavailable(&format!("stream {}", shard.name), e))?;
        let info = handle
            .get_info()
            .await
            .map_err(|e| unavailable(&format!("stream info {}", shard.name), e))?;
        Ok((shard.learn(&info), info.state))
    }

    /// One JetStream publish: the stored message's sequence.
    async fn publish(
        &self,
        subject: &str,
        payload: Bytes,
        headers: Option<HeaderMap>,
    ) -> Result<u64, PublishFailure> {
        let sent = match headers {
            Some(headers) => {
                self.js
                    .publish_with_headers(subject.to_owned(), headers, payload)
                    .await
            }
            None => self.js.publish(subject.to_owned(), payload).await,
        };
        let ack = sent
            .map_err(PublishFailure::from)?
            .await
            .map_err(PublishFailure::from)?;
        Ok(ack.sequence)
    }

    /// Every kept message of a room from sequence `from` on, at most `max`,
    /// in one batched direct get (served by any replica, no consumer).
    ///
    /// With `min_last` above 0 only a replica that has applied the stream up
    /// to that sequence answers (followers behind it hand the request to the
    /// leader, NATS 2.12+): the read then holds every message stored up to it.
    async fn read(
        &self,
        shard: &Shard,
        subject: &str,
        from: u64,
        max: usize,
        min_last: u64,
    ) -> Result<Vec<Stored>, HistoryError> {
        let request = DirectBatch {
            seq: from.max(1),
            next_by_subj: subject,
            batch: max,
            min_last_seq: min_last,
        };
        let body =
            serde_json::to_vec(&request).map_err(|e| HistoryError::Unavailable(e.to_string()))?;
        let inbox = self.client.new_inbox();
        let mut replies = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| unavailable("subscribe", e))?;
        self.client
            .publish_with_reply(
                format!("$JS.API.DIRECT.GET.{}", shard.name),
                inbox,
                body.into(),
            )
            .await
            .map_err(|e| unavailable("direct get", e))?;
        let deadline = tokio::time::Instant::now() + self.config.timeout;
        let mut out = Vec::new();
        while out.len() < max {
            let reply = tokio::time::timeout_at(deadline, replies.next())
                .await
                .map_err(|_| {
                    HistoryError::Unavailable(format!(
                        "reading {subject} from {}: no answer within {:?}",
                        shard.name, self.config.timeout
                    ))
                })?
                .ok_or_else(|| HistoryError::Unavailable("connection closed".into()))?;
            match direct_reply(reply.status.map(u16::from), reply.headers.as_ref()) {
                DirectReply::Message(offset) => out.push(Stored {
                    offset,
                    payload: reply.payload,
                }),
                DirectReply::End => break,
                DirectReply::NoStream => {
                    shard.forget();
                    return Err(HistoryError::Unavailable(format!(
                        "stream {} does not answer (missing?)",
                        shard.name
                    )));
                }
                DirectReply::Failed(why) => {
                    return Err(HistoryError::Unavailable(format!(
                        "reading {subject} from {}: {why}",
                        shard.name
                    )));
                }
            }
        }
        Ok(out)
    }

    /// Every kept message of the room, oldest first (at most `history_size`:
    /// the stream keeps no more per subject), with the room's epoch. A
    /// missing stream is recreated once (its history is lost: new epoch).
    async fn read_room(
        &self,
        room: &str,
    ) -> Result<(NamespaceOptions, &Shard, Epoch, Vec<Stored>), HistoryError> {
        let (options, shard, subject) = self.locate(room)?;
        let max = options.history_size as usize;
        self.epoch(shard).await?;
        let kept = match self.read(shard, &subject, 1, max, 0).await {
            Err(_) if shard.lock().epoch.is_none() => {
                self.create(shard).await?;
                self.read(shard, &subject, 1, max, 0).await?
            }
            other => other?,
        };
        let epoch = self.epoch(shard).await?;
        Ok((options, shard, epoch, kept))
    }
}

impl Shard {
    fn lock(&self) -> std::sync::MutexGuard<'_, ShardState> {
        // Plain assignments only: a poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the stream's epoch from its info.
    fn learn(&self, info: &stream::Info) -> Epoch {
        let epoch = epoch_of(info.created.unix_timestamp_nanos());
        let mut state = self.lock();
        if state.epoch.as_ref() != Some(&epoch) {
            state.highest = info.state.last_sequence;
        }
        state.epoch = Some(epoch.clone());
        epoch
    }

    /// Forgets the epoch: the stream must be looked up (or created) again.
    fn forget(&self) {
        let mut state = self.lock();
        state.epoch = None;
        state.highest = 0;
        state.republished = 0;
    }

    /// Records an append's sequence; true when it is lower than one seen
    /// before and the epoch was not re-read for a while: the stream may have
    /// been recreated by another gateway.
    fn suspect(&self, sequence: u64, now: Instant) -> bool {
        self.suspect_in(|s| &mut s.highest, sequence, now)
    }

    /// Records a sequence RePublished to this gateway; like [`Shard::suspect`].
    fn suspect_republished(&self, sequence: u64, now: Instant) -> bool {
        self.suspect_in(|s| &mut s.republished, sequence, now)
    }

    fn suspect_in(
        &self,
        counter: fn(&mut ShardState) -> &mut u64,
        sequence: u64,
        now: Instant,
    ) -> bool {
        let mut state = self.lock();
        let due = state
            .refreshed
            .is_none_or(|at| now.saturating_duration_since(at) >= REFRESH_EVERY);
        let seen = counter(&mut state);
        let lower = sequence < *seen;
        *seen = (*seen).max(sequence);
        if lower && due {
            *seen = sequence;
            state.refreshed = Some(now);
            return true;
        }
        false
    }
}

/// Why a JetStream publish failed.
enum PublishFailure {
    /// No stream took the subject: it was deleted (or never created).
    NoStream,
    /// Anything else: not stored.
    Failed(String),
}

impl From<async_nats::jetstream::context::PublishError> for PublishFailure {
    fn from(e: async_nats::jetstream::context::PublishError) -> Self {
        match e.kind() {
            PublishErrorKind::StreamNotFound => PublishFailure::NoStream,
            _ => PublishFailure::Failed(e.to_string()),
        }
    }
}

impl JetStreamStore {
    /// [`HistoryStore::append`] with headers that the stream's RePublish
    /// carries to every member gateway along with the message.
    pub async fn append_with(
        &self,
        room: &str,
        payload: Bytes,
        headers: Option<HeaderMap>,
    ) -> Result<Position, HistoryError> {
        let (_, shard, subject) = self.locate(room)?;
        let mut epoch = self.epoch(shard).await?;
        let offset = match self
            .publish(&subject, payload.clone(), headers.clone())
            .await
        {
            Ok(offset) => offset,
            Err(PublishFailure::NoStream) => {
                // Deleted under us: recreate it (a new epoch) and store there.
                shard.forget();
                epoch = self.create(shard).await?;
                self.publish(&subject, payload, headers)
                    .await
                    .map_err(|f| match f {
                        PublishFailure::NoStream => HistoryError::Unavailable(format!(
                            "no stream takes {subject} after creating {}",
                            shard.name
                        )),
                        PublishFailure::Failed(why) => HistoryError::Unavailable(why),
                    })?
            }
            Err(PublishFailure::Failed(why)) => return Err(HistoryError::Unavailable(why)),
        };
        if shard.suspect(offset, Instant::now()) {
            epoch = self.info(shard).await?.0;
        }
        Ok(Position { offset, epoch })
    }

    /// The epoch of a message stream `stream` RePublished at `offset`: the
    /// known one, re-read from the stream when unknown or when the offset is
    /// lower than one RePublished before (the stream may have been recreated
    /// by another gateway; re-read at most once a second).
    pub async fn epoch_of_republished(
        &self,
        stream: &str,
        offset: u64,
    ) -> Result<Epoch, HistoryError> {
        let shard = self
            .shards
            .values()
            .flatten()
            .find(|s| s.name == stream)
            .ok_or_else(|| HistoryError::Unavailable(format!("unknown stream {stream}")))?;
        let stale = shard.suspect_republished(offset, Instant::now());
        let known = shard.lock().epoch.clone();
        match known {
            Some(epoch) if !stale => Ok(epoch),
            _ => Ok(self.info(shard).await?.0),
        }
    }

    /// The shard's stream info from its leader; a missing stream is created
    /// (its history is lost: a new epoch).
    async fn leader_info(&self, shard: &Shard) -> Result<(Epoch, stream::State), HistoryError> {
        self.epoch(shard).await?;
        match self.info(shard).await {
            Ok(info) => Ok(info),
            Err(_) => {
                shard.forget();
                self.create(shard).await?;
                self.info(shard).await
            }
        }
    }
}

impl HistoryStore for JetStreamStore {
    async fn append(&self, room: &str, payload: Bytes) -> Result<Position, HistoryError> {
        self.append_with(room, payload, None).await
    }

    async fn last(&self, room: &str, limit: usize) -> Result<Page, HistoryError> {
        let (_, _, epoch, mut kept) = self.read_room(room).await?;
        let offset = kept.last().map_or(0, |m| m.offset);
        let skip = kept.len().saturating_sub(limit);
        kept.drain(..skip);
        Ok(Page {
            messages: kept,
            position: Position { offset, epoch },
            complete: true,
        })
    }

    /// Leader-bounded: the stream's state comes from its leader first, and
    /// the read must reach that state's last sequence, so a lagging replica
    /// can never make a dropped-looking or short answer (which would decide
    /// `recovered` wrongly or lose a message stored before the join).
    async fn after(&self, room: &str, since: u64, limit: usize) -> Result<Page, HistoryError> {
        let (options, shard, subject) = self.locate(room)?;
        let (epoch, state) = self.leader_info(shard).await?;
        let max = options.history_size as usize;
        let kept = self
            .read(shard, &subject, 1, max, state.last_sequence)
            .await?;
        let offset = kept.last().map_or(0, |m| m.offset);
        let first_kept = kept.first().map(|m| m.offset);
        let messages: Vec<Stored> = kept.into_iter().filter(|m| m.offset > since).collect();
        let complete = complete_after(
            since,
            first_kept,
            messages.len(),
            options.history_size,
            state.first_sequence,
            state.last_sequence,
        );
        let messages = messages.into_iter().take(limit).collect();
        Ok(Page {
            messages,
            position: Position { offset, epoch },
            complete,
        })
    }

    async fn position(&self, room: &str) -> Result<Position, HistoryError> {
        let (_, shard, subject) = self.locate(room)?;
        let epoch = self.epoch(shard).await?;
        let handle = self
            .js
            .get_stream_no_info(&shard.name)
            .await
            .map_err(|e| unavailable(&format!("stream {}", shard.name), e))?;
        let offset = match handle.direct_get_last_for_subject(subject).await {
            Ok(message) => message.sequence,
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => 0,
            Err(e) => return Err(unavailable(&format!("last of {room}"), e)),
        };
        Ok(Position { offset, epoch })
    }
}

/// A batched direct get request (`$JS.API.DIRECT.GET.<stream>`, server 2.11+).
#[derive(serde::Serialize)]
struct DirectBatch<'a> {
    seq: u64,
    next_by_subj: &'a str,
    batch: usize,
    /// 0: any replica answers (left out of the request).
    #[serde(skip_serializing_if = "is_zero")]
    min_last_seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One reply of a batched direct get.
#[derive(Debug, PartialEq, Eq)]
enum DirectReply {
    /// A message at this sequence.
    Message(u64),
    /// The end of the batch (204 EOB), or no message at all (404).
    End,
    /// No responder: the stream does not exist.
    NoStream,
    /// An error status, or a message without a sequence.
    Failed(String),
}

/// Classifies a direct get reply by its status and headers.
fn direct_reply(status: Option<u16>, headers: Option<&HeaderMap>) -> DirectReply {
    match status {
        Some(204 | 404) => DirectReply::End,
        Some(503) => DirectReply::NoStream,
        Some(200) | None => headers
            .and_then(|h| h.get("Nats-Sequence"))
            .and_then(|v| v.as_str().parse().ok())
            .map_or_else(
                || DirectReply::Failed("a message without Nats-Sequence".into()),
                DirectReply::Message,
            ),
        Some(other) => DirectReply::Failed(format!("status {other}")),
    }
}

/// A RePublished room message as a member gateway receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Republished {
    /// The stream it was stored in (maps to the epoch).
    pub stream: String,
    /// Its offset (the stream sequence).
    pub offset: u64,
    /// The room's previous offset (0: the room's first message in this
    /// stream). A member whose last offset differs missed a message.
    pub previous: u64,
}

/// Reads the RePublish headers (`Nats-Stream`, `Nats-Sequence`,
/// `Nats-Last-Sequence`); `None` for a message that was not RePublished.
pub fn republished(headers: Option<&HeaderMap>) -> Option<Republished> {
    let headers = headers?;
    let get = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    Some(Republished {
        stream: get("Nats-Stream")?,
        offset: get("Nats-Sequence")?.parse().ok()?,
        previous: get("Nats-Last-Sequence")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    })
}

/// Whether every message of a room after `since` is still kept. If one of
/// the room's kept messages is at or before `since`, yes: a stream drops a
/// subject's messages oldest first (the store answers that case without
/// asking for the stream's range).
///
/// Messages leave a stream in two ways: from its head (by age, `MaxAge`, in
/// sequence order), below `stream_first`; or by the per-subject limit, which
/// leaves `history_size` newer messages of that room. So nothing after
/// `since` was dropped when nothing after it left the head (`since + 1 ≥
/// stream_first`) and the room keeps fewer than `history_size` messages
/// after it. A `since` beyond the stream's last sequence is not an offset
/// this stream gave.
pub fn complete_after(
    since: u64,
    first_kept: Option<u64>,
    kept_after: usize,
    history_size: u32,
    stream_first: u64,
    stream_last: u64,
) -> bool {
    if since > stream_last {
        return false;
    }
    first_kept.is_some_and(|first| first <= since)
        || (since + 1 >= stream_first && kept_after < history_size as usize)
}

/// The stream's configuration; the same on every gateway.
fn stream_config(
    config: &JetStreamConfig,
    ns: &str,
    k: u32,
    options: &NamespaceOptions,
) -> stream::Config {
    let subjects = format!("{}.hist.{}.{k}.*", config.prefix, ns_token(ns));
    stream::Config {
        name: stream_name(&config.prefix, ns, k),
        description: Some(format!(
            "Roomcast history of namespace {ns:?}, shard {k} of {}",
            config.shards
        )),
        subjects: vec![subjects.clone()],
        max_messages_per_subject: i64::from(options.history_size),
        max_age: options.history_ttl(),
        num_replicas: config.replicas,
        storage: match config.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        discard: stream::DiscardPolicy::Old,
        retention: stream::RetentionPolicy::Limits,
        allow_direct: true,
        republish: Some(stream::Republish {
            source: subjects,
            destination: format!("{}.room.{{{{wildcard(1)}}}}", config.prefix),
            headers_only: false,
        }),
        ..Default::default()
    }
}

/// The shard of `room` among `shards`: FNV-1a (64 bit) of its name. Spelled
/// out rather than taken from a hasher so it can never change between
/// builds: every gateway must put a room in the same stream.
pub fn shard_of(room: &str, shards: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(shards.max(1))) as u32
}

/// A namespace name as a stream-name and subject token: letters and digits
/// as they are, every other byte as `_XX` (hex), the default namespace `_`.
/// Stream names admit no `/` (and `-` separates the name's parts).
pub fn ns_token(ns: &str) -> String {
    if ns.is_empty() {
        return "_".into();
    }
    let mut out = String::with_capacity(ns.len());
    for b in ns.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The stream of shard `k` of namespace `ns`: `<prefix>-hist-<ns>-<k>`.
pub fn stream_name(prefix: &str, ns: &str, k: u32) -> String {
    format!("{prefix}-hist-{}-{k}", ns_token(ns))
}

/// Where a room's messages are stored: `<prefix>.hist.<ns>.<k>.<room>`.
pub fn store_subject(prefix: &str, ns: &str, k: u32, room: &str) -> String {
    format!("{prefix}.hist.{}.{k}.{room}", ns_token(ns))
}

/// The epoch of a stream created at `created_nanos` (Unix time, ns).
pub fn epoch_of(created_nanos: i128) -> Epoch {
    Epoch::new(format!("j{created_nanos:x}"))
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> HistoryError {
    HistoryError::Unavailable(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of FNV-1a 64: "" and "a".
        assert_eq!(
            shard_of("", u32::MAX),
            (0xcbf2_9ce4_8422_2325u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            shard_of("a", u32::MAX),
            (0xaf63_dc4c_8601_ec8cu64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(shard_of("chat:1", 1), 0);
        assert_eq!(shard_of("chat:1", 0), 0, "no shards counts as one");
    }

    #[test]
    fn names_and_subjects_are_safe_tokens() {
        assert_eq!(ns_token(""), "_");
        assert_eq!(ns_token("chat"), "chat");
        assert_eq!(ns_token("a/b-c_d@e"), "a_2Fb_2Dc_5Fd_40e");
        assert_eq!(stream_name("t1", "chat", 3), "t1-hist-chat-3");
        assert_eq!(stream_name("t1", "", 0), "t1-hist-_-0");
        assert_eq!(
            store_subject("t1", "chat", 3, "chat:1/a@b"),
            "t1.hist.chat.3.chat:1/a@b"
        );
    }

    #[test]
    fn stream_config_carries_the_namespace_options() {
        let options: NamespaceOptions = "chat:history_size=100,history_ttl_seconds=60"
            .parse::<crate::namespace::NamespaceSpec>()
            .unwrap()
            .options;
        let config = JetStreamConfig {
            prefix: "t1".into(),
            replicas: 3,
            ..Default::default()
        };
        let s = stream_config(&config, "chat", 2, &options);
        assert_eq!(s.name, "t1-hist-chat-2");
        assert_eq!(s.subjects, ["t1.hist.chat.2.*"]);
        assert_eq!(s.max_messages_per_subject, 100);
        assert_eq!(s.max_age, Duration::from_secs(60));
        assert_eq!(s.num_replicas, 3);
        assert!(s.allow_direct);
        let republish = s.republish.unwrap();
        assert_eq!(republish.source, "t1.hist.chat.2.*");
        assert_eq!(republish.destination, "t1.room.{{wildcard(1)}}");
        assert!(!republish.headers_only);
    }

    #[test]
    fn direct_replies_are_classified() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Sequence", "42");
        assert_eq!(direct_reply(None, Some(&h)), DirectReply::Message(42));
        assert_eq!(direct_reply(Some(204), None), DirectReply::End);
        assert_eq!(direct_reply(Some(404), None), DirectReply::End);
        assert_eq!(direct_reply(Some(503), None), DirectReply::NoStream);
        assert!(matches!(
            direct_reply(Some(408), None),
            DirectReply::Failed(_)
        ));
        assert!(matches!(direct_reply(None, None), DirectReply::Failed(_)));
    }

    #[test]
    fn republish_headers_are_read() {
        let mut h = HeaderMap::new();
        h.insert("Nats-Stream", "t1-hist-chat-0");
        h.insert("Nats-Sequence", "9");
        h.insert("Nats-Last-Sequence", "4");
        assert_eq!(
            republished(Some(&h)),
            Some(Republished {
                stream: "t1-hist-chat-0".into(),
                offset: 9,
                previous: 4
            })
        );
        assert_eq!(republished(None), None);
        assert_eq!(republished(Some(&HeaderMap::new())), None);
    }

    #[test]
    fn completeness_after_since() {
        // A kept message at or before since: nothing after it was dropped.
        assert!(complete_after(5, Some(5), 3, 10, 100, 200));
        assert!(complete_after(5, Some(2), 9, 10, 1, 200));
        // Nothing left the head after since, and fewer than history_size kept.
        assert!(complete_after(0, Some(3), 2, 10, 1, 3));
        assert!(
            complete_after(0, None, 0, 10, 1, 0),
            "an empty fresh stream"
        );
        assert!(
            complete_after(7, None, 0, 10, 8, 7),
            "all expired, client had all"
        );
        // Head drops after since: unknown, so not complete.
        assert!(!complete_after(0, Some(30), 2, 10, 20, 40));
        // history_size kept after since: the per-subject limit may have dropped some.
        assert!(!complete_after(0, Some(3), 10, 10, 1, 40));
        // since beyond any sequence of the stream.
        assert!(!complete_after(50, None, 0, 10, 1, 40));
    }

    #[test]
    fn epochs_differ_by_creation_time() {
        assert_ne!(epoch_of(1), epoch_of(2));
        assert_eq!(epoch_of(255).as_str(), "jff");
    }

    #[test]
    fn a_lower_sequence_is_suspect_at_most_once_a_second() {
        let shard = Shard {
            name: "s".into(),
            stream: stream::Config::default(),
            state: Mutex::new(ShardState::default()),
        };
        let t0 = Instant::now();
        assert!(!shard.suspect(5, t0));
        assert!(!shard.suspect(6, t0));
        assert!(shard.suspect(1, t0));
        assert!(!shard.suspect(7, t0));
        assert!(!shard.suspect(2, t0 + Duration::from_millis(10)));
        assert!(shard.suspect(1, t0 + REFRESH_EVERY));
    }

    proptest! {
        /// Shards are always in range and spread rooms over all of them.
        #[test]
        fn shards_are_in_range(room in "[A-Za-z0-9_:@/-]{1,128}", shards in 1u32..64) {
            prop_assert!(shard_of(&room, shards) < shards);
        }

        /// The token of a namespace is a valid stream-name part: letters,
        /// digits and `_` only, and distinct namespaces get distinct tokens.
        #[test]
        fn tokens_are_injective(a in "[A-Za-z0-9_@/-]{0,20}", b in "[A-Za-z0-9_@/-]{0,20}") {
            let (ta, tb) = (ns_token(&a), ns_token(&b));
            prop_assert!(ta.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_'));
            prop_assert_eq!(a == b, ta == tb);
        }
    }
}
