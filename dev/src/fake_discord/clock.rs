//! The live timeline's clock: one position over the recording shared by every session,
//! started, paused and resumed by the admin API (see "Live timeline" in the module docs).

use super::Fake;
use serde::Serialize;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

/// `GET /fake/clock`: the live timeline's clock.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockView {
    /// The fake is in live mode (`live_rate`); when false the rest means nothing.
    pub live: bool,
    /// Started and not paused. It stays true at the end, where the clock no longer moves:
    /// `position == total` tells that.
    pub running: bool,
    /// Frames of the recording that have happened.
    pub position: u64,
    /// Frames of the recording.
    pub total: u64,
}

/// A clock request to a fake that is not in live mode (HTTP 409).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotLive;

/// When a frame of the recording is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Due {
    Now,
    At(Instant),
    /// The clock is not running: only a start or a resume can make it due.
    Waiting,
}

#[derive(Clone, Copy, Debug)]
enum ClockState {
    Unstarted,
    Running { since: Instant },
    Paused,
}

/// The live timeline's clock. Its position is computed from the running time at each
/// reading (nothing ticks), so it is exact and costs nothing while nobody looks.
pub(super) struct Clock {
    /// Frames per second (at least 1).
    rate: u32,
    total: u64,
    state: ClockState,
    /// Running time before the current run.
    ran: Duration,
}

impl Clock {
    pub(super) fn new(rate: u32, total: u64) -> Clock {
        Clock {
            rate: rate.max(1),
            total,
            state: ClockState::Unstarted,
            ran: Duration::ZERO,
        }
    }

    fn running_time(&self, now: Instant) -> Duration {
        match self.state {
            ClockState::Running { since } => self.ran + now.saturating_duration_since(since),
            ClockState::Unstarted | ClockState::Paused => self.ran,
        }
    }

    pub(super) fn position(&self, now: Instant) -> u64 {
        let happened = self.running_time(now).as_nanos() * u128::from(self.rate) / 1_000_000_000;
        u64::try_from(happened).unwrap_or(u64::MAX).min(self.total)
    }

    /// When frame `index` has happened (the position is past it).
    pub(super) fn due(&self, index: usize, now: Instant) -> Due {
        if self.position(now) > index as u64 {
            return Due::Now;
        }
        let ClockState::Running { since } = self.state else {
            return Due::Waiting;
        };
        // The position passes `index` after (index + 1) / rate seconds of running time
        // (rounded up, so that the position has moved when the wait is over).
        let needed = (index as u128 + 1) * 1_000_000_000;
        let needed = Duration::from_nanos(
            u64::try_from(needed.div_ceil(u128::from(self.rate))).unwrap_or(u64::MAX),
        );
        Due::At(since + needed.saturating_sub(self.ran))
    }

    pub(super) fn start(&mut self, now: Instant) {
        if let ClockState::Unstarted = self.state {
            self.state = ClockState::Running { since: now };
        }
    }

    fn pause(&mut self, now: Instant) {
        if let ClockState::Running { since } = self.state {
            self.ran += now.saturating_duration_since(since);
            self.state = ClockState::Paused;
        }
    }

    fn resume(&mut self, now: Instant) {
        if let ClockState::Paused = self.state {
            self.state = ClockState::Running { since: now };
        }
    }

    fn view(&self, now: Instant) -> ClockView {
        ClockView {
            live: true,
            running: matches!(self.state, ClockState::Running { .. }),
            position: self.position(now),
            total: self.total,
        }
    }
}

impl Fake {
    /// Whether the fake is in live mode (`live_rate`).
    pub fn live(&self) -> bool {
        self.clock.is_some()
    }

    pub(super) fn clock(&self) -> Option<MutexGuard<'_, Clock>> {
        self.clock
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The live timeline's clock as of now (`live` false, the rest 0 but `total`, outside
    /// live mode).
    pub fn clock_view(&self) -> ClockView {
        match self.clock() {
            Some(clock) => clock.view(Instant::now()),
            None => ClockView {
                live: false,
                running: false,
                position: 0,
                total: self.recording.frames.len() as u64,
            },
        }
    }

    /// Whether the live clock is at the recording's end; always true outside live mode.
    pub fn timeline_ended(&self) -> bool {
        let view = self.clock_view();
        !view.live || view.position == view.total
    }

    /// Starts the live clock at position 0; it has no effect once started (a paused clock
    /// needs [`Fake::clock_resume`]).
    pub fn clock_start(&self) -> Result<(), NotLive> {
        self.move_clock(Clock::start)
    }

    /// Stops the live clock where it is (no effect unless it runs).
    pub fn clock_pause(&self) -> Result<(), NotLive> {
        self.move_clock(Clock::pause)
    }

    /// Continues a paused live clock from where it stopped (no effect unless paused).
    pub fn clock_resume(&self) -> Result<(), NotLive> {
        self.move_clock(Clock::resume)
    }

    fn move_clock(&self, change: fn(&mut Clock, Instant)) -> Result<(), NotLive> {
        change(&mut *self.clock().ok_or(NotLive)?, Instant::now());
        self.clock_moved.send_replace(());
        Ok(())
    }

    /// When frame `index` of the recording may be sent: at once outside live mode.
    pub(super) fn due(&self, index: usize) -> Due {
        self.clock()
            .map_or(Due::Now, |clock| clock.due(index, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_clock_counts_running_time_only_and_stops_at_the_end() {
        let t0 = Instant::now();
        let mut clock = Clock::new(100, 50);
        assert_eq!(clock.position(t0 + ms(5000)), 0, "not started");
        assert_eq!(clock.due(0, t0), Due::Waiting);
        clock.start(t0);
        assert_eq!(clock.position(t0 + ms(95)), 9);
        assert_eq!(clock.position(t0 + ms(100)), 10);
        // Frame 10 has happened once the position is 11: at 110 ms.
        assert_eq!(clock.due(10, t0 + ms(20)), Due::At(t0 + ms(110)));
        assert_eq!(clock.due(9, t0 + ms(100)), Due::Now);
        clock.pause(t0 + ms(200));
        assert_eq!(
            clock.position(t0 + ms(900)),
            20,
            "paused time does not count"
        );
        assert_eq!(clock.due(25, t0 + ms(900)), Due::Waiting);
        clock.start(t0 + ms(900));
        assert_eq!(clock.position(t0 + ms(950)), 20, "start does not resume");
        clock.resume(t0 + ms(1000));
        assert_eq!(clock.position(t0 + ms(1050)), 25);
        assert_eq!(clock.due(25, t0 + ms(1000)), Due::At(t0 + ms(1060)));
        let view = clock.view(t0 + ms(60_000));
        assert_eq!(
            view,
            ClockView {
                live: true,
                running: true,
                position: 50,
                total: 50
            }
        );
    }
}
