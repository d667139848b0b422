//! `mod_actions`, `mod_action_late_entries`, `unpaired_member_removals` and
//! `member_timeouts`: a moderation event's row, completed by its audit log entry however
//! late either comes.

use super::{opt_id, owner, unless_foreign, IdText, LATE_ENTRY_OWNER, MOD_ACTION_OWNER};
use crate::domain::event::Id;
use crate::domain::op::Op;
use crate::domain::scope::Outcome;
use crate::domain::time::iso8601;
use crate::storage::database::NEW_UUID;
use rusqlite::{params, OptionalExtension, Transaction};
use std::time::{Duration, SystemTime};

/// A paired row completes the row its event got without its entry, if there is one (the
/// event delivered again after a restart); else it is inserted.
pub(super) fn insert_or_complete(
    tx: &Transaction,
    op: &Op,
    now: &str,
) -> rusqlite::Result<Outcome> {
    let Op::InsertModAction {
        guild_id,
        user_id,
        action,
        executor_id,
        reason,
        duration,
        source_key,
        unpaired_key,
    } = op
    else {
        return Ok(Outcome::Done);
    };
    if let Some(key) = unpaired_key {
        let completed = tx
            .prepare_cached(
                "UPDATE OR IGNORE mod_actions SET executor_id = ?3, reason = ?4, source_key = ?5
                 WHERE guild_id = ?1 AND source_key = ?2 AND executor_id IS NULL",
            )?
            .execute(params![
                IdText::new(guild_id),
                key,
                opt_id(*executor_id),
                reason,
                source_key
            ])?;
        if completed > 0 {
            return Ok(Outcome::Done);
        }
    }
    insert_mod_action(
        tx,
        guild_id,
        user_id,
        action,
        executor_id,
        reason,
        duration,
        source_key,
        now,
    )
}

/// A moderation row, once per source key, unless a late entry already completed one.
#[allow(clippy::too_many_arguments)]
fn insert_mod_action(
    tx: &Transaction,
    guild_id: &Id,
    user_id: &Id,
    action: &str,
    executor_id: &Option<Id>,
    reason: &str,
    duration: &Option<String>,
    source_key: &Option<String>,
    now: &str,
) -> rusqlite::Result<Outcome> {
    let guild = IdText::new(guild_id);
    // An entry that already completed a row written without it is not written again.
    let inserted = tx
                .prepare_cached(
                    &format!("INSERT OR IGNORE INTO mod_actions (id, user_id, guild_id, action_type,
                       executor_id, executor_username, reason, duration, created_at, source_key)
                     SELECT {NEW_UUID}, ?1, ?2, ?3, ?4, NULL, ?5, ?6, ?7, ?8
                     WHERE NOT EXISTS (SELECT 1 FROM mod_action_late_entries WHERE source_key = ?8)"),
                )?
                .execute(params![
                    IdText::new(user_id),
                    guild,
                    action,
                    opt_id(*executor_id),
                    reason,
                    duration,
                    now,
                    source_key
                ])?;
    if let (0, Some(key)) = (inserted, source_key) {
        for (select, table) in [
            (MOD_ACTION_OWNER, "mod_actions"),
            (LATE_ENTRY_OWNER, "mod_action_late_entries"),
        ] {
            let outcome = unless_foreign(
                tx,
                select,
                "insert moderation action",
                table,
                key,
                &guild,
                *guild_id,
            )?;
            if outcome != Outcome::Done {
                return Ok(outcome);
            }
        }
    }
    Ok(Outcome::Done)
}

pub(super) fn record_unpaired_removal(
    tx: &Transaction,
    guild_id: Id,
    user_id: Id,
    now: &str,
) -> rusqlite::Result<Outcome> {
    tx.prepare_cached(
        "INSERT INTO unpaired_member_removals (guild_id, user_id, removed_at) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![IdText::new(guild_id), IdText::new(user_id), now])?;
    Ok(Outcome::Done)
}

pub(super) fn set_member_timeout(
    tx: &Transaction,
    guild_id: Id,
    user_id: Id,
    until_ms: Option<i64>,
) -> rusqlite::Result<Outcome> {
    let (guild, user) = (IdText::new(guild_id), IdText::new(user_id));
    match until_ms {
        Some(until) => tx
            .prepare_cached(
                "INSERT OR REPLACE INTO member_timeouts (guild_id, user_id, until_ms)
                 VALUES (?1, ?2, ?3)",
            )?
            .execute(params![guild, user, until])?,
        None => tx
            .prepare_cached("DELETE FROM member_timeouts WHERE guild_id = ?1 AND user_id = ?2")?
            .execute(params![guild, user])?,
    };
    Ok(Outcome::Done)
}

/// A late audit entry (its event's window closed without it) completes the row its event got
/// without it, once: the entry is recorded in `mod_action_late_entries`.
pub(super) fn complete_mod_action(tx: &Transaction, op: &Op) -> rusqlite::Result<Outcome> {
    let Op::CompleteModAction {
        guild_id,
        user_id,
        action,
        source_key,
        not_before_ms,
        executor_id,
        reason,
        by_bot,
    } = op
    else {
        return Ok(Outcome::Done);
    };
    let (guild_id, user_id, executor_id, by_bot) = (*guild_id, *user_id, *executor_id, *by_bot);
    let guild = IdText::new(guild_id);
    if let Some(outcome) = already_completed(tx, source_key, &guild, guild_id)? {
        return Ok(outcome);
    }
    let Some(not_before) = not_before_iso(*not_before_ms) else {
        return Ok(Outcome::Done);
    };
    let row = latest_unpaired_row(tx, &guild, user_id, action, &not_before)?;
    // No row: the entry's event was never seen, or was the bot's own, or it is a kick (no row
    // is written for a member who left without an entry): a kick entry makes the member's
    // unpaired removal the row it would have been. Otherwise an entry alone writes nothing.
    let Some(row) = row else {
        if *action == "kick" {
            complete_unpaired_removal(
                tx,
                &guild,
                user_id,
                source_key,
                &not_before,
                executor_id,
                reason,
                by_bot,
            )?;
        }
        return Ok(Outcome::Done);
    };
    if by_bot {
        tx.prepare_cached("DELETE FROM mod_actions WHERE rowid = ?1")?
            .execute([row])?;
    } else {
        tx.prepare_cached("UPDATE mod_actions SET executor_id = ?2, reason = ?3 WHERE rowid = ?1")?
            .execute(params![row, opt_id(executor_id), reason])?;
    }
    tx.prepare_cached(
        "INSERT INTO mod_action_late_entries (source_key, guild_id) VALUES (?1, ?2)",
    )?
    .execute([source_key.as_str(), &guild])?;
    Ok(Outcome::Done)
}

/// Paired with its event after all (in time, in this process or an earlier one), or already
/// applied late: nothing more to do (`Some`), unless that was another guild's (refused).
fn already_completed(
    tx: &Transaction,
    source_key: &str,
    guild: &str,
    guild_id: Id,
) -> rusqlite::Result<Option<Outcome>> {
    for (select, table) in [
        (MOD_ACTION_OWNER, "mod_actions"),
        (LATE_ENTRY_OWNER, "mod_action_late_entries"),
    ] {
        if owner(tx, select, source_key)?.is_some() {
            return unless_foreign(
                tx,
                select,
                "complete moderation action",
                table,
                source_key,
                guild,
                guild_id,
            )
            .map(Some);
        }
    }
    Ok(None)
}

/// `not_before_ms` as the rows' ISO-8601 time; `None` past year 9999, which does not format
/// (and no row is that new).
fn not_before_iso(not_before_ms: i64) -> Option<String> {
    // The last millisecond of year 9999.
    const LAST_MS: i64 = 253_402_300_799_999;
    if not_before_ms > LAST_MS {
        return None;
    }
    Some(iso8601(
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(not_before_ms).unwrap_or(0)),
    ))
}

/// The member's latest row of `action` written without its entry since `not_before`.
fn latest_unpaired_row(
    tx: &Transaction,
    guild: &str,
    user_id: Id,
    action: &str,
    not_before: &str,
) -> rusqlite::Result<Option<i64>> {
    tx.prepare_cached(
        // rowid: the order rows were written in (ids are UUIDs).
        "SELECT rowid FROM mod_actions
         WHERE guild_id = ?1 AND user_id = ?2 AND action_type = ?3 AND executor_id IS NULL
           AND (source_key IS NULL OR source_key NOT LIKE 'audit:%') AND created_at >= ?4
         ORDER BY rowid DESC LIMIT 1",
    )?
    .query_row(
        params![guild, IdText::new(user_id), action, not_before],
        |r| r.get(0),
    )
    .optional()
}

/// The member's latest removal since `not_before` that waited for a kick entry in vain becomes
/// the kick row (none for the bot's own kicks), and is consumed.
#[allow(clippy::too_many_arguments)]
fn complete_unpaired_removal(
    tx: &Transaction,
    guild: &str,
    user_id: Id,
    source_key: &str,
    not_before: &str,
    executor_id: Option<Id>,
    reason: &str,
    by_bot: bool,
) -> rusqlite::Result<()> {
    let removal: Option<(i64, String)> = tx
        .prepare_cached(
            "SELECT rowid, removed_at FROM unpaired_member_removals
             WHERE guild_id = ?1 AND user_id = ?2 AND removed_at >= ?3
             ORDER BY removed_at DESC LIMIT 1",
        )?
        .query_row(params![guild, IdText::new(user_id), not_before], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let Some((removal, removed_at)) = removal else {
        return Ok(());
    };
    tx.prepare_cached("DELETE FROM unpaired_member_removals WHERE rowid = ?1")?
        .execute([removal])?;
    if !by_bot {
        tx.prepare_cached(&format!(
            "INSERT OR IGNORE INTO mod_actions (id, user_id, guild_id, action_type, executor_id,
               executor_username, reason, duration, created_at, source_key)
             VALUES ({NEW_UUID}, ?1, ?2, 'kick', ?3, NULL, ?4, NULL, ?5, ?6)"
        ))?
        .execute(params![
            IdText::new(user_id),
            guild,
            opt_id(executor_id),
            reason,
            removed_at,
            source_key
        ])?;
    }
    Ok(())
}
