//! `guild-gateway-dev fake-discord` on the command line: its flags and running the fake until
//! a signal.

use super::{
    start, FakeOptions, Recording, DEFAULT_MAX_CONCURRENCY, DEFAULT_SESSION_START_LIMIT,
    IDENTIFY_RATE_LIMIT_WINDOW, MAX_GUILDS_PER_SHARD, SESSION_START_RESET,
};
use anyhow::Context as _;
use std::net::SocketAddr;
use std::time::Duration;

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
