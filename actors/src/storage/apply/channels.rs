//! `guilds`, `channel_info` and `guild_channels`.

use super::{opt_id, unless_foreign, IdText, CHANNEL_OWNER};
use crate::domain::event::Id;
use crate::domain::scope::Outcome;
use rusqlite::{params, Transaction};

/// A `guilds` row if absent; settings are never overwritten.
pub(super) fn ensure_guild(tx: &Transaction, id: Id) -> rusqlite::Result<Outcome> {
    tx.prepare_cached("INSERT OR IGNORE INTO guilds (id) VALUES (?1)")?
        .execute([IdText::new(id)])?;
    Ok(Outcome::Done)
}

#[allow(clippy::too_many_arguments)]
/// A channel's rows (channel_info and guild_channels), kept only while it belongs to the
/// event's guild.
pub(super) fn upsert_channel(
    tx: &Transaction,
    id: &Id,
    guild_id: &Id,
    name: &Option<String>,
    category: &Option<String>,
    kind: &u8,
    parent_id: &Option<Id>,
) -> rusqlite::Result<Outcome> {
    let (id, guild) = (IdText::new(id), IdText::new(guild_id));
    // The owner is checked first, as the two rows are written by two statements; the single
    // writer's transaction keeps it true until both are.
    let refused = unless_foreign(
        tx,
        CHANNEL_OWNER,
        "upsert channel",
        "channel_info",
        &id,
        &guild,
        *guild_id,
    )?;
    if matches!(refused, Outcome::Refused(_)) {
        return Ok(refused);
    }
    tx.prepare_cached(
        "INSERT INTO channel_info (id, name, category) VALUES (?1, ?2, ?3)
           ON CONFLICT (id) DO UPDATE SET name = excluded.name, category = excluded.category",
    )?
    .execute(params![id, name, category])?;
    tx.prepare_cached(
        "INSERT INTO guild_channels (channel_id, guild_id, channel_type, parent_id)
           VALUES (?1, ?2, ?3, ?4)
           ON CONFLICT (channel_id) DO UPDATE SET channel_type = excluded.channel_type,
             parent_id = excluded.parent_id",
    )?
    .execute(params![id, guild, kind, opt_id(*parent_id)])?;
    Ok(Outcome::Done)
}

/// A channel was (re)named: its children's category follows.
pub(super) fn rename_parent(
    tx: &Transaction,
    guild_id: Id,
    parent_id: Id,
    name: &Option<String>,
) -> rusqlite::Result<Outcome> {
    tx.prepare_cached(
        "UPDATE channel_info SET category = ?3 WHERE id IN
           (SELECT channel_id FROM guild_channels WHERE parent_id = ?1 AND guild_id = ?2)",
    )?
    .execute(params![IdText::new(parent_id), IdText::new(guild_id), name])?;
    Ok(Outcome::Done)
}

pub(super) fn delete_channel(tx: &Transaction, guild_id: Id, id: Id) -> rusqlite::Result<Outcome> {
    let (id, guild) = (IdText::new(id), IdText::new(guild_id));
    let deleted = tx
        .prepare_cached("DELETE FROM guild_channels WHERE channel_id = ?1 AND guild_id = ?2")?
        .execute([&id, &guild])?;
    if deleted == 0 {
        return unless_foreign(
            tx,
            CHANNEL_OWNER,
            "delete channel",
            "channel_info",
            &id,
            &guild,
            guild_id,
        );
    }
    tx.prepare_cached("DELETE FROM channel_info WHERE id = ?1")?
        .execute([&id])?;
    Ok(Outcome::Done)
}
