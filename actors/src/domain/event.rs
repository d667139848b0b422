//! The gateway event model: what a dispatch carries that this service uses, decoded once.
//!
//! Input is Discord's wire format, `{"op":0,"t":"MESSAGE_CREATE","s":17,"d":{...}}`. Only the
//! fields the handlers read are decoded; the rest of the payload is skipped by serde without
//! being built. Unknown event types still yield their `guild_id`, so every dispatch can pass the
//! shard filter.

use crate::domain::time::parse_timestamp_ms;
use serde::de::{self, Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::fmt;

/// A Discord snowflake id. On the wire it is a decimal string (numbers are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub u64);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Id {
    /// Milliseconds since the Unix epoch at which the id was minted.
    pub fn timestamp_ms(self) -> i64 {
        const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
        ((self.0 >> 22) + DISCORD_EPOCH_MS) as i64
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl de::Visitor<'_> for IdVisitor {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a snowflake (decimal string or integer)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse()
                    .map(Id)
                    .map_err(|_| E::custom(format!("invalid snowflake {v:?}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

macro_rules! event_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// The dispatch types this service knows by name. Metrics are labelled with these, so
        /// the label set stays bounded whatever a stream contains; anything else is `Other`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind { $($variant,)* Other }

        impl EventKind {
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)* EventKind::Other];

            pub fn from_name(name: &str) -> EventKind {
                match name { $($name => EventKind::$variant,)* _ => EventKind::Other }
            }

            pub fn name(self) -> &'static str {
                match self { $(EventKind::$variant => $name,)* EventKind::Other => "OTHER" }
            }
        }
    };
}

event_kinds! {
    Ready => "READY",
    Resumed => "RESUMED",
    GuildCreate => "GUILD_CREATE",
    GuildUpdate => "GUILD_UPDATE",
    GuildDelete => "GUILD_DELETE",
    GuildAuditLogEntryCreate => "GUILD_AUDIT_LOG_ENTRY_CREATE",
    GuildBanAdd => "GUILD_BAN_ADD",
    GuildBanRemove => "GUILD_BAN_REMOVE",
    GuildMemberAdd => "GUILD_MEMBER_ADD",
    GuildMemberRemove => "GUILD_MEMBER_REMOVE",
    GuildMemberUpdate => "GUILD_MEMBER_UPDATE",
    GuildRoleCreate => "GUILD_ROLE_CREATE",
    GuildRoleUpdate => "GUILD_ROLE_UPDATE",
    GuildRoleDelete => "GUILD_ROLE_DELETE",
    ChannelCreate => "CHANNEL_CREATE",
    ChannelUpdate => "CHANNEL_UPDATE",
    ChannelDelete => "CHANNEL_DELETE",
    ThreadCreate => "THREAD_CREATE",
    ThreadUpdate => "THREAD_UPDATE",
    ThreadDelete => "THREAD_DELETE",
    ThreadListSync => "THREAD_LIST_SYNC",
    MessageCreate => "MESSAGE_CREATE",
    MessageUpdate => "MESSAGE_UPDATE",
    MessageDelete => "MESSAGE_DELETE",
    MessageDeleteBulk => "MESSAGE_DELETE_BULK",
    MessageReactionAdd => "MESSAGE_REACTION_ADD",
    MessageReactionRemove => "MESSAGE_REACTION_REMOVE",
    MessageReactionRemoveAll => "MESSAGE_REACTION_REMOVE_ALL",
    AutoModerationActionExecution => "AUTO_MODERATION_ACTION_EXECUTION",
    PresenceUpdate => "PRESENCE_UPDATE",
    TypingStart => "TYPING_START",
    VoiceStateUpdate => "VOICE_STATE_UPDATE",
    InteractionCreate => "INTERACTION_CREATE",
}

/// One decoded dispatch.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub kind: EventKind,
    /// The gateway sequence number (`s`), when the source has one.
    pub seq: Option<u64>,
    /// The guild the event belongs to; `None` for DMs and guild-less events.
    pub guild_id: Option<Id>,
    pub event: Event,
    /// The payload as received, for the events that store something: what a rescale's
    /// capture log keeps, to decode again on the guild's new owner.
    pub payload: Option<std::sync::Arc<str>>,
}

/// The events the guild handlers act on; everything else is `Other` (counted, not stored).
#[derive(Debug, Clone)]
pub enum Event {
    GuildCreate(GuildCreate),
    ChannelUpsert(Channel),
    ChannelDelete {
        id: Id,
    },
    MessageCreate(Box<MessageCreate>),
    MessageUpdate(MessageUpdate),
    MessageDelete {
        ids: Vec<Id>,
    },
    Reaction(Reaction),
    /// READY: who the bot is (its own moderation actions are not logged).
    Ready {
        bot_user_id: Id,
    },
    /// GUILD_BAN_ADD (`added`) or GUILD_BAN_REMOVE.
    Ban {
        user_id: Id,
        added: bool,
    },
    MemberRemove {
        user_id: Id,
    },
    /// GUILD_MEMBER_UPDATE; `timeout_until_ms`: communication_disabled_until, Unix ms.
    MemberUpdate {
        user_id: Id,
        timeout_until_ms: Option<i64>,
    },
    AuditEntry(AuditEntry),
    Other,
}

/// Audit log action types this service matches moderation events with.
pub mod audit_action {
    pub const MEMBER_KICK: u16 = 20;
    pub const MEMBER_BAN_ADD: u16 = 22;
    pub const MEMBER_BAN_REMOVE: u16 = 23;
    pub const MEMBER_UPDATE: u16 = 24;
}

/// A GUILD_AUDIT_LOG_ENTRY_CREATE, reduced to what matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: Id,
    pub action: u16,
    pub target_id: Option<Id>,
    pub executor_id: Option<Id>,
    pub reason: Option<String>,
    /// For member updates: how communication_disabled_until changed, if it did.
    pub timeout_change: Option<TimeoutChange>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutChange {
    Set,
    Cleared,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GuildCreate {
    pub id: Id,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub threads: Vec<Channel>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Channel {
    pub id: Id,
    #[serde(rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub guild_id: Option<Id>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub parent_id: Option<Id>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Author {
    pub id: Id,
    #[serde(default)]
    pub bot: bool,
    #[serde(default)]
    pub system: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReferencedMessage {
    pub author: Author,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MessageCreate {
    pub id: Id,
    pub channel_id: Id,
    #[serde(default)]
    pub guild_id: Option<Id>,
    pub author: Author,
    #[serde(default)]
    pub webhook_id: Option<Id>,
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub referenced_message: Option<ReferencedMessage>,
    #[serde(default, deserialize_with = "count_entries")]
    pub reactions: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MessageUpdate {
    pub id: Id,
    pub channel_id: Id,
    #[serde(default)]
    pub guild_id: Option<Id>,
    /// Absent on partial updates (for example embeds resolved after the message was sent).
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reaction {
    #[serde(skip)]
    pub added: bool,
    pub message_id: Id,
    pub user_id: Id,
    #[serde(default)]
    pub guild_id: Option<Id>,
    pub emoji: Emoji,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Emoji {
    #[serde(default)]
    pub id: Option<Id>,
    #[serde(default)]
    pub name: Option<String>,
}

impl Emoji {
    /// A stable key for the emoji: its id for custom emoji, else its unicode name.
    pub fn key(&self) -> String {
        match (self.id, &self.name) {
            (Some(id), _) => id.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => String::new(),
        }
    }
}

#[derive(Deserialize)]
struct UserRef {
    id: Id,
}

#[derive(Deserialize)]
struct UserScoped {
    #[serde(default)]
    guild_id: Option<Id>,
    user: UserRef,
}

#[derive(Deserialize)]
struct MemberUpdate {
    #[serde(default)]
    guild_id: Option<Id>,
    user: UserRef,
    #[serde(default)]
    communication_disabled_until: Option<String>,
}

#[derive(Deserialize)]
struct ReadyPayload {
    user: UserRef,
}

#[derive(Deserialize)]
struct AuditChange {
    key: String,
    #[serde(default)]
    new_value: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct AuditPayload {
    #[serde(default)]
    guild_id: Option<Id>,
    id: Id,
    action_type: u16,
    #[serde(default)]
    target_id: Option<Id>,
    #[serde(default)]
    user_id: Option<Id>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    changes: Option<Vec<AuditChange>>,
}

fn count_entries<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let entries: Option<Vec<IgnoredAny>> = Deserialize::deserialize(deserializer)?;
    Ok(entries.map_or(0, |e| e.len()))
}

/// Why a line of a recorded stream could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a gateway frame")]
    Frame(#[source] serde_json::Error),
    #[error("op {0} is not a dispatch (op 0)")]
    NotDispatch(u8),
    #[error("dispatch without an event type (t)")]
    MissingType,
    #[error("dispatch without data (d)")]
    MissingData,
    #[error("bad {kind} payload")]
    Payload {
        kind: &'static str,
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct Frame<'a> {
    op: u8,
    /// Owned only when the name has JSON escapes (valid, if unusual).
    #[serde(default, borrow)]
    t: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default, borrow)]
    d: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct GuildScoped {
    #[serde(default)]
    guild_id: Option<Id>,
}

#[derive(Deserialize)]
struct Ids {
    ids: Vec<Id>,
    #[serde(default)]
    guild_id: Option<Id>,
}

#[derive(Deserialize)]
struct Deleted {
    id: Id,
    #[serde(default)]
    guild_id: Option<Id>,
}

/// Decodes one wire frame (a line of a recorded stream, or a gateway text frame).
pub fn decode_frame(text: &str) -> Result<Dispatch, DecodeError> {
    let frame: Frame = serde_json::from_str(text).map_err(DecodeError::Frame)?;
    if frame.op != 0 {
        return Err(DecodeError::NotDispatch(frame.op));
    }
    let name = frame.t.ok_or(DecodeError::MissingType)?;
    let data = frame.d.ok_or(DecodeError::MissingData)?;
    decode_dispatch(&name, frame.s, data.get())
}

/// Decodes the `d` payload of a dispatch of type `name`.
pub fn decode_dispatch(name: &str, seq: Option<u64>, data: &str) -> Result<Dispatch, DecodeError> {
    let kind = EventKind::from_name(name);
    let payload = |source| DecodeError::Payload {
        kind: kind.name(),
        source,
    };
    let (guild_id, event) = match kind {
        EventKind::GuildCreate => {
            let g: GuildCreate = serde_json::from_str(data).map_err(payload)?;
            (Some(g.id), Event::GuildCreate(g))
        }
        EventKind::ChannelCreate
        | EventKind::ChannelUpdate
        | EventKind::ThreadCreate
        | EventKind::ThreadUpdate => {
            let c: Channel = serde_json::from_str(data).map_err(payload)?;
            (c.guild_id, Event::ChannelUpsert(c))
        }
        EventKind::ChannelDelete | EventKind::ThreadDelete => {
            let d: Deleted = serde_json::from_str(data).map_err(payload)?;
            (d.guild_id, Event::ChannelDelete { id: d.id })
        }
        EventKind::MessageCreate => {
            let m: MessageCreate = serde_json::from_str(data).map_err(payload)?;
            (m.guild_id, Event::MessageCreate(Box::new(m)))
        }
        EventKind::MessageUpdate => {
            let m: MessageUpdate = serde_json::from_str(data).map_err(payload)?;
            (m.guild_id, Event::MessageUpdate(m))
        }
        EventKind::MessageDelete => {
            let d: Deleted = serde_json::from_str(data).map_err(payload)?;
            (d.guild_id, Event::MessageDelete { ids: vec![d.id] })
        }
        EventKind::MessageDeleteBulk => {
            let d: Ids = serde_json::from_str(data).map_err(payload)?;
            (d.guild_id, Event::MessageDelete { ids: d.ids })
        }
        EventKind::MessageReactionAdd | EventKind::MessageReactionRemove => {
            let mut r: Reaction = serde_json::from_str(data).map_err(payload)?;
            r.added = kind == EventKind::MessageReactionAdd;
            (r.guild_id, Event::Reaction(r))
        }
        EventKind::Ready => {
            let r: ReadyPayload = serde_json::from_str(data).map_err(payload)?;
            (
                None,
                Event::Ready {
                    bot_user_id: r.user.id,
                },
            )
        }
        EventKind::GuildBanAdd | EventKind::GuildBanRemove => {
            let b: UserScoped = serde_json::from_str(data).map_err(payload)?;
            (
                b.guild_id,
                Event::Ban {
                    user_id: b.user.id,
                    added: kind == EventKind::GuildBanAdd,
                },
            )
        }
        EventKind::GuildMemberRemove => {
            let m: UserScoped = serde_json::from_str(data).map_err(payload)?;
            (m.guild_id, Event::MemberRemove { user_id: m.user.id })
        }
        EventKind::GuildMemberUpdate => {
            let m: MemberUpdate = serde_json::from_str(data).map_err(payload)?;
            let timeout_until_ms = match m.communication_disabled_until {
                Some(t) => Some(parse_timestamp_ms(&t).ok_or_else(|| {
                    payload(serde::de::Error::custom(format!(
                        "bad communication_disabled_until {t:?}"
                    )))
                })?),
                None => None,
            };
            (
                m.guild_id,
                Event::MemberUpdate {
                    user_id: m.user.id,
                    timeout_until_ms,
                },
            )
        }
        EventKind::GuildAuditLogEntryCreate => {
            let a: AuditPayload = serde_json::from_str(data).map_err(payload)?;
            let timeout_change = a
                .changes
                .iter()
                .flatten()
                .find(|c| c.key == "communication_disabled_until")
                .map(|c| {
                    if c.new_value.is_some() {
                        TimeoutChange::Set
                    } else {
                        TimeoutChange::Cleared
                    }
                });
            let entry = AuditEntry {
                id: a.id,
                action: a.action_type,
                target_id: a.target_id,
                executor_id: a.user_id,
                reason: a.reason,
                timeout_change,
            };
            (a.guild_id, Event::AuditEntry(entry))
        }
        _ => {
            // Payloads that are not objects (READY's siblings never are, but be lenient) carry
            // no guild.
            let scoped: Option<GuildScoped> = serde_json::from_str(data).ok();
            (scoped.and_then(|s| s.guild_id), Event::Other)
        }
    };
    let payload = (!matches!(event, Event::Other)).then(|| std::sync::Arc::from(data));
    Ok(Dispatch {
        kind,
        seq,
        guild_id,
        event,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_message_and_its_guild() {
        let d = decode_frame(
            r#"{"op":0,"t":"MESSAGE_CREATE","s":3,"d":{"id":"175928847299117063","channel_id":"1","guild_id":"2","author":{"id":"3","bot":true},"content":"hi","reactions":[{},{}]}}"#,
        )
        .unwrap();
        assert_eq!(
            (d.kind, d.seq, d.guild_id),
            (EventKind::MessageCreate, Some(3), Some(Id(2)))
        );
        let Event::MessageCreate(m) = d.event else {
            panic!("not a message")
        };
        assert!(m.author.bot);
        assert_eq!(m.reactions, 2);
        assert_eq!(m.id.timestamp_ms(), 1462015105796);
    }

    #[test]
    fn unknown_events_keep_their_guild() {
        let d =
            decode_frame(r#"{"op":0,"t":"SOMETHING_NEW","s":9,"d":{"guild_id":"42"}}"#).unwrap();
        assert_eq!((d.kind, d.guild_id), (EventKind::Other, Some(Id(42))));
    }

    #[test]
    fn malformed_frames_say_why() {
        assert!(matches!(decode_frame("{"), Err(DecodeError::Frame(_))));
        assert!(matches!(
            decode_frame(r#"{"op":11}"#),
            Err(DecodeError::NotDispatch(11))
        ));
        let err =
            decode_frame(r#"{"op":0,"t":"MESSAGE_CREATE","s":1,"d":{"id":"x"}}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("bad MESSAGE_CREATE payload"),
            "{err}"
        );
    }
}
