//! What a guild actor reads back when it starts: its channels and its members' timeouts.

use crate::domain::event::Id;
use crate::domain::op::ChannelRow;
use rusqlite::Connection;
use std::collections::HashMap;

/// The channels of one guild, for a guild actor starting after passivation or a restart.
pub(crate) fn load_channels(conn: &Connection, guild_id: Id) -> rusqlite::Result<Vec<ChannelRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT c.id, c.name, g.channel_type, g.parent_id FROM guild_channels g
           JOIN channel_info c ON c.id = g.channel_id WHERE g.guild_id = ?1",
    )?;
    let rows = stmt.query_map([guild_id.to_string()], |r| {
        let id: String = r.get(0)?;
        let parent: Option<String> = r.get(3)?;
        Ok((id, r.get(1)?, r.get(2)?, parent))
    })?;
    let mut channels = Vec::new();
    for row in rows {
        let (id, name, kind, parent) = row?;
        // Rows are written by this service from parsed ids; skip any that are not.
        let Ok(id) = id.parse() else { continue };
        channels.push(ChannelRow {
            id: Id(id),
            name,
            kind,
            parent_id: parent.and_then(|p| p.parse().ok()).map(Id),
        });
    }
    Ok(channels)
}

/// The members of one guild with a timeout set, as (user, until Unix ms).
pub(crate) fn load_timeouts(conn: &Connection, guild_id: Id) -> rusqlite::Result<HashMap<Id, i64>> {
    let mut stmt =
        conn.prepare_cached("SELECT user_id, until_ms FROM member_timeouts WHERE guild_id = ?1")?;
    let rows = stmt.query_map([guild_id.to_string()], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
    })?;
    let mut timeouts = HashMap::new();
    for row in rows {
        let (user, until) = row?;
        if let Ok(user) = user.parse() {
            timeouts.insert(Id(user), until);
        }
    }
    Ok(timeouts)
}
