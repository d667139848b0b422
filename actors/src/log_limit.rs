//! Rate limiting for log lines that a fault can repeat thousands of times a second (a full
//! disk, a stuck guild): the first occurrence is logged, then at most one line per interval,
//! carrying how many were suppressed in between.

use std::time::{Duration, Instant};

/// Decides whether a repeated log line may be written now.
#[derive(Debug)]
pub(crate) struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) const fn new(every: Duration) -> Self {
        LogLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when the line may be logged now, `n` being how many were suppressed since the
    /// last one; `None` when it must be suppressed.
    pub(crate) fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// Forgets the fault, so its next occurrence is logged at once.
    pub(crate) fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_the_first_then_counts_the_suppressed() {
        let mut limit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.allow(), Some(0));
        assert_eq!(limit.allow(), None);
        assert_eq!(limit.allow(), None);
        limit.reset();
        assert_eq!(limit.allow(), Some(0));
        let mut every_time = LogLimit::new(Duration::ZERO);
        every_time.allow();
        every_time.allow();
        assert_eq!(every_time.allow(), Some(0));
    }
}
