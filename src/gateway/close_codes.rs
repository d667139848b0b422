//! Every gateway close code Discord documents, and what a pod does about each: one table.
//!
//! serenity handles the socket. It ends the client with an error for some codes (4004, 4010,
//! 4011, 4013, 4014) and reconnects after all others, including 4012, which would loop for
//! ever. It tells which code it got only in its own log events (serenity 0.12.5, pinned by
//! Cargo.lock), so [`CloseCodeLayer`] reads them there: each close is counted, the codes the
//! table calls fatal end the shard's connection with the table's message, and those it backs
//! off after pause the shard before serenity reconnects. serenity may still reconnect once
//! on its own before a fatal close stops the pod (its reconnect and our stop race on the
//! shard's thread); the pod then exits, so there is no loop. `tests/live.rs` checks every row
//! against fake-discord, so a serenity upgrade that changes its messages fails there.

use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// What a close code makes the pod do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// serenity reconnects and resumes the session (nothing is lost).
    Reconnect,
    /// serenity reconnects after a pause that doubles with each such close in a row (from
    /// [`FIRST_BACKOFF`] to [`MAX_BACKOFF`]; a READY or RESUMED resets it).
    Backoff,
    /// The pod's configuration is wrong: the shard's connection ends, and so does the pod
    /// (exit 1) with this message, instead of a reconnect loop that spends identifies.
    Fatal(&'static str),
}

pub struct CloseCode {
    pub code: u16,
    pub name: &'static str,
    pub action: Action,
}

/// Discord's close codes (docs: topics/opcodes-and-status-codes, "Gateway Close Event Codes").
pub const CLOSE_CODES: [CloseCode; 14] = [
    CloseCode { code: 4000, name: "unknown error", action: Action::Reconnect },
    CloseCode { code: 4001, name: "unknown opcode", action: Action::Reconnect },
    CloseCode { code: 4002, name: "decode error", action: Action::Reconnect },
    CloseCode { code: 4003, name: "not authenticated", action: Action::Reconnect },
    CloseCode { code: 4004, name: "authentication failed", action: Action::Fatal("Discord rejected the token: check DISCORD_TOKEN (it may have been reset)") },
    CloseCode { code: 4005, name: "already authenticated", action: Action::Reconnect },
    CloseCode { code: 4007, name: "invalid seq", action: Action::Reconnect },
    CloseCode { code: 4008, name: "rate limited", action: Action::Backoff },
    CloseCode { code: 4009, name: "session timed out", action: Action::Backoff },
    CloseCode { code: 4010, name: "invalid shard", action: Action::Fatal("Discord rejected the shard: DISCORD_SHARDS, NUM_GATEWAY_PODS and SHARD_STRATEGY must give every session a shard id below the shard count") },
    CloseCode { code: 4011, name: "sharding required", action: Action::Fatal("the bot is in more guilds than one shard may hold (2,500): raise DISCORD_SHARDS") },
    CloseCode { code: 4012, name: "invalid API version", action: Action::Fatal("Discord no longer accepts this gateway API version (v10): upgrade guild-gateway") },
    CloseCode { code: 4013, name: "invalid intents", action: Action::Fatal("Discord rejected the gateway intents as invalid") },
    CloseCode { code: 4014, name: "disallowed intents", action: Action::Fatal("Discord rejected the gateway intents: enable the privileged intents (server members, message content) for the bot in the Developer Portal") },
];

pub fn lookup(code: u16) -> Option<&'static CloseCode> {
    CLOSE_CODES.iter().find(|c| c.code == code)
}

pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The thread a shard's connection runs on; the watch finds the shard from it.
pub fn thread_name(shard: u32) -> String {
    format!("discord-shard-{shard}")
}

/// A shard's state as the watch sees it.
struct ShardWatch {
    fatal: tokio::sync::mpsc::UnboundedSender<(u16, &'static str)>,
    backoff: Duration,
}

/// Where closes go: registered shards, and the counter once metrics exist.
#[derive(Default)]
pub struct CloseWatch {
    shards: Mutex<HashMap<u32, ShardWatch>>,
    counter: OnceLock<IntCounterVec>,
}

pub fn watch() -> &'static CloseWatch {
    static WATCH: OnceLock<CloseWatch> = OnceLock::new();
    WATCH.get_or_init(CloseWatch::default)
}

impl CloseWatch {
    pub fn set_counter(&self, counter: IntCounterVec) {
        for c in &CLOSE_CODES {
            counter.with_label_values(&[&c.code.to_string()]);
        }
        let _ = self.counter.set(counter);
    }

    /// Watches `shard`'s closes; a fatal one arrives on the returned channel.
    pub fn register(
        &self,
        shard: u32,
    ) -> tokio::sync::mpsc::UnboundedReceiver<(u16, &'static str)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(mut shards) = self.shards.lock() {
            shards.insert(
                shard,
                ShardWatch {
                    fatal: tx,
                    backoff: Duration::ZERO,
                },
            );
        }
        rx
    }

    /// The session is up again: the next backoff starts from the first.
    pub fn connected(&self, shard: u32) {
        if let Ok(mut shards) = self.shards.lock() {
            if let Some(w) = shards.get_mut(&shard) {
                w.backoff = Duration::ZERO;
            }
        }
    }

    /// A close of `shard` with `code`; returns how long the shard must pause.
    pub fn closed(&self, shard: u32, code: u16) -> Duration {
        if let Some(counter) = self.counter.get() {
            counter.with_label_values(&[&code.to_string()]).inc();
        }
        let action = lookup(code).map_or(Action::Reconnect, |c| c.action);
        let Ok(mut shards) = self.shards.lock() else {
            return Duration::ZERO;
        };
        let Some(w) = shards.get_mut(&shard) else {
            return Duration::ZERO;
        };
        match action {
            Action::Reconnect => Duration::ZERO,
            Action::Backoff => {
                w.backoff = if w.backoff.is_zero() {
                    FIRST_BACKOFF
                } else {
                    (w.backoff * 2).min(MAX_BACKOFF)
                };
                w.backoff
            }
            Action::Fatal(why) => {
                let _ = w.fatal.send((code, why));
                Duration::ZERO
            }
        }
    }
}

/// The close code in one of serenity's shard log messages.
pub fn code_in_message(message: &str) -> Option<u16> {
    // serenity 0.12.5, gateway/shard.rs, handle_gateway_closed: "[ShardInfo ...] <text>".
    const TEXTS: [(&str, u16); 12] = [
        ("Sent invalid opcode.", 4001),
        ("Sent invalid message.", 4002),
        ("Sent no authentication.", 4003),
        ("Sent invalid authentication", 4004),
        ("Already authenticated.", 4005),
        ("Sent invalid seq", 4007),
        ("Gateway ratelimited.", 4008),
        ("Sent invalid shard data.", 4010),
        ("Shard has too many guilds.", 4011),
        ("Invalid session.", 4009),
        ("Invalid gateway intents", 4013),
        ("Disallowed gateway intents", 4014),
    ];
    if let Some((_, rest)) = message.split_once("Unknown unclean close ") {
        return rest.split(':').next()?.trim().parse().ok();
    }
    TEXTS
        .iter()
        .find(|(text, _)| message.contains(text))
        .map(|&(_, code)| code)
}

/// Reads serenity's close messages on the shards' threads (see the module docs).
pub struct CloseCodeLayer;

struct Message(Option<String>);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = Some(format!("{value:?}"));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = Some(value.to_owned());
        }
    }
}

impl<S: Subscriber> Layer<S> for CloseCodeLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("serenity::gateway") {
            return;
        }
        let Some(shard) = std::thread::current()
            .name()
            .and_then(|n| n.strip_prefix("discord-shard-"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return;
        };
        let mut message = Message(None);
        event.record(&mut message);
        let Some(code) = message.0.as_deref().and_then(code_in_message) else {
            return;
        };
        let pause = watch().closed(shard, code);
        if !pause.is_zero() {
            tracing::warn!(
                shard,
                code,
                pause_secs = pause.as_secs_f64(),
                "gateway closed the session; pausing before serenity reconnects"
            );
            // serenity reconnects as soon as this log call returns, on this shard's own
            // thread: pausing here is the backoff (no other shard shares the thread).
            std::thread::sleep(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_code_has_one_row_and_serenitys_messages_map_to_them() {
        let mut codes: Vec<u16> = CLOSE_CODES.iter().map(|c| c.code).collect();
        codes.dedup();
        assert_eq!(codes.len(), CLOSE_CODES.len());
        assert_eq!(
            code_in_message("[ShardInfo { id: ShardId(0), total: 1 }] Gateway ratelimited."),
            Some(4008)
        );
        assert_eq!(
            code_in_message(
                "[ShardInfo { id: ShardId(2), total: 8 }] Unknown unclean close 4012: \"bad\""
            ),
            Some(4012)
        );
        assert_eq!(
            code_in_message("[ShardInfo { id: ShardId(0), total: 1 }] Invalid session."),
            Some(4009)
        );
        assert_eq!(code_in_message("something else"), None);
        assert!(
            matches!(lookup(4011).unwrap().action, Action::Fatal(m) if m.contains("DISCORD_SHARDS"))
        );
        assert_eq!(lookup(4008).unwrap().action, Action::Backoff);
    }
}
