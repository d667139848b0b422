//! Waiting on conditions: tests poll what they can observe instead of sleeping for a guessed
//! time; the limits are hang guards, not expectations of speed.

use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = check() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Polls `check` until it returns `Ok`, for as long as the progress it reports (`Err`) keeps
/// changing: gives up after `stall` without a change, or after `limit` in all. For work whose
/// length depends on the machine's load (a shared CI runner) but which must never stop moving.
pub fn wait_progressing<T, P: PartialEq>(
    stall: Duration,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, P>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    let mut last: Option<P> = None;
    let mut moved = Instant::now();
    while Instant::now() < deadline && moved.elapsed() < stall {
        match check() {
            Ok(v) => return Some(v),
            Err(progress) => {
                if last.as_ref() != Some(&progress) {
                    last = Some(progress);
                    moved = Instant::now();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}
