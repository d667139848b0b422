//! A Discord session as the fake keeps it (it outlives its connections, so a client can
//! resume), and the admin API's requests to its connection.

use super::{close, Fake};
use std::sync::Arc;
use tokio::sync::Notify;

/// A request to a session's connection from the admin API or the session start limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Leave without a close frame.
    Drop,
    /// Close with this code and Discord's reason for it.
    Close(u16),
}

/// A session's state, which outlives its connections.
pub struct Session {
    pub id: String,
    /// The shard whose events it gets (`[0, 1]` when its Identify sent none).
    pub shard: [u32; 2],
    /// The `shard` of its Identify, None when it sent none.
    pub shard_sent: Option<[u32; 2]>,
    /// When it was identified, in ms since the fake started.
    pub identified_at_ms: Vec<u64>,
    /// Indexes into the recording, in order; the dispatch at position k has seq k + 2.
    pub frames: Vec<usize>,
    pub last_seq_sent: u64,
    pub connected: bool,
    pub connections: u32,
    /// False once the session has ended (closed with a code Discord does not resume from, or
    /// terminated by the session start limit): a Resume gets Invalid Session.
    pub open: bool,
    /// Wakes the attached connection to act on `pending`.
    pub control: Arc<Notify>,
    pub pending: Option<Control>,
    /// The last presence update (op 3) its client sent.
    pub presence: Option<serde_json::Value>,
}

impl Session {
    /// Everything the session will get was sent. `timeline_ended`: the live clock is at the
    /// recording's end (always true outside live mode); before that more may happen to it.
    pub fn done(&self, timeline_ended: bool) -> bool {
        // READY is seq 1, the last frame seq len + 1.
        timeline_ended && self.last_seq_sent > self.frames.len() as u64
    }
}

impl Fake {
    /// Asks the connection of session `id` to drop (no close frame) or close with a code.
    pub fn control(&self, id: &str, control: Control) -> Result<(), ControlError> {
        let mut sessions = self.sessions();
        let session = sessions
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or(ControlError::UnknownSession)?;
        if !session.connected {
            return Err(ControlError::NotConnected);
        }
        if let Control::Close(code) = control {
            if close::ends_session(code) {
                session.open = false;
            }
        }
        session.pending = Some(control);
        session.control.notify_one();
        Ok(())
    }
}

/// Why a control request was not passed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlError {
    UnknownSession,
    NotConnected,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_session_is_done_only_once_the_timeline_ended() {
        let session = Session {
            id: "s".into(),
            shard: [0, 1],
            shard_sent: None,
            identified_at_ms: vec![0],
            frames: vec![3, 4],
            last_seq_sent: 3,
            connected: true,
            connections: 1,
            open: true,
            control: Arc::new(Notify::new()),
            pending: None,
            presence: None,
        };
        assert!(session.done(true));
        assert!(!session.done(false), "more may still happen to it");
        let empty = Session {
            frames: Vec::new(),
            last_seq_sent: 1,
            ..session
        };
        assert!(empty.done(true));
        assert!(!empty.done(false));
    }
}
