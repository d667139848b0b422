//! `guild-gateway-dev fake-discord`: a local Discord-compatible server for development, tests and
//! load tests (what a local S3 is for object storage).
//!
//! One port serves the REST API serenity calls (`/api/v10/...`), the gateway WebSocket, and an
//! admin API for tests (`/fake/...`). Every session receives the recorded stream, renumbered
//! from seq 2 (READY is 1), restricted to what Discord routes to the shard it identified as
//! (in [live mode](#live-timeline), only what happens while it is open). Sessions survive their
//! connection, so a client can RESUME and get what it missed.
//!
//! # Discord's rules for a growing bot
//!
//! Every Identify with a valid token, intents and shard is judged by these rules, in order
//! (each is a [`FakeOptions`] field and a command-line flag):
//!
//! 1. **Partition required.** A shard `[id, n]` (an Identify without `shard` is `[0, 1]`) holds
//!    the recording's guilds `g` with `(g >> 22) % n == id`. More than
//!    `max_guilds_per_shard` (Discord: [`MAX_GUILDS_PER_SHARD`]) closes the connection with
//!    4011 "Partition required.".
//! 2. **Session start limit.** Each accepted Identify (a session start; a Resume is not one)
//!    takes one of `session_start_limit` starts. They all come back every
//!    `session_start_reset` (periods counted from the fake's start). An Identify when none is
//!    left is what Discord answers by terminating the bot's sessions and resetting its token;
//!    the fake does the same as far as a client can see: that connection and every connected
//!    session are closed with 4004 "Authentication failed.", every session ends (a Resume gets
//!    Invalid Session), and until the next reset the token is refused everywhere: REST answers
//!    401 and Identify and Resume are closed with 4004. After the reset the same token works
//!    again (Discord would issue a new one; the fake has only one).
//! 3. **Identify rate limit.** Identifies fall in buckets `shard_id % max_concurrency`, and
//!    Discord accepts one per bucket per [`IDENTIFY_RATE_LIMIT_WINDOW`] (5 s), across every
//!    connection of the bot. One sooner after the bucket's last accepted Identify gets op 9
//!    Invalid Session (`d: false`), starts no session, takes no session start, and is counted
//!    as a violation; the connection stays open for a later Identify. Note what this means
//!    for pods that identify without `shard` (every strategy but `discord`): they all share
//!    bucket 0, so only one of them starts per 5 s, as with Discord itself.
//!
//! `GET /api/v10/gateway/bot` reports the limits: `shards` (the recommended count: one per
//! [`GUILDS_PER_RECOMMENDED_SHARD`] guilds of the recording, at least 1, or
//! `recommended_shards`) and `session_start_limit` (`total`, `remaining`, `reset_after` in
//! ms, `max_concurrency`).
//!
//! # Live timeline
//!
//! By default each session gets the whole recording from its beginning, which is right for
//! a fixed set of pods but not for pods that come and go while traffic flows (a live rescale
//! of the StatefulSet): Discord sends each event once, when it happens, to the sessions open
//! then, and a session opened later never sees what came before it. With `live_rate`
//! (`--live-rate N`) the fake does the same:
//!
//! - One clock over the recording, shared by every session: its `position` is how many
//!   frames of the recording have happened. It stands still until started, then advances at
//!   N frames per second of running time (computed from the time elapsed, not from what was
//!   sent, so it is steady however many sessions there are and however slow they read). It
//!   can be paused and resumed (paused time does not count), and it stops at the end of the
//!   recording. It starts only when told, so that a harness can first bring its pods up (and
//!   have their sessions admitted at position 0); `--live-rate` on the command line starts it
//!   at once.
//! - A session admitted (READY sent) at position `p` gets the frames of its shard with an
//!   index of at least `p`, each sent once the clock has passed it: events before it opened
//!   are lost to it, as they are to a pod started late against Discord. A pause stops new
//!   frames from happening; a session still behind on ones that already happened gets them
//!   (a slow reader is behind, not paused). Seqs are numbered as usual (READY 1, its first frame 2), a
//!   Resume replays what the client missed, and READY lists every guild of the shard as
//!   unavailable, as usual. The per-session `rate` does not apply: the clock sets the pace.
//! - A session is `done` once it has sent every frame of its list and the clock is at the
//!   end: until then more may still happen to it.
//!
//! # Admin API (tests)
//!
//! - `GET /fake/sessions`: the sessions, an array of [`SessionView`].
//! - `GET /fake/identifies`: the counters of the rules above and every judged Identify, an
//!   [`IdentifiesView`].
//! - `POST /fake/sessions/{id}/drop`: drops the session's connection without a close frame (a
//!   network failure); the session can be resumed.
//! - `POST /fake/sessions/{id}/close/{code}`: closes the session's connection with that close
//!   code and Discord's reason text for it. After a code Discord does not resume from (4004,
//!   4007, 4009, 4010 to 4014) the session ends and a Resume gets Invalid Session; after
//!   others (4000, 4008, ...) it can be resumed. 409 if no connection is attached, 400 for a
//!   code a server may not send.
//! - `GET /fake/clock`: the live timeline's clock, a [`ClockView`] (`live` false outside live
//!   mode).
//! - `POST /fake/clock/start`, `POST /fake/clock/pause`, `POST /fake/clock/resume`: start the
//!   clock (once; later calls change nothing), pause it while it runs, resume it while it is
//!   paused. 204 (also when there was nothing to change), 409 outside live mode.

mod gateway;
mod rest;

use anyhow::Context as _;
use gateway_actors::event::decode_frame;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// One dispatch of the recorded stream.
pub struct Frame {
    pub name: String,
    pub guild_id: Option<u64>,
    pub data: Box<RawValue>,
}

/// Discord's identify rate limit: one Identify per bucket (`shard_id % max_concurrency`) per
/// this window, across all of a bot's connections.
pub const IDENTIFY_RATE_LIMIT_WINDOW: Duration = Duration::from_secs(5);

/// Discord closes an Identify whose shard would hold more guilds than this with 4011
/// (sharding required).
pub const MAX_GUILDS_PER_SHARD: u64 = 2500;

/// Discord recommends about one shard per this many guilds (`/gateway/bot`'s `shards`).
pub const GUILDS_PER_RECOMMENDED_SHARD: u64 = 1000;

/// `max_concurrency` of a large bot: enough buckets that one process per shard, a few shards
/// at once, never collide.
pub const DEFAULT_MAX_CONCURRENCY: u32 = 16;

/// Discord's daily session start limit of an ordinary bot, and its period.
pub const DEFAULT_SESSION_START_LIMIT: u32 = 1000;
pub const SESSION_START_RESET: Duration = Duration::from_secs(24 * 60 * 60);

/// Judged Identifies kept for `/fake/identifies` (the counters count them all).
const IDENTIFY_LOG: usize = 10_000;

/// The recorded stream and what the REST API answers about it.
pub struct Recording {
    pub frames: Vec<Frame>,
    /// Channel objects by id, from GUILD_CREATE channels and threads.
    pub channels: HashMap<u64, Box<RawValue>>,
    /// Every guild of the stream (a guild id of any dispatch), sorted, once each: the guilds
    /// the bot is in.
    pub guilds: Vec<u64>,
}

#[derive(serde::Deserialize)]
struct WireFrame {
    t: String,
    d: Box<RawValue>,
}

#[derive(serde::Deserialize)]
struct ChannelsOf {
    #[serde(default)]
    channels: Vec<Box<RawValue>>,
    #[serde(default)]
    threads: Vec<Box<RawValue>>,
}

#[derive(serde::Deserialize)]
struct IdOf {
    id: gateway_actors::event::Id,
}

impl Recording {
    /// Reads an NDJSON stream in the `replay` format.
    pub fn load(path: &Path) -> anyhow::Result<Recording> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Recording> {
        let mut frames = Vec::new();
        let mut channels = HashMap::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let dispatch = decode_frame(line).with_context(|| format!("line {}", n + 1))?;
            let wire: WireFrame =
                serde_json::from_str(line).with_context(|| format!("line {}", n + 1))?;
            if wire.t == "GUILD_CREATE" {
                let of: ChannelsOf = serde_json::from_str(wire.d.get())
                    .with_context(|| format!("line {}", n + 1))?;
                for raw in of.channels.into_iter().chain(of.threads) {
                    let IdOf { id } = serde_json::from_str(raw.get())
                        .with_context(|| format!("line {}: channel id", n + 1))?;
                    channels.insert(id.0, raw);
                }
            }
            frames.push(Frame {
                name: wire.t,
                guild_id: dispatch.guild_id.map(|g| g.0),
                data: wire.d,
            });
        }
        let mut guilds: Vec<u64> = frames.iter().filter_map(|f| f.guild_id).collect();
        guilds.sort_unstable();
        guilds.dedup();
        Ok(Recording {
            frames,
            channels,
            guilds,
        })
    }

    /// How many of the stream's guilds shard `[id, total]` holds.
    pub fn guilds_on(&self, shard: [u32; 2]) -> u64 {
        let [id, total] = shard;
        if total <= 1 {
            return self.guilds.len() as u64;
        }
        self.guilds
            .iter()
            .filter(|&&g| (g >> 22) % u64::from(total) == u64::from(id))
            .count() as u64
    }

    /// The frames Discord would route to shard `[id, total]`.
    pub fn frames_for(&self, shard: [u32; 2]) -> Vec<usize> {
        let [id, total] = shard;
        (0..self.frames.len())
            .filter(|&i| match self.frames[i].guild_id {
                _ if total <= 1 => true,
                Some(guild) => (guild >> 22) % u64::from(total) == u64::from(id),
                None => id == 0,
            })
            .collect()
    }
}

/// Settings of a fake Discord.
#[derive(Clone)]
pub struct FakeOptions {
    pub token: String,
    pub bot_user_id: u64,
    pub heartbeat_interval: Duration,
    /// Drop each session's first connection (no close frame) right after sending this seq.
    pub drop_at_seq: Option<u64>,
    /// Dispatches per second per session (None: as fast as the client reads). Not used in
    /// live mode, where the clock sets the pace.
    pub rate: Option<u32>,
    /// Live mode: one clock over the recording at this many frames per second, each frame
    /// sent once to the sessions open when it happens (see "Live timeline" in the module
    /// docs). None: every session gets the whole recording.
    pub live_rate: Option<u32>,
    /// Intents this bot may use; an Identify asking for more is closed with 4014.
    pub allowed_intents: u64,
    /// Guilds one shard may hold; an Identify for a shard holding more is closed with 4011.
    pub max_guilds_per_shard: u64,
    /// Identify buckets: `shard_id % max_concurrency` (at least 1).
    pub max_concurrency: u32,
    /// One accepted Identify per bucket per this window ([`IDENTIFY_RATE_LIMIT_WINDOW`];
    /// shorter only in tests).
    pub identify_window: Duration,
    /// Session starts allowed per `session_start_reset`.
    pub session_start_limit: u32,
    /// The session start limit's period, counted from the fake's start.
    pub session_start_reset: Duration,
    /// Starts left in the first period (a bot that already spent some today); None: all.
    pub session_starts_remaining: Option<u32>,
    /// `/gateway/bot`'s `shards`; None: one per 1,000 guilds of the recording, at least 1.
    pub recommended_shards: Option<u32>,
}

impl Default for FakeOptions {
    /// Discord's rules for a large bot, and the command line's defaults.
    fn default() -> Self {
        FakeOptions {
            token: "fake-token".into(),
            bot_user_id: 1_000_000_000_000_000_001,
            heartbeat_interval: Duration::from_secs(5),
            drop_at_seq: None,
            rate: None,
            live_rate: None,
            allowed_intents: u64::MAX,
            max_guilds_per_shard: MAX_GUILDS_PER_SHARD,
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            identify_window: IDENTIFY_RATE_LIMIT_WINDOW,
            session_start_limit: DEFAULT_SESSION_START_LIMIT,
            session_start_reset: SESSION_START_RESET,
            session_starts_remaining: None,
            recommended_shards: None,
        }
    }
}

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
}

impl Session {
    /// Everything the session will get was sent. `timeline_ended`: the live clock is at the
    /// recording's end (always true outside live mode); before that more may happen to it.
    pub fn done(&self, timeline_ended: bool) -> bool {
        // READY is seq 1, the last frame seq len + 1.
        timeline_ended && self.last_seq_sent > self.frames.len() as u64
    }
}

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
}

/// One Identify judged by the rules (`attempts` of `GET /fake/identifies`).
#[derive(Serialize, Clone, Debug)]
pub struct IdentifyAttempt {
    /// The session it started (null unless accepted).
    pub session: Option<String>,
    /// The `shard` it sent (null: none).
    pub shard: Option<[u32; 2]>,
    /// `shard_id % max_concurrency`.
    pub bucket: u32,
    /// ms since the fake started.
    pub at_ms: u64,
    pub accepted: bool,
    /// `ready`, `invalid_session` (rate limit: op 9), `sharding_required` (4011),
    /// `session_start_limit` (4004: the limit was exceeded, the token reset now) or
    /// `token_reset` (4004: the token is reset until the limit's reset).
    pub outcome: &'static str,
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
}

/// `/gateway/bot`'s `session_start_limit`, as of now.
pub struct SessionStartLimit {
    pub total: u32,
    pub remaining: u32,
    pub reset_after_ms: u64,
    pub max_concurrency: u32,
}

/// Why an Identify was refused by the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Close 4011.
    ShardingRequired,
    /// Close 4004: this Identify exceeded the session start limit (the token is reset now).
    SessionStartLimit,
    /// Close 4004: the token is reset until the limit's reset.
    TokenReset,
    /// Op 9: the bucket's last accepted Identify is within the window.
    RateLimited,
}

/// The rules' state, shared by every connection.
struct Limits {
    /// Start of the session start limit's current period.
    period_start: Instant,
    remaining: u32,
    token_reset: bool,
    last_accepted: HashMap<u32, Instant>,
    accepted: u64,
    violations: u64,
    attempts: VecDeque<IdentifyAttempt>,
}

impl Limits {
    /// A new period (all starts back, the token valid again) once the current one is over.
    fn refresh(&mut self, now: Instant, options: &FakeOptions) {
        let period = options.session_start_reset.max(Duration::from_millis(1));
        let elapsed = now.saturating_duration_since(self.period_start);
        if elapsed >= period {
            let into_current = elapsed.as_nanos() % period.as_nanos();
            self.period_start = now - Duration::from_nanos(into_current as u64);
            self.remaining = options.session_start_limit;
            self.token_reset = false;
        }
    }

    fn reset_after(&self, now: Instant, options: &FakeOptions) -> Duration {
        (self.period_start + options.session_start_reset).saturating_duration_since(now)
    }
}

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
enum Due {
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
struct Clock {
    /// Frames per second (at least 1).
    rate: u32,
    total: u64,
    state: ClockState,
    /// Running time before the current run.
    ran: Duration,
}

impl Clock {
    fn new(rate: u32, total: u64) -> Clock {
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

    fn position(&self, now: Instant) -> u64 {
        let happened = self.running_time(now).as_nanos() * u128::from(self.rate) / 1_000_000_000;
        u64::try_from(happened).unwrap_or(u64::MAX).min(self.total)
    }

    /// When frame `index` has happened (the position is past it).
    fn due(&self, index: usize, now: Instant) -> Due {
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

    fn start(&mut self, now: Instant) {
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

/// The server's shared state.
pub struct Fake {
    pub recording: Recording,
    pub options: FakeOptions,
    pub addr: SocketAddr,
    /// Identify times are ms since this.
    pub started: Instant,
    // Lock order: `limits` before `sessions`; nothing is taken while `clock` is held.
    sessions: Mutex<Vec<Session>>,
    limits: Mutex<Limits>,
    /// The live timeline's clock (None: not in live mode).
    clock: Option<Mutex<Clock>>,
    /// Changed at every start, pause and resume: connections waiting for the clock to run
    /// (or sleeping until a due time it moved) look again.
    clock_moved: tokio::sync::watch::Sender<()>,
}

impl Fake {
    pub fn sessions(&self) -> MutexGuard<'_, Vec<Session>> {
        // Updates are single steps; a panic elsewhere leaves consistent data.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn limits(&self) -> MutexGuard<'_, Limits> {
        let mut limits = self.limits.lock().unwrap_or_else(|p| p.into_inner());
        limits.refresh(Instant::now(), &self.options);
        limits
    }

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
            })
            .collect()
    }

    pub fn identifies_view(&self) -> IdentifiesView {
        let limits = self.limits();
        IdentifiesView {
            identifies: limits.accepted,
            identify_violations: limits.violations,
            session_starts_remaining: limits.remaining,
            session_start_limit: self.options.session_start_limit,
            session_start_reset_after_ms: millis(limits.reset_after(Instant::now(), &self.options)),
            token_reset: limits.token_reset,
            max_concurrency: self.max_concurrency(),
            identify_window_ms: millis(self.options.identify_window),
            attempts: limits.attempts.iter().cloned().collect(),
        }
    }

    pub fn session_start_limit(&self) -> SessionStartLimit {
        let limits = self.limits();
        SessionStartLimit {
            total: self.options.session_start_limit,
            remaining: limits.remaining,
            reset_after_ms: millis(limits.reset_after(Instant::now(), &self.options)),
            max_concurrency: self.max_concurrency(),
        }
    }

    /// Whether the fake is in live mode (`live_rate`).
    pub fn live(&self) -> bool {
        self.clock.is_some()
    }

    fn clock(&self) -> Option<MutexGuard<'_, Clock>> {
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
    fn due(&self, index: usize) -> Due {
        self.clock()
            .map_or(Due::Now, |clock| clock.due(index, Instant::now()))
    }

    /// `/gateway/bot`'s `shards`.
    pub fn recommended_shards(&self) -> u32 {
        self.options.recommended_shards.unwrap_or_else(|| {
            let guilds = self.recording.guilds.len() as u64;
            guilds
                .div_ceil(GUILDS_PER_RECOMMENDED_SHARD)
                .clamp(1, u64::from(u32::MAX)) as u32
        })
    }

    pub fn max_concurrency(&self) -> u32 {
        self.options.max_concurrency.max(1)
    }

    /// Whether the session start limit was exceeded and the token is refused until its reset.
    pub fn token_reset(&self) -> bool {
        self.limits().token_reset
    }

    fn token_ok(&self, presented: &str) -> bool {
        let presented = presented.trim();
        presented == self.options.token
            || presented.strip_prefix("Bot ") == Some(self.options.token.as_str())
    }

    /// Judges an Identify (valid token, intents and shard) that would start `session`, by
    /// the rules in the module docs, and records it. Accepted: the session is added and its
    /// index returned.
    pub fn admit(&self, mut session: Session) -> Result<usize, Refusal> {
        let mut limits = self.limits();
        let now = Instant::now();
        let at_ms = millis(now.saturating_duration_since(self.started));
        let bucket = session.shard[0] % self.max_concurrency();
        let verdict =
            if self.recording.guilds_on(session.shard) > self.options.max_guilds_per_shard {
                Err(Refusal::ShardingRequired)
            } else if limits.token_reset {
                Err(Refusal::TokenReset)
            } else if limits.remaining == 0 {
                Err(Refusal::SessionStartLimit)
            } else if limits.last_accepted.get(&bucket).is_some_and(|&last| {
                now.saturating_duration_since(last) < self.options.identify_window
            }) {
                Err(Refusal::RateLimited)
            } else {
                Ok(())
            };
        if limits.attempts.len() == IDENTIFY_LOG {
            limits.attempts.pop_front();
        }
        limits.attempts.push_back(IdentifyAttempt {
            session: verdict.is_ok().then(|| session.id.clone()),
            shard: session.shard_sent,
            bucket,
            at_ms,
            accepted: verdict.is_ok(),
            outcome: match verdict {
                Ok(()) => "ready",
                Err(Refusal::RateLimited) => "invalid_session",
                Err(Refusal::ShardingRequired) => "sharding_required",
                Err(Refusal::SessionStartLimit) => "session_start_limit",
                Err(Refusal::TokenReset) => "token_reset",
            },
        });
        match verdict {
            Ok(()) => {
                limits.remaining -= 1;
                limits.accepted += 1;
                limits.last_accepted.insert(bucket, now);
                session.identified_at_ms.push(at_ms);
                // Live: what happened before this session opened is not for it.
                if let Some(clock) = self.clock() {
                    let from = clock.position(Instant::now());
                    session.frames.retain(|&i| i as u64 >= from);
                }
                let mut sessions = self.sessions();
                sessions.push(session);
                Ok(sessions.len() - 1)
            }
            Err(refusal) => {
                match refusal {
                    Refusal::RateLimited => limits.violations += 1,
                    Refusal::SessionStartLimit => {
                        // Discord terminates every session and resets the token.
                        limits.token_reset = true;
                        for s in self.sessions().iter_mut() {
                            s.open = false;
                            if s.connected {
                                s.pending = Some(Control::Close(close::AUTHENTICATION_FAILED));
                                s.control.notify_one();
                            }
                        }
                    }
                    Refusal::ShardingRequired | Refusal::TokenReset => {}
                }
                Err(refusal)
            }
        }
    }

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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Discord's gateway close codes, and which of them end a session.
pub mod close {
    pub const UNKNOWN_OPCODE: u16 = 4001;
    pub const DECODE_ERROR: u16 = 4002;
    pub const NOT_AUTHENTICATED: u16 = 4003;
    pub const AUTHENTICATION_FAILED: u16 = 4004;
    pub const ALREADY_AUTHENTICATED: u16 = 4005;
    pub const INVALID_SHARD: u16 = 4010;
    pub const SHARDING_REQUIRED: u16 = 4011;
    pub const DISALLOWED_INTENTS: u16 = 4014;

    /// Discord's reason text for a close code.
    pub fn reason(code: u16) -> &'static str {
        match code {
            4000 => "Unknown error.",
            4001 => "Unknown opcode.",
            4002 => "Decode error.",
            4003 => "Not authenticated.",
            4004 => "Authentication failed.",
            4005 => "Already authenticated.",
            4007 => "Invalid seq.",
            4008 => "Rate limited.",
            4009 => "Session timed out.",
            4010 => "Invalid shard.",
            4011 => "Partition required.",
            4012 => "Invalid API version.",
            4013 => "Invalid intent(s).",
            4014 => "Disallowed intent(s).",
            _ => "Closed on request.",
        }
    }

    /// Codes after which Discord does not resume the session: a new Identify is needed
    /// (4007, 4009) or the client must not reconnect at all.
    pub fn ends_session(code: u16) -> bool {
        matches!(code, 4004 | 4007 | 4009..=4014)
    }

    /// Codes a server may send in a close frame (RFC 6455 7.4: not 1004 to 1006, 1015).
    pub fn sendable(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// Binds `listen` and serves until the process ends. Returns the bound address and the state.
pub async fn start(
    listen: SocketAddr,
    recording: Recording,
    options: FakeOptions,
) -> anyhow::Result<Arc<Fake>> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let started = Instant::now();
    let limits = Limits {
        period_start: started,
        remaining: options
            .session_starts_remaining
            .unwrap_or(options.session_start_limit)
            .min(options.session_start_limit),
        token_reset: false,
        last_accepted: HashMap::new(),
        accepted: 0,
        violations: 0,
        attempts: VecDeque::new(),
    };
    let clock = options
        .live_rate
        .map(|rate| Mutex::new(Clock::new(rate, recording.frames.len() as u64)));
    let fake = Arc::new(Fake {
        recording,
        options,
        addr,
        started,
        sessions: Mutex::new(Vec::new()),
        limits: Mutex::new(limits),
        clock,
        clock_moved: tokio::sync::watch::Sender::new(()),
    });
    let server = fake.clone();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_connection(server.clone(), stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    Ok(fake)
}

/// Reads the request head without consuming it, and routes to the WebSocket or REST side.
async fn serve_connection(fake: Arc<Fake>, stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    let head = loop {
        let n = match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(end) = find(&buf[..n], b"\r\n\r\n") {
            break String::from_utf8_lossy(&buf[..end]).to_string();
        }
        if n == buf.len() {
            return; // a head over 16 KiB is not one of our clients
        }
        // Wait for more of the head to arrive.
        if stream.readable().await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let upgrade = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("upgrade:") && l.contains("websocket")
    });
    if upgrade {
        gateway::serve(fake, stream).await;
    } else {
        rest::serve(fake, stream, head).await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A random-enough session id (no RNG crate needed).
fn new_session_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    format!("{:016x}", h.finish())
}

/// `guild-gateway-dev fake-discord` arguments.
#[derive(Debug, clap::Args)]
pub struct FakeDiscordArgs {
    /// Address to listen on (use 127.0.0.1:PORT)
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// The stream every session receives (NDJSON, as `replay` reads)
    #[arg(long)]
    pub events: std::path::PathBuf,
    /// The token clients must present
    #[arg(long, default_value = "fake-token", hide_default_value = true)]
    pub token: String,
    /// The bot's user id in READY
    #[arg(long, default_value = "1000000000000000001")]
    pub bot_user_id: u64,
    /// Heartbeat interval announced in Hello, in milliseconds
    #[arg(long, default_value = "5000")]
    pub heartbeat_ms: u64,
    /// Drop each session's first connection (no close frame) right after this seq
    #[arg(long)]
    pub drop_at_seq: Option<u64>,
    /// Dispatches per second per session [default: as fast as clients read]
    #[arg(long)]
    pub rate: Option<u32>,
    /// Live timeline: one clock over the stream at N dispatches per second, started at once;
    /// each dispatch goes once to the sessions open when it happens, a later session does not
    /// get earlier ones (--rate is then not used; POST /fake/clock/pause and /resume)
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub live_rate: Option<u32>,
    /// With --live-rate: hold the clock until POST /fake/clock/start (a harness starts the
    /// traffic once its pods are connected)
    #[arg(long, requires = "live_rate")]
    pub live_hold: bool,
    /// Intents the bot may use (bit mask); an Identify asking for others is closed with 4014
    #[arg(long, default_value_t = u64::MAX)]
    pub allowed_intents: u64,
    /// Guilds one shard may hold: an Identify whose shard [id, n] would hold more of the
    /// stream's guilds is closed with 4011 (sharding required)
    #[arg(long, default_value_t = MAX_GUILDS_PER_SHARD)]
    pub max_guilds_per_shard: u64,
    /// Identify buckets (shard_id % C), one accepted Identify per bucket per window; sooner
    /// ones get op 9 Invalid Session
    #[arg(long, default_value_t = DEFAULT_MAX_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrency: u32,
    /// The identify rate limit's window in milliseconds (Discord's is 5000; shorten only in tests)
    #[arg(long, default_value_t = IDENTIFY_RATE_LIMIT_WINDOW.as_millis() as u64)]
    pub identify_window_ms: u64,
    /// Session starts (accepted Identifies) per period; one more is answered as Discord does
    /// (sessions terminated, token reset: 4004, REST 401 until the period ends)
    #[arg(long, default_value_t = DEFAULT_SESSION_START_LIMIT)]
    pub session_start_limit: u32,
    /// The session start limit's period in milliseconds, counted from the start
    #[arg(long, default_value_t = SESSION_START_RESET.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    pub session_start_reset_ms: u64,
    /// Starts left in the first period (a bot that already spent some today) [default: the limit]
    #[arg(long)]
    pub session_starts_remaining: Option<u32>,
    /// The shard count /gateway/bot recommends [default: one per 1,000 guilds of the stream, at least 1]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub recommended_shards: Option<u32>,
}

impl FakeDiscordArgs {
    pub fn options(&self) -> FakeOptions {
        FakeOptions {
            token: self.token.clone(),
            bot_user_id: self.bot_user_id,
            heartbeat_interval: Duration::from_millis(self.heartbeat_ms.max(100)),
            drop_at_seq: self.drop_at_seq,
            rate: self.rate,
            live_rate: self.live_rate,
            allowed_intents: self.allowed_intents,
            max_guilds_per_shard: self.max_guilds_per_shard,
            max_concurrency: self.max_concurrency,
            identify_window: Duration::from_millis(self.identify_window_ms),
            session_start_limit: self.session_start_limit,
            session_start_reset: Duration::from_millis(self.session_start_reset_ms),
            session_starts_remaining: self.session_starts_remaining,
            recommended_shards: self.recommended_shards,
        }
    }
}

/// Runs the fake until SIGTERM or SIGINT.
pub async fn run(args: FakeDiscordArgs) -> anyhow::Result<()> {
    let signal = shutdown_signal()?;
    let recording = Recording::load(&args.events)?;
    let frames = recording.frames.len();
    let fake = start(args.listen, recording, args.options()).await?;
    tracing::info!(addr = %fake.addr, frames, "fake Discord listening (REST under /api/v10, gateway, admin under /fake)");
    tracing::info!(
        guilds = fake.recording.guilds.len(),
        recommended_shards = fake.recommended_shards(),
        max_guilds_per_shard = fake.options.max_guilds_per_shard,
        max_concurrency = fake.max_concurrency(),
        identify_window_ms = fake.options.identify_window.as_millis() as u64,
        session_start_limit = fake.options.session_start_limit,
        session_start_reset_ms = fake.options.session_start_reset.as_millis() as u64,
        "Discord's limits"
    );
    match args.live_rate {
        Some(rate) if args.live_hold => {
            tracing::info!(rate, "live timeline held until POST /fake/clock/start")
        }
        Some(rate) => {
            // Standalone there is no harness to wait for: the traffic starts now.
            let _ = fake.clock_start();
            tracing::info!(rate, "live timeline started");
        }
        None => {}
    }
    println!("fake-discord listening on http://{}", fake.addr);
    let name = signal.await;
    tracing::info!("{name}: stopping");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now (so a signal arriving while the stream loads
/// is not missed); the future resolves with the signal's name.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
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
