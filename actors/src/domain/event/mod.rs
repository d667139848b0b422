//! The gateway event model: what a dispatch carries that this service uses, decoded once.
//!
//! Input is Discord's wire format, `{"op":0,"t":"MESSAGE_CREATE","s":17,"d":{...}}`. Only the
//! fields the handlers read are decoded; the rest of the payload is skipped by serde without
//! being built. Unknown event types still yield their `guild_id`, so every dispatch can pass the
//! shard filter.

mod decode;

#[cfg(test)]
mod tests;

pub use decode::{decode_dispatch, decode_frame, DecodeError};

use serde::de::{self, Deserializer, IgnoredAny};
use serde::Deserialize;
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
    pub(crate) fn timestamp_ms(self) -> i64 {
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
    /// The dispatch name when [`EventKind`] does not know it (`kind` is `Other`).
    pub other_name: Option<std::sync::Arc<str>>,
    /// The payload for relay clients when it differs from `payload` (the live path writes
    /// serenity's model back in Discord's shape, for the relay without its absent fields).
    pub relay_payload: Option<std::sync::Arc<str>>,
    /// The payload as received: what a rescale's capture log keeps, to decode again on the
    /// guild's new owner, and what the pod's relay sends its clients.
    pub payload: Option<std::sync::Arc<str>>,
}

impl Dispatch {
    /// The dispatch name (`t`) as Discord sent it.
    pub fn name(&self) -> &str {
        match &self.other_name {
            Some(name) => name,
            None => self.kind.name(),
        }
    }
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
    pub(crate) const MEMBER_KICK: u16 = 20;
    pub const MEMBER_BAN_ADD: u16 = 22;
    pub(crate) const MEMBER_BAN_REMOVE: u16 = 23;
    pub(crate) const MEMBER_UPDATE: u16 = 24;
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

fn count_entries<'de, D: Deserializer<'de>>(deserializer: D) -> Result<usize, D::Error> {
    let entries: Option<Vec<IgnoredAny>> = Deserialize::deserialize(deserializer)?;
    Ok(entries.map_or(0, |e| e.len()))
}
