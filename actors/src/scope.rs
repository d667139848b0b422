//! Guild scoping of writes: a guild's actor may change only its own guild's rows.
//!
//! Rows are found by ids that are not the guild's (a channel id, a message id, an audit entry
//! id). An event that carries one guild and names another guild's row is wrong (a bug, a
//! misrouted or forged payload), and obeying it would move, rename, rewrite or delete the other
//! guild's data. The store refuses such writes and says so with a [`CrossGuildWrite`]; the
//! writer counts and logs them with [`RefusedWrites`].

use crate::event::Id;
use prometheus::IntCounter;
use std::time::{Duration, Instant};

/// A write that was refused because its row belongs to another guild. Holds ids only: never
/// message content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrossGuildWrite {
    /// What was asked ("upsert channel", "delete message"...).
    pub write: &'static str,
    pub table: &'static str,
    /// The row's key (a channel or message id, a moderation row's source key).
    pub key: String,
    /// The guild of the event that asked for the write.
    pub guild_id: Id,
    /// The guild the row belongs to, as stored.
    pub owner: Option<String>,
}

/// What applying one op did.
#[must_use]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied, or nothing to do (the row is absent, or already as asked).
    Done,
    /// Nothing changed: the row belongs to another guild.
    Refused(CrossGuildWrite),
}

/// At most one log line per this period: a misbehaving source can send refused writes at the
/// full event rate, and the counter has the exact figure anyway.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Counts refused writes and logs them, rate-limited.
pub struct RefusedWrites {
    counter: IntCounter,
    last_logged: Option<Instant>,
    not_logged: u64,
}

impl RefusedWrites {
    pub fn new(counter: IntCounter) -> Self {
        RefusedWrites {
            counter,
            last_logged: None,
            not_logged: 0,
        }
    }

    /// Reports writes that were refused in a committed transaction.
    pub fn report(&mut self, refused: &[CrossGuildWrite], now: Instant) {
        for r in refused {
            self.counter.inc();
            let due = self
                .last_logged
                .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
            if !due {
                self.not_logged += 1;
                continue;
            }
            tracing::warn!(
                guild_id = %r.guild_id,
                owner_guild_id = r.owner.as_deref().unwrap_or("none"),
                write = r.write,
                table = r.table,
                key = %r.key,
                refused_since_last_line = self.not_logged,
                refused_total = self.counter.get(),
                "write refused: the row belongs to another guild"
            );
            self.last_logged = Some(now);
            self.not_logged = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(key: u64) -> CrossGuildWrite {
        CrossGuildWrite {
            write: "delete message",
            table: "message_stats",
            key: key.to_string(),
            guild_id: Id(2),
            owner: Some("1".into()),
        }
    }

    #[test]
    fn every_refusal_is_counted_and_lines_are_rate_limited() {
        let counter = IntCounter::new("refused_total", "test").unwrap();
        let mut report = RefusedWrites::new(counter.clone());
        let t0 = Instant::now();
        report.report(&[refused(1), refused(2), refused(3)], t0);
        assert_eq!(counter.get(), 3);
        assert_eq!(report.not_logged, 2);
        report.report(&[refused(4)], t0 + LOG_EVERY);
        assert_eq!(counter.get(), 4);
        assert_eq!(report.not_logged, 0);
    }
}
