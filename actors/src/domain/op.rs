//! The writes the domain asks for: each handler's output, applied by the storage layer.
//!
//! Handlers never touch SQL; they produce [`Op`]s, which the single writer applies in batched
//! transactions (`storage::apply`). Every op is idempotent, so a stream delivered
//! twice (recovery, resharding) leaves the same rows.

use crate::domain::event::Id;
use crate::domain::stats::MessageStats;

/// A `message_stats` row for a new message.
#[derive(Debug, Clone)]
pub struct MessageRow {
    pub message_id: Id,
    pub author_id: Id,
    pub guild_id: Id,
    pub channel_id: Id,
    pub channel_category: Option<String>,
    pub recipient_id: Option<Id>,
    pub react_count: i64,
    pub sent_at: i64,
    pub stats: MessageStats,
}

/// One idempotent write of one guild's actor. Each names its guild and touches only that
/// guild's rows: a row found by its own id (a channel, a message, an audit entry) that belongs
/// to another guild is left as it is and the write is refused (see `domain::scope`).
#[derive(Debug, Clone)]
pub enum Op {
    /// A `guilds` row if absent; settings are never overwritten.
    EnsureGuild(Id),
    UpsertChannel {
        id: Id,
        guild_id: Id,
        name: Option<String>,
        category: Option<String>,
        kind: u8,
        parent_id: Option<Id>,
    },
    /// A channel was (re)named: its children's category follows.
    RenameParent {
        guild_id: Id,
        parent_id: Id,
        name: Option<String>,
    },
    DeleteChannel {
        guild_id: Id,
        id: Id,
    },
    /// Insert or replace a message's stats; its reaction history starts again.
    InsertMessage(Box<MessageRow>),
    UpdateMessageStats {
        guild_id: Id,
        message_id: Id,
        stats: MessageStats,
    },
    DeleteMessage {
        guild_id: Id,
        id: Id,
    },
    Reaction {
        guild_id: Id,
        message_id: Id,
        user_id: Id,
        emoji: String,
        added: bool,
    },
    UpsertCache {
        message_id: Id,
        guild_id: Id,
        channel_id: Id,
        user_id: Id,
        content: String,
    },
    UpdateCache {
        guild_id: Id,
        message_id: Id,
        content: String,
    },
    /// A `mod_actions` row; with a `source_key`, written once however often it is delivered.
    InsertModAction {
        guild_id: Id,
        user_id: Id,
        action: &'static str,
        executor_id: Option<Id>,
        reason: String,
        duration: Option<String>,
        source_key: Option<String>,
        /// A row paired with its entry: the key its event's row carries when written without
        /// one. An event delivered again (after a restart) may have been written so before
        /// its window closed; that row is completed, not written twice.
        unpaired_key: Option<String>,
    },
    /// An audit log entry that no waiting event matched. Its event may have been written
    /// without it (the window closed first, or a flush at shutdown or at the end of a replay,
    /// possibly by an earlier process): that row, the guild's most recent one for this member
    /// and action with no executor and not paired with an entry, is completed with the entry's
    /// executor and reason, or removed if the bot itself acted (its own actions are not
    /// logged). Rows written before `not_before_ms` (the entry's own creation, less some
    /// clock skew) cannot be its event's and are left alone. Without such a row nothing is
    /// written. Done once per entry: `source_key` is recorded in `mod_action_late_entries`.
    CompleteModAction {
        guild_id: Id,
        user_id: Id,
        action: &'static str,
        /// "audit:<entry id>", as the row would carry had the pair been found in time.
        source_key: String,
        not_before_ms: i64,
        executor_id: Option<Id>,
        reason: String,
        by_bot: bool,
    },
    /// A member left and no kick entry came in its window: a late entry may still make it a
    /// kick (`CompleteModAction`).
    RecordUnpairedRemoval {
        guild_id: Id,
        user_id: Id,
    },
    /// A member's communication_disabled_until (None: no timeout).
    SetMemberTimeout {
        guild_id: Id,
        user_id: Id,
        until_ms: Option<i64>,
    },
    /// Append an event of a guild coming to this pod to the capture log (a live rescale).
    Capture {
        guild_id: Id,
        seq: Option<u64>,
        kind: &'static str,
        payload: std::sync::Arc<str>,
        /// When the pod received it (Unix ms).
        received_ms: i64,
    },
    /// Keep a moderation event or entry of a guild given away in a rescale that was still
    /// waiting for its counterpart: the new owner pairs it (see `gateway_handover`).
    HandOver {
        guild_id: Id,
        /// Its seq: what identifies a ban without its entry, re-applied after a restart.
        seq: Option<u64>,
        kind: &'static str,
        payload: std::sync::Arc<str>,
        received_ms: i64,
    },
}

/// A channel as a guild actor remembers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRow {
    pub id: Id,
    pub name: Option<String>,
    pub kind: Option<u8>,
    pub parent_id: Option<Id>,
}
