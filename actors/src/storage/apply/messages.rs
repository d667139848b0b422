//! `message_stats`, `message_cache` and `message_reactions`.

use super::{opt_id, owner, unless_foreign, IdText, CACHE_OWNER, MESSAGE_OWNER};
use crate::domain::event::Id;
use crate::domain::op::MessageRow;
use crate::domain::scope::{CrossGuildWrite, Outcome};
use crate::domain::stats::MessageStats;
use rusqlite::{params, Transaction};

/// A new message's statistics row (rewritten on redelivery); its reactions start afresh.
pub(super) fn insert_message(tx: &Transaction, row: &MessageRow) -> rusqlite::Result<Outcome> {
    let (id, guild) = (IdText::new(row.message_id), IdText::new(row.guild_id));
    let rowid_before = tx.last_insert_rowid();
    let changed = tx
        .prepare_cached(
            "INSERT INTO message_stats (message_id, author_id, guild_id, channel_id,
                       channel_category, recipient_id, char_count, word_count, react_count,
                       sent_at, code_stats, link_stats)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
                     ON CONFLICT (message_id) DO UPDATE SET author_id = excluded.author_id,
                       channel_id = excluded.channel_id,
                       channel_category = excluded.channel_category,
                       recipient_id = excluded.recipient_id, char_count = excluded.char_count,
                       word_count = excluded.word_count, react_count = excluded.react_count,
                       sent_at = excluded.sent_at, code_stats = excluded.code_stats,
                       link_stats = excluded.link_stats
                     WHERE message_stats.guild_id = excluded.guild_id",
        )?
        .execute(params![
            id,
            IdText::new(row.author_id),
            guild,
            IdText::new(row.channel_id),
            row.channel_category,
            opt_id(row.recipient_id),
            row.stats.char_count,
            row.stats.word_count,
            row.react_count,
            row.sent_at,
            row.stats.code_stats,
            row.stats.link_stats,
        ])?;
    if changed == 0 {
        return unless_foreign(
            tx,
            MESSAGE_OWNER,
            "insert message",
            "message_stats",
            &id,
            &guild,
            row.guild_id,
        );
    }
    // Only the insert, not the upsert's update, moves last_insert_rowid. A new row has no
    // reactions to forget: they are kept only while their message's row exists, and leave
    // with it (delete_message, a rescale's removal).
    if tx.last_insert_rowid() == rowid_before {
        tx.prepare_cached("DELETE FROM message_reactions WHERE message_id = ?1")?
            .execute([id])?;
    }
    Ok(Outcome::Done)
}

pub(super) fn update_message_stats(
    tx: &Transaction,
    guild_id: Id,
    message_id: Id,
    stats: &MessageStats,
) -> rusqlite::Result<Outcome> {
    let (id, guild) = (IdText::new(message_id), IdText::new(guild_id));
    let changed = tx
        .prepare_cached(
            "UPDATE message_stats SET char_count = ?3, word_count = ?4, code_stats = ?5,
               link_stats = ?6 WHERE message_id = ?1 AND guild_id = ?2",
        )?
        .execute(params![
            id,
            guild,
            stats.char_count,
            stats.word_count,
            stats.code_stats,
            stats.link_stats
        ])?;
    if changed == 0 {
        return unless_foreign(
            tx,
            MESSAGE_OWNER,
            "update message",
            "message_stats",
            &id,
            &guild,
            guild_id,
        );
    }
    Ok(Outcome::Done)
}

/// The message's row and its reactions.
pub(super) fn delete_message(tx: &Transaction, guild_id: Id, id: Id) -> rusqlite::Result<Outcome> {
    let (id, guild) = (IdText::new(id), IdText::new(guild_id));
    let deleted = tx
        .prepare_cached("DELETE FROM message_stats WHERE message_id = ?1 AND guild_id = ?2")?
        .execute([&id, &guild])?;
    if deleted == 0 {
        let outcome = unless_foreign(
            tx,
            MESSAGE_OWNER,
            "delete message",
            "message_stats",
            &id,
            &guild,
            guild_id,
        )?;
        // The reactions of another guild's message are that guild's too.
        if outcome != Outcome::Done {
            return Ok(outcome);
        }
    }
    tx.prepare_cached("DELETE FROM message_reactions WHERE message_id = ?1")?
        .execute([&id])?;
    Ok(Outcome::Done)
}

/// A message's cached content, kept only while it belongs to the event's guild.
pub(super) fn upsert_cache(
    tx: &Transaction,
    message_id: &Id,
    guild_id: &Id,
    channel_id: &Id,
    user_id: &Id,
    content: &str,
    now: &str,
) -> rusqlite::Result<Outcome> {
    let (id, guild) = (IdText::new(message_id), IdText::new(guild_id));
    let changed = tx
        .prepare_cached(
            "INSERT INTO message_cache (message_id, guild_id, channel_id, user_id, content,
                       last_touched, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
                     ON CONFLICT (message_id) DO UPDATE SET content = excluded.content,
                       last_touched = excluded.last_touched
                     WHERE message_cache.guild_id = excluded.guild_id",
        )?
        .execute(params![
            id,
            guild,
            IdText::new(channel_id),
            IdText::new(user_id),
            content,
            now
        ])?;
    if changed == 0 {
        return unless_foreign(
            tx,
            CACHE_OWNER,
            "upsert cached message",
            "message_cache",
            &id,
            &guild,
            *guild_id,
        );
    }
    Ok(Outcome::Done)
}

pub(super) fn update_cache(
    tx: &Transaction,
    guild_id: Id,
    message_id: Id,
    content: &str,
    now: &str,
) -> rusqlite::Result<Outcome> {
    let (id, guild) = (IdText::new(message_id), IdText::new(guild_id));
    let changed = tx
        .prepare_cached(
            "UPDATE message_cache SET content = ?3, last_touched = ?4
             WHERE message_id = ?1 AND guild_id = ?2",
        )?
        .execute(params![id, guild, content, now])?;
    if changed == 0 {
        return unless_foreign(
            tx,
            CACHE_OWNER,
            "update cached message",
            "message_cache",
            &id,
            &guild,
            guild_id,
        );
    }
    Ok(Outcome::Done)
}

/// A reaction changes react_count only when it changes the (message, user, emoji) state, so a
/// redelivered add or remove counts once. A remove with no recorded add (a reaction the message
/// already had when created) still decrements, as the TypeScript bot does, and is recorded.
/// Messages that are not counted (no `message_stats` row) track no reactions.
pub(super) fn apply_reaction(
    tx: &Transaction,
    guild_id: Id,
    message_id: Id,
    user_id: Id,
    emoji: &str,
    added: bool,
) -> rusqlite::Result<Outcome> {
    let (message_id, guild) = (IdText::new(message_id), IdText::new(guild_id));
    match owner(tx, MESSAGE_OWNER, &message_id)? {
        None => return Ok(Outcome::Done),
        Some(owner) if owner.as_deref() != Some(&*guild) => {
            return Ok(Outcome::Refused(CrossGuildWrite {
                write: "reaction",
                table: "message_stats",
                key: message_id.to_string(),
                guild_id,
                owner,
            }))
        }
        Some(_) => {}
    }
    let changed = tx
        .prepare_cached(
            "INSERT INTO message_reactions (message_id, user_id, emoji, present)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (message_id, user_id, emoji) DO UPDATE SET present = excluded.present
               WHERE present <> excluded.present",
        )?
        .execute(params![message_id, IdText::new(user_id), emoji, added])?;
    if changed == 1 {
        let sql = if added {
            "UPDATE message_stats SET react_count = react_count + 1 WHERE message_id = ?1"
        } else {
            "UPDATE message_stats SET react_count = MAX(react_count - 1, 0) WHERE message_id = ?1"
        };
        tx.prepare_cached(sql)?.execute([message_id])?;
    }
    Ok(Outcome::Done)
}
