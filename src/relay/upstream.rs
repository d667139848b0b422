//! The pod's Discord sessions, as the relay's clients reach them: who the bot is (from the
//! sessions' READY), member requests (op 8) sent on the session that carries the guild with
//! their chunks routed back to the requester by nonce, and presence updates (op 3) applied
//! to every session.

use serde_json::Value;
use serenity::gateway::{ActivityData, ChunkGuildFilter, ShardMessenger};
use serenity::model::id::{GuildId, UserId};
use serenity::model::user::OnlineStatus;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The bot as Discord introduced it to the pod: what the relay's READY repeats.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: Value,
    pub application: Value,
}

/// A frame for one client only, outside the shared stream: a member request's chunk.
#[derive(Debug)]
pub struct Direct {
    pub kind: &'static str,
    pub data: String,
}

/// A member request waiting for its chunks.
struct Pending {
    to: mpsc::Sender<Direct>,
    /// The client's own nonce, given back in each chunk.
    nonce: Option<Value>,
    asked: Instant,
}

/// Past this a request's chunks are no longer expected (Discord answers within seconds).
const REQUEST_LIFETIME: Duration = Duration::from_secs(60);

/// Requests waiting for chunks, at most: beyond, the oldest are forgotten.
const MAX_PENDING: usize = 1024;

#[derive(Default)]
pub struct Upstream {
    identity: Mutex<Option<Identity>>,
    /// The guilds each session's READY listed (by shard id), less those the bot left since.
    guilds: Mutex<BTreeMap<u32, Vec<u64>>>,
    /// Each session's messenger by shard id, with the shard count it serves.
    shards: Mutex<BTreeMap<u32, (u32, ShardMessenger)>>,
    pending: Mutex<HashMap<String, Pending>>,
    next_nonce: AtomicU64,
    identity_known: tokio::sync::Notify,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update is one step: a panic elsewhere leaves consistent data.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a client's request could not be passed on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UpstreamError {
    #[error("no Discord session of this pod carries guild {0}")]
    NoSession(u64),
    #[error("not a snowflake: {0}")]
    BadId(String),
}

impl Upstream {
    /// A session of shard `[id, total]` is ready: READY's user and application, the guilds it
    /// listed, and its messenger.
    pub fn ready(
        &self,
        shard: [u32; 2],
        identity: Identity,
        guilds: Vec<u64>,
        messenger: ShardMessenger,
    ) {
        *lock(&self.identity) = Some(identity);
        lock(&self.guilds).insert(shard[0], guilds);
        lock(&self.shards).insert(shard[0], (shard[1], messenger));
        self.identity_known.notify_waiters();
    }

    /// Every guild the pod's sessions' READYs listed (the bot's guilds on those shards).
    pub fn ready_guilds(&self) -> Vec<u64> {
        lock(&self.guilds).values().flatten().copied().collect()
    }

    /// The bot left `guild_id` (a GUILD_DELETE that is not an outage).
    pub fn forget(&self, guild_id: u64) {
        for guilds in lock(&self.guilds).values_mut() {
            guilds.retain(|&g| g != guild_id);
        }
    }

    /// The bot's identity once a session was ready; waits at most `limit`.
    pub async fn identity(&self, limit: Duration) -> Option<Identity> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let known = self.identity_known.notified();
            if let Some(identity) = lock(&self.identity).clone() {
                return Some(identity);
            }
            if tokio::time::timeout_at(deadline, known).await.is_err() {
                return None;
            }
        }
    }

    /// op 8 for `guild_id` from a client: sent on the session whose shard carries the guild,
    /// under a nonce of the relay's; the chunks go to `to`.
    pub fn request_members(
        &self,
        guild_id: u64,
        request: &Value,
        to: mpsc::Sender<Direct>,
    ) -> Result<(), UpstreamError> {
        let messenger = {
            let shards = lock(&self.shards);
            shards
                .iter()
                .find(|(&id, (total, _))| {
                    (guild_id >> 22) % u64::from((*total).max(1)) == u64::from(id)
                })
                .map(|(_, (_, messenger))| messenger.clone())
                .ok_or(UpstreamError::NoSession(guild_id))?
        };
        let filter = match request.get("user_ids") {
            Some(Value::Array(ids)) => ChunkGuildFilter::UserIds(
                ids.iter()
                    .map(snowflake)
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .map(UserId::new)
                    .collect(),
            ),
            Some(id @ Value::String(_)) => {
                ChunkGuildFilter::UserIds(vec![UserId::new(snowflake(id)?)])
            }
            _ => match request.get("query").and_then(Value::as_str) {
                Some(query) if !query.is_empty() => ChunkGuildFilter::Query(query.to_owned()),
                _ => ChunkGuildFilter::None,
            },
        };
        let limit = request
            .get("limit")
            .and_then(Value::as_u64)
            .map(|l| l.min(u64::from(u16::MAX)) as u16);
        let presences = request
            .get("presences")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let nonce = format!("relay-{}", self.next_nonce.fetch_add(1, Ordering::Relaxed));
        {
            let mut pending = lock(&self.pending);
            let now = Instant::now();
            pending
                .retain(|_, p| now.duration_since(p.asked) < REQUEST_LIFETIME && !p.to.is_closed());
            if pending.len() >= MAX_PENDING {
                if let Some(oldest) = pending
                    .iter()
                    .min_by_key(|(_, p)| p.asked)
                    .map(|(k, _)| k.clone())
                {
                    pending.remove(&oldest);
                }
            }
            pending.insert(
                nonce.clone(),
                Pending {
                    to,
                    nonce: request.get("nonce").cloned(),
                    asked: now,
                },
            );
        }
        messenger.chunk_guild(
            GuildId::new(guild_id.max(1)),
            limit,
            presences,
            filter,
            Some(nonce),
        );
        Ok(())
    }

    /// A GUILD_MEMBERS_CHUNK from Discord (its `d`): to the client that asked, with its own
    /// nonce. Chunks of requests the relay did not make are not for any client.
    pub fn chunk(&self, data: &str) {
        let Ok(Value::Object(mut d)) = serde_json::from_str::<Value>(data) else {
            return;
        };
        let Some(nonce) = d.get("nonce").and_then(Value::as_str).map(str::to_owned) else {
            return;
        };
        let last = match (
            d.get("chunk_index").and_then(Value::as_u64),
            d.get("chunk_count").and_then(Value::as_u64),
        ) {
            (Some(index), Some(count)) => index + 1 >= count,
            _ => true,
        };
        let mut pending = lock(&self.pending);
        let Some(request) = pending.get(&nonce) else {
            return;
        };
        match &request.nonce {
            Some(theirs) => d.insert("nonce".into(), theirs.clone()),
            None => d.remove("nonce"),
        };
        // A client too slow to take its own chunks loses them, not the pod's stream.
        let _ = request.to.try_send(Direct {
            kind: "GUILD_MEMBERS_CHUNK",
            data: Value::Object(d).to_string(),
        });
        if last {
            pending.remove(&nonce);
        }
    }

    /// op 3 from a client: the status and first activity, on every session of the pod.
    pub fn set_presence(&self, presence: &Value) {
        let status = match presence.get("status").and_then(Value::as_str) {
            Some("idle") => OnlineStatus::Idle,
            Some("dnd") => OnlineStatus::DoNotDisturb,
            Some("invisible" | "offline") => OnlineStatus::Invisible,
            _ => OnlineStatus::Online,
        };
        let activity = presence
            .get("activities")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(activity);
        for (_, messenger) in lock(&self.shards).values() {
            messenger.set_presence(activity.clone(), status);
        }
    }
}

fn snowflake(value: &Value) -> Result<u64, UpstreamError> {
    match value {
        Value::String(s) => s.parse().map_err(|_| UpstreamError::BadId(s.clone())),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| UpstreamError::BadId(n.to_string())),
        other => Err(UpstreamError::BadId(other.to_string())),
    }
}

/// A Discord activity object as serenity's, for the types a bot may set.
fn activity(a: &Value) -> Option<ActivityData> {
    let name = a.get("name").and_then(Value::as_str)?.to_owned();
    Some(match a.get("type").and_then(Value::as_u64).unwrap_or(0) {
        1 => match a.get("url").and_then(Value::as_str) {
            Some(url) => ActivityData::streaming(name.clone(), url)
                .unwrap_or_else(|_| ActivityData::playing(name)),
            None => ActivityData::playing(name),
        },
        2 => ActivityData::listening(name),
        3 => ActivityData::watching(name),
        4 => ActivityData::custom(
            a.get("state")
                .and_then(Value::as_str)
                .unwrap_or(&name)
                .to_owned(),
        ),
        5 => ActivityData::competing(name),
        _ => ActivityData::playing(name),
    })
}
