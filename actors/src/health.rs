//! `StorageHealth`: whether the database takes writes, as the writer last found it.
//!
//! The writer sets a fault when a commit fails for a storage reason and clears it when a
//! commit succeeds again. Readiness, `/status`, the source's admission (which pauses while a
//! persistent fault lasts, so the pod stops taking events) and the stuck-guild check read it.

use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Why writes are failing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFault {
    /// The last error, as SQLite reported it.
    pub error: String,
    /// A full disk, a read-only file, an I/O error; not a lock held by another connection.
    /// Once set, it stays set until a commit succeeds.
    pub persistent: bool,
    pub since: Instant,
    /// Commits retried since the fault began.
    pub retries: u64,
}

#[derive(Debug, Clone)]
struct State {
    fault: Option<StorageFault>,
    /// When the last fault ended (or the pod started).
    healthy_since: Instant,
}

pub(crate) struct StorageHealth {
    state: watch::Sender<State>,
}

impl Default for StorageHealth {
    fn default() -> Self {
        StorageHealth {
            state: watch::Sender::new(State {
                fault: None,
                healthy_since: Instant::now(),
            }),
        }
    }
}

impl StorageHealth {
    /// Records a failed commit.
    pub(crate) fn failed(&self, error: String, persistent: bool) {
        self.state.send_modify(|s| match &mut s.fault {
            Some(fault) => {
                fault.error = error;
                // A lock error during a full disk does not make the fault transient.
                fault.persistent |= persistent;
                fault.retries += 1;
            }
            None => {
                s.fault = Some(StorageFault {
                    error,
                    persistent,
                    since: Instant::now(),
                    retries: 0,
                })
            }
        });
    }

    /// Records a successful commit; returns how long the fault lasted, if there was one.
    pub(crate) fn succeeded(&self) -> Option<Duration> {
        let mut lasted = None;
        self.state.send_if_modified(|s| match s.fault.take() {
            Some(fault) => {
                lasted = Some(fault.since.elapsed());
                s.healthy_since = Instant::now();
                true
            }
            None => false,
        });
        lasted
    }

    pub(crate) fn fault(&self) -> Option<StorageFault> {
        self.state.borrow().fault.clone()
    }

    /// When storage last became healthy; `None` while it is failing.
    pub(crate) fn healthy_since(&self) -> Option<Instant> {
        let s = self.state.borrow();
        s.fault.is_none().then_some(s.healthy_since)
    }

    /// Resolves at once unless a persistent fault lasts; then when it ends.
    pub(crate) async fn wait_until_writable(&self) {
        let persistent = |s: &State| s.fault.as_ref().is_some_and(|f| f.persistent);
        if !persistent(&self.state.borrow()) {
            return;
        }
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|s| !persistent(s)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_lasts_until_a_commit_succeeds() {
        let health = StorageHealth::default();
        assert!(health.fault().is_none() && health.healthy_since().is_some());
        health.failed("disk full".into(), true);
        health.failed("disk full".into(), true);
        let fault = health.fault().expect("a fault");
        assert_eq!((fault.retries, fault.persistent), (1, true));
        assert!(health.healthy_since().is_none());
        assert!(health.succeeded().is_some());
        assert!(health.succeeded().is_none());
        assert!(health.fault().is_none());
    }
}
