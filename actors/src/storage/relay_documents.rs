//! The relay's guild documents in transit: an old owner writes those of the guilds it gives
//! away at a rescale's freeze, the export carries them with the guilds' rows, and the new
//! owner's relay announces each guild from its document when it goes live.

use rusqlite::{params, Connection};

/// Keeps `documents` (guild id, GUILD_CREATE `d`), replacing older ones.
pub(crate) fn save(conn: &Connection, documents: &[(u64, String)]) -> rusqlite::Result<()> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO relay_documents (guild_id, document) VALUES (?1, ?2) \
         ON CONFLICT(guild_id) DO UPDATE SET document = excluded.document",
    )?;
    for (guild_id, document) in documents {
        upsert.execute(params![guild_id.to_string(), document])?;
    }
    Ok(())
}

/// The documents of the guilds `take` selects.
pub(crate) fn load(
    conn: &Connection,
    take: impl Fn(u64) -> bool,
) -> rusqlite::Result<Vec<(u64, String)>> {
    let mut select = conn.prepare("SELECT guild_id, document FROM relay_documents")?;
    let rows = select.query_map([], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
    })?;
    let mut documents = Vec::new();
    for row in rows {
        let (guild_id, document) = row?;
        if let Ok(guild_id) = guild_id.parse::<u64>() {
            if take(guild_id) {
                documents.push((guild_id, document));
            }
        }
    }
    Ok(documents)
}

#[cfg(test)]
mod tests {
    #[test]
    fn documents_are_replaced_and_selected_by_guild() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::storage::database::SCHEMA)
            .unwrap();
        super::save(&conn, &[(1, "{\"id\":\"1\"}".into()), (2, "old".into())]).unwrap();
        super::save(&conn, &[(2, "new".into())]).unwrap();
        assert_eq!(
            super::load(&conn, |g| g == 2).unwrap(),
            [(2, "new".to_string())]
        );
        assert_eq!(super::load(&conn, |_| true).unwrap().len(), 2);
    }
}
