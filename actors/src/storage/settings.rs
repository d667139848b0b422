//! A guild's settings document (`guilds.settings`), changed the way the bot's settings page
//! changes it: a JSON merge patch applied by SQLite's `json_patch`.

use rusqlite::Connection;

/// Applies `patch` (a JSON object, RFC 7396 semantics: null removes a key) to the guild's
/// settings, creating its row first if it has none (as the bot's onboarding does), and
/// returns the new document. Run it inside the writer's transaction.
pub(crate) fn patch(conn: &Connection, guild_id: &str, patch: &str) -> rusqlite::Result<String> {
    conn.prepare_cached(
        "INSERT INTO guilds (id, settings) VALUES (?1, json_patch('{}', ?2))
         ON CONFLICT (id) DO UPDATE SET settings = json_patch(guilds.settings, ?2)
         RETURNING settings",
    )?
    .query_row([guild_id, patch], |row| row.get(0))
}

#[cfg(test)]
mod tests {
    #[test]
    fn merge_patch_semantics_and_creation() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::storage::database::SCHEMA)
            .unwrap();
        let doc = super::patch(&conn, "1", r#"{"modLog":"10","restricted":["a"]}"#).unwrap();
        assert_eq!(doc, r#"{"modLog":"10","restricted":["a"]}"#);
        let doc = super::patch(&conn, "1", r#"{"modLog":null,"moderator":"7"}"#).unwrap();
        assert_eq!(doc, r#"{"restricted":["a"],"moderator":"7"}"#);
        // A GUILD_CREATE's insert never overwrites it.
        conn.execute("INSERT OR IGNORE INTO guilds (id) VALUES ('1')", [])
            .unwrap();
        let stored: String = conn
            .query_row("SELECT settings FROM guilds WHERE id = '1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(stored, doc);
    }
}
