//! Guild scoping of writes: a guild's actor may change only its own guild's rows.
//!
//! Rows are found by ids that are not the guild's (a channel id, a message id, an audit entry
//! id). An event that carries one guild and names another guild's row is wrong (a bug, a
//! misrouted or forged payload), and obeying it would move, rename, rewrite or delete the other
//! guild's data. The store refuses such writes and says so with a [`CrossGuildWrite`]; the
//! writer counts and logs them with [`RefusedWrites`].

use crate::domain::event::Id;
use crate::log_limit::LogLimit;
use prometheus::IntCounter;
use std::time::Duration;

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

/// Counts refused writes and logs them at a bounded rate: a misbehaving source can send them
/// at the full event rate, and the counter has the exact figure anyway.
pub(crate) struct RefusedWrites {
    counter: IntCounter,
    log: LogLimit,
}

impl RefusedWrites {
    pub(crate) fn new(counter: IntCounter) -> Self {
        RefusedWrites {
            counter,
            log: LogLimit::new(Duration::from_secs(10)),
        }
    }

    /// Reports writes that were refused in a committed transaction.
    pub(crate) fn report(&mut self, refused: &[CrossGuildWrite]) {
        for r in refused {
            self.counter.inc();
            if let Some(suppressed) = self.log.allow() {
                tracing::warn!(
                    guild_id = %r.guild_id,
                    owner_guild_id = r.owner.as_deref().unwrap_or("none"),
                    write = r.write,
                    table = r.table,
                    key = %r.key,
                    suppressed,
                    refused_total = self.counter.get(),
                    "write refused: the row belongs to another guild"
                );
            }
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
    fn every_refusal_is_counted() {
        let counter = IntCounter::new("refused_total", "test").unwrap();
        let mut report = RefusedWrites::new(counter.clone());
        report.report(&[refused(1), refused(2), refused(3)]);
        report.report(&[refused(4)]);
        assert_eq!(counter.get(), 4);
    }
}
