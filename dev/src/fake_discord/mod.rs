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

//!
//! # Layout
//!
//! [`recording`](Recording) is the stream, `options` the settings, `rules` the judging of
//! Identifies, `clock` the live timeline, `session` a session's state, `views` the admin
//! API's snapshots, `server` the listener and shared state ([`Fake`]), `gateway` and `rest`
//! the two protocols, `cli` the command line.

mod cli;
mod clock;
pub mod close;
mod gateway;
mod options;
mod recording;
mod rest;
mod rules;
mod server;
mod session;
mod views;

pub use cli::{run, FakeDiscordArgs};
pub use clock::{ClockView, NotLive};
pub use options::{
    FakeOptions, DEFAULT_MAX_CONCURRENCY, DEFAULT_SESSION_START_LIMIT,
    GUILDS_PER_RECOMMENDED_SHARD, IDENTIFY_RATE_LIMIT_WINDOW, MAX_GUILDS_PER_SHARD,
    SESSION_START_RESET,
};
pub use recording::{Frame, Recording};
pub use rules::{IdentifyAttempt, Refusal, SessionStartLimit};
pub use server::{start, Fake};
pub use session::{Control, ControlError, Session};
pub use views::{IdentifiesView, SessionView};
