//! What the admin API (`GET /fake/sessions`, `GET /fake/identifies`) shows of the fake's
//! state: plain serializable snapshots, taken under the locks and released at once.

use super::rules::{millis, IdentifyAttempt};
use super::Fake;
use serde::Serialize;
use std::time::Instant;

/// A session in `GET /fake/sessions` (an array of these).
#[derive(Serialize)]
pub struct SessionView {
    pub session_id: String,
    /// The `shard` its Identify sent (null: none, which is `[0, 1]`).
    pub shard: Option<[u32; 2]>,
    /// ms since the fake started, one per Identify of the session (each accepted Identify
    /// starts a new session, so one).
    pub identified_at_ms: Vec<u64>,
    pub last_seq_sent: u64,
    pub done: bool,
    /// A connection is attached now.
    pub connected: bool,
    pub connections: u32,
    /// The session has not ended (see [`Session::open`]).
    pub open: bool,
    /// The last presence update (op 3) its client sent.
    pub presence: Option<serde_json::Value>,
}

/// `GET /fake/identifies`.
#[derive(Serialize)]
pub struct IdentifiesView {
    /// Accepted Identifies (session starts), in all.
    pub identifies: u64,
    /// Identifies refused by the rate limit (op 9), in all.
    pub identify_violations: u64,
    pub session_starts_remaining: u32,
    pub session_start_limit: u32,
    /// ms until the session starts come back.
    pub session_start_reset_after_ms: u64,
    /// The limit was exceeded: the token is refused until the reset.
    pub token_reset: bool,
    pub max_concurrency: u32,
    pub identify_window_ms: u64,
    /// Every judged Identify (the last 10,000), oldest first.
    pub attempts: Vec<IdentifyAttempt>,
    /// ms since the fake started, as of this view: the clock of `at_ms`, so that a test can
    /// wait for a window to pass by the fake's own clock.
    pub now_ms: u64,
}

impl Fake {
    pub fn session_views(&self) -> Vec<SessionView> {
        let ended = self.timeline_ended();
        self.sessions()
            .iter()
            .map(|s| SessionView {
                session_id: s.id.clone(),
                shard: s.shard_sent,
                identified_at_ms: s.identified_at_ms.clone(),
                last_seq_sent: s.last_seq_sent,
                done: s.done(ended),
                connected: s.connected,
                connections: s.connections,
                open: s.open,
                presence: s.presence.clone(),
            })
            .collect()
    }

    pub fn identifies_view(&self) -> IdentifiesView {
        let limits = self.limits();
        let now = Instant::now();
        IdentifiesView {
            identifies: limits.accepted,
            identify_violations: limits.violations,
            session_starts_remaining: limits.remaining,
            session_start_limit: self.options.session_start_limit,
            session_start_reset_after_ms: millis(limits.reset_after(now, &self.options)),
            token_reset: limits.token_reset,
            max_concurrency: self.max_concurrency(),
            identify_window_ms: millis(self.options.identify_window),
            attempts: limits.attempts.iter().cloned().collect(),
            now_ms: millis(now.saturating_duration_since(self.started)),
        }
    }
}
