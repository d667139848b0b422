//! The two logs of received events a live rescale keeps: what a new owner captures, and the
//! waiting moderation items an old owner hands over. Written by [`crate::storage::apply`]
//! in the writer's transactions, read by the handoff.

use crate::domain::event::Id;
use rusqlite::{params, Connection};

/// One captured event.
pub(crate) struct Captured {
    pub guild_id: u64,
    pub seq: Option<u64>,
    pub kind: String,
    pub payload: String,
    /// When the pod received it (Unix ms; absent in logs of earlier releases).
    pub received_ms: Option<i64>,
}

/// The two logs of received events a rescale keeps, the same shape: what a new owner captures
/// (`gateway_captured`), and the waiting moderation items an old owner hands over
/// (`gateway_handover`, where a retried import adds nothing).
#[derive(Clone, Copy)]
pub(crate) enum EventLog {
    Captured,
    HandedOver,
}

impl EventLog {
    fn insert(self) -> &'static str {
        match self {
            EventLog::Captured => "INSERT INTO gateway_captured",
            EventLog::HandedOver => "INSERT OR IGNORE INTO gateway_handover",
        }
    }

    fn table(self) -> &'static str {
        match self {
            EventLog::Captured => "gateway_captured",
            EventLog::HandedOver => "gateway_handover",
        }
    }

    /// Appends one event (in the caller's transaction).
    pub(crate) fn append(
        self,
        conn: &Connection,
        guild_id: Id,
        seq: Option<u64>,
        kind: &str,
        payload: &str,
        received_ms: i64,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached(&format!(
            "{} (guild_id, seq, kind, payload, received_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            self.insert()
        ))?
        .execute(params![
            guild_id.to_string(),
            seq.map(|s| s as i64),
            kind,
            payload,
            received_ms
        ])?;
        Ok(())
    }

    fn read(self, conn: &Connection) -> rusqlite::Result<Vec<Captured>> {
        let mut stmt = conn.prepare(&format!(
            "SELECT guild_id, seq, kind, payload, received_ms FROM {} ORDER BY id",
            self.table()
        ))?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Captured {
                    guild_id: r.get::<_, String>(0)?.parse().unwrap_or(0),
                    seq: r.get::<_, Option<i64>>(1)?.map(|s| s as u64),
                    kind: r.get(2)?,
                    payload: r.get(3)?,
                    received_ms: r.get(4)?,
                })
            })?
            .collect();
        rows
    }
}

/// The capture log, in arrival order.
pub(crate) fn captured(conn: &Connection) -> rusqlite::Result<Vec<Captured>> {
    EventLog::Captured.read(conn)
}

/// The waiting moderation events handed over for the guilds `take` selects, in order.
pub(crate) fn handed_over(
    conn: &Connection,
    take: impl Fn(u64) -> bool,
) -> rusqlite::Result<Vec<Captured>> {
    let mut rows = EventLog::HandedOver.read(conn)?;
    rows.retain(|c| take(c.guild_id));
    Ok(rows)
}
