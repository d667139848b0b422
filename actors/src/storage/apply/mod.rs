//! The SQL of every [`Op`], one module per concern: `channels`, `messages` (with the cache
//! and reactions), `moderation` (actions, late entries, timeouts). Each write touches only
//! its own guild's rows: a row found by its own id that belongs to another guild is left as
//! it is and the write refused (see [`crate::domain::scope`]).

mod channels;
mod messages;
mod moderation;

use crate::domain::decimal::Decimal;
use crate::domain::event::Id;
use crate::domain::op::Op;
use crate::domain::scope::{CrossGuildWrite, Outcome};
use crate::storage::rescale::event_log::EventLog;
use rusqlite::{OptionalExtension, Transaction};

/// Applies one op inside the writer's transaction. `now` is the processing time (ISO-8601 UTC).
pub fn apply(tx: &Transaction, op: &Op, now: &str) -> rusqlite::Result<Outcome> {
    match op {
        Op::EnsureGuild(id) => channels::ensure_guild(tx, *id),
        Op::UpsertChannel {
            id,
            guild_id,
            name,
            category,
            kind,
            parent_id,
        } => channels::upsert_channel(tx, id, guild_id, name, category, kind, parent_id),
        Op::RenameParent {
            guild_id,
            parent_id,
            name,
        } => channels::rename_parent(tx, *guild_id, *parent_id, name),
        Op::DeleteChannel { guild_id, id } => channels::delete_channel(tx, *guild_id, *id),
        Op::InsertMessage(row) => messages::insert_message(tx, row),
        Op::UpdateMessageStats {
            guild_id,
            message_id,
            stats,
        } => messages::update_message_stats(tx, *guild_id, *message_id, stats),
        Op::DeleteMessage { guild_id, id } => messages::delete_message(tx, *guild_id, *id),
        Op::Reaction {
            guild_id,
            message_id,
            user_id,
            emoji,
            added,
        } => messages::apply_reaction(tx, *guild_id, *message_id, *user_id, emoji, *added),
        Op::UpsertCache {
            message_id,
            guild_id,
            channel_id,
            user_id,
            content,
        } => messages::upsert_cache(tx, message_id, guild_id, channel_id, user_id, content, now),
        Op::UpdateCache {
            guild_id,
            message_id,
            content,
        } => messages::update_cache(tx, *guild_id, *message_id, content, now),
        Op::InsertModAction { .. } => moderation::insert_or_complete(tx, op, now),
        Op::CompleteModAction { .. } => moderation::complete_mod_action(tx, op),
        Op::RecordUnpairedRemoval { guild_id, user_id } => {
            moderation::record_unpaired_removal(tx, *guild_id, *user_id, now)
        }
        Op::SetMemberTimeout {
            guild_id,
            user_id,
            until_ms,
        } => moderation::set_member_timeout(tx, *guild_id, *user_id, *until_ms),
        Op::Capture {
            guild_id,
            seq,
            kind,
            payload,
            received_ms,
        } => EventLog::Captured
            .append(tx, *guild_id, *seq, kind, payload, *received_ms)
            .map(|()| Outcome::Done),
        Op::HandOver {
            guild_id,
            seq,
            kind,
            payload,
            received_ms,
        } => EventLog::HandedOver
            .append(tx, *guild_id, *seq, kind, payload, *received_ms)
            .map(|()| Outcome::Done),
    }
}

pub(super) fn opt_id(id: Option<Id>) -> Option<IdText> {
    id.map(IdText::new)
}

/// An id bound as the decimal text the schema stores (the bot's tables keep ids as TEXT),
/// without an allocation: the writer binds several per event on the pipeline's busiest thread.
#[derive(Clone, Copy)]
pub(super) struct IdText(Decimal);

impl IdText {
    pub(super) fn new(id: impl std::borrow::Borrow<Id>) -> IdText {
        IdText(Decimal::new(id.borrow().0))
    }
}

impl std::ops::Deref for IdText {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl rusqlite::ToSql for IdText {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        Ok(rusqlite::types::ToSqlOutput::Borrowed(
            rusqlite::types::ValueRef::Text(self.as_bytes()),
        ))
    }
}

/// Who owns a row: `None` if there is no such row, `Some(None)` if it has no guild.
pub(super) type Owner = Option<Option<String>>;

pub(super) fn owner(
    tx: &Transaction,
    select_guild_by_key: &str,
    key: &str,
) -> rusqlite::Result<Owner> {
    tx.prepare_cached(select_guild_by_key)?
        .query_row([key], |r| r.get::<_, Option<String>>(0))
        .optional()
}

/// A channel's guild is in guild_channels; a channel_info row without one (a file from before
/// guild_channels with no guild there) has no guild, as a NULL guild_id had.
pub(super) const CHANNEL_OWNER: &str = "SELECT g.guild_id FROM channel_info c
     LEFT JOIN guild_channels g ON g.channel_id = c.id WHERE c.id = ?1";
pub(super) const MESSAGE_OWNER: &str = "SELECT guild_id FROM message_stats WHERE message_id = ?1";
pub(super) const CACHE_OWNER: &str = "SELECT guild_id FROM message_cache WHERE message_id = ?1";
pub(super) const MOD_ACTION_OWNER: &str = "SELECT guild_id FROM mod_actions WHERE source_key = ?1";
pub(super) const LATE_ENTRY_OWNER: &str =
    "SELECT guild_id FROM mod_action_late_entries WHERE source_key = ?1";

/// The outcome of a write that, scoped to `guild`, found nothing to change: refused if the
/// row is there but another guild's.
pub(super) fn unless_foreign(
    tx: &Transaction,
    select_guild_by_key: &str,
    write: &'static str,
    table: &'static str,
    key: &str,
    guild: &str,
    guild_id: Id,
) -> rusqlite::Result<Outcome> {
    Ok(match owner(tx, select_guild_by_key, key)? {
        Some(owner) if owner.as_deref() != Some(guild) => Outcome::Refused(CrossGuildWrite {
            write,
            table,
            key: key.to_owned(),
            guild_id,
            owner,
        }),
        _ => Outcome::Done,
    })
}

#[cfg(test)]
mod tests;
