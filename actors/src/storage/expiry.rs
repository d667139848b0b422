//! The periodic expiry: message contents and rows past their retention, and removals that
//! waited for a kick entry long enough.

use crate::domain::time::iso8601;
use rusqlite::Connection;
use std::time::{Duration, SystemTime};

/// The message cache's retention: content is forgotten after `content_ttl` without a touch,
/// rows are deleted `retention` after creation.
#[derive(Debug, Clone, Copy)]
pub struct CacheExpiry {
    pub content_ttl: Duration,
    pub retention: Duration,
}

/// What the periodic expiry job changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Expired {
    pub contents_cleared: usize,
    pub rows_deleted: usize,
}

/// How long a member's removal without a kick entry waits for a late one.
const UNPAIRED_REMOVAL_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn expire_cache(
    conn: &Connection,
    expiry: CacheExpiry,
    now: SystemTime,
) -> rusqlite::Result<Expired> {
    let cutoff = |age: Duration| iso8601(now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH));
    let contents_cleared = conn
        .prepare_cached("UPDATE message_cache SET content = NULL WHERE content IS NOT NULL AND last_touched < ?1")?
        .execute([cutoff(expiry.content_ttl)])?;
    let rows_deleted = conn
        .prepare_cached("DELETE FROM message_cache WHERE created_at < ?1")?
        .execute([cutoff(expiry.retention)])?;
    // A kick entry a day late is not waited for.
    conn.prepare_cached("DELETE FROM unpaired_member_removals WHERE removed_at < ?1")?
        .execute([cutoff(UNPAIRED_REMOVAL_TTL)])?;
    Ok(Expired {
        contents_cleared,
        rows_deleted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::database::{count_rows, open_writer};
    use rusqlite::params;

    fn cache_row(conn: &Connection, id: &str, touched: SystemTime, created: SystemTime) {
        conn.execute(
            "INSERT INTO message_cache VALUES (?1, '1', '2', '3', 'text', ?2, ?3)",
            params![id, iso8601(touched), iso8601(created)],
        )
        .unwrap();
    }

    #[test]
    fn cache_expiry_clears_old_content_and_deletes_old_rows() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("nested/dir/db.sqlite3")).unwrap();
        let now = SystemTime::now();
        let ago = |mins: u64| now - Duration::from_secs(mins * 60);
        cache_row(&conn, "fresh", ago(5), ago(5));
        cache_row(&conn, "stale", ago(61), ago(61));
        cache_row(&conn, "old", ago(10), ago(25 * 60));
        let expiry = CacheExpiry {
            content_ttl: Duration::from_secs(3600),
            retention: Duration::from_secs(24 * 3600),
        };
        let expired = expire_cache(&conn, expiry, now).unwrap();
        assert_eq!(
            expired,
            Expired {
                contents_cleared: 1,
                rows_deleted: 1
            }
        );
        let content = |id: &str| -> Option<String> {
            conn.query_row(
                "SELECT content FROM message_cache WHERE message_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(content("fresh").as_deref(), Some("text"));
        assert_eq!(content("stale"), None);
        assert_eq!(count_rows(&conn, "message_cache").unwrap(), 2);
    }
}
