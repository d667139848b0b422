//! All configuration, in one place: environment variables mirrored as CLI flags.
//!
//! clap reads flags and environment variables as text; validation happens here so that every
//! bad value ends the program with one line naming the variable and the value, before anything
//! (the database, a port) is touched.

mod parsers;

pub use parsers::*;

use crate::routing::UrlTemplate;
use clap::Args;
use gateway_actors::partition::{Partition, Strategy};
use gateway_actors::query::QueryLimits;
use gateway_actors::CacheExpiry;
use gateway_actors::PipelineConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The settings of a pod's pipeline: `serve` and `replay` flatten these in.
#[derive(Debug, Args, Clone)]
pub struct PodArgs {
    /// This pod's ordinal [default: the trailing -N of HOSTNAME, else 0]
    #[arg(long, env = "POD_ORDINAL", value_parser = number(0, MAX_PODS))]
    pub pod_ordinal: Option<u64>,
    /// Number of gateway pods
    #[arg(long, env = "NUM_GATEWAY_PODS", default_value = "1",
        value_parser = number(1, MAX_PODS))]
    pub num_gateway_pods: u64,
    /// How guilds map to pods: md5 (the HTTP services' function) or discord (Discord's shards)
    #[arg(long, env = "SHARD_STRATEGY", default_value = "md5",
        value_parser = strategy())]
    pub shard_strategy: Strategy,
    /// The bot's Discord shard count S: a number, or auto (md5 only) for what GET /gateway/bot recommends [default: 1 with md5, NUM_GATEWAY_PODS with discord]
    #[arg(long, env = "DISCORD_SHARDS", value_parser = shard_count())]
    pub discord_shards: Option<ShardCount>,
    /// Path of this pod's SQLite file, or a sqlite: URL (parent directories are created)
    #[arg(long, env = "DATABASE_URL", default_value = "./data/gateway.sqlite3",
        value_parser = database_path())]
    pub database_url: PathBuf,
    /// Listen address for /metrics, /healthz, /readyz and /status
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:3000", value_parser = http_addr())]
    pub http_addr: SocketAddr,
    /// Log format: text or json
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = log_format())]
    pub log_format: LogFormat,
    /// Events in a guild actor's mailbox before the rest wait in its overflow queue (nothing is shed)
    #[arg(long, env = "GUILD_MAILBOX_CAPACITY", default_value = "1024",
        value_parser = number(1, 1 << 24))]
    pub guild_mailbox_capacity: u64,
    /// Seconds a guild with queued events may make no progress before it is declared stuck and its events are dropped (counted)
    #[arg(long, env = "GUILD_STUCK_SECS", default_value = "120",
        value_parser = seconds(1, 1 << 32))]
    pub guild_stuck_secs: Duration,
    /// Write commands queued for the SQLite writer before guild actors wait
    #[arg(long, env = "WRITER_MAILBOX_CAPACITY", default_value = "8192",
        value_parser = number(1, 1 << 24))]
    pub writer_mailbox_capacity: u64,
    /// Most write commands committed in one transaction
    #[arg(long, env = "WRITER_MAX_BATCH", default_value = "2000",
        value_parser = number(1, 1 << 20))]
    pub writer_max_batch: u64,
    /// Events accepted but not yet committed before the source waits
    #[arg(long, env = "MAX_IN_FLIGHT", default_value = "65536",
        value_parser = number(1, 1 << 26))]
    pub max_in_flight: u64,
    /// Seconds a guild actor may stay idle before it is stopped (passivated)
    #[arg(long, env = "GUILD_IDLE_SECS", default_value = "300",
        value_parser = seconds(1, 1 << 32))]
    pub guild_idle_secs: Duration,
    /// Seconds a moderation event and its audit log entry wait for each other
    #[arg(long, env = "AUDIT_WINDOW_SECS", default_value = "5",
        value_parser = seconds(0, 3600))]
    pub audit_window_secs: Duration,
    /// SQLite WAL pages before a checkpoint (run by a thread beside the writer); 0 when Litestream checkpoints (Kubernetes)
    #[arg(long, env = "SQLITE_WAL_AUTOCHECKPOINT", default_value = "1000",
        value_parser = number(0, 1 << 30))]
    pub sqlite_wal_autocheckpoint: u64,
    /// Threads that run guild actors
    #[arg(long, env = "GUILD_WORKERS", default_value = "1",
        value_parser = number(0, 256))]
    pub guild_workers: u64,
    /// Minutes without a touch after which message_cache content is cleared
    #[arg(long, env = "CACHE_CONTENT_TTL_MINUTES", default_value = "60",
        value_parser = minutes(1, 1 << 24))]
    pub cache_content_ttl_minutes: Duration,
    /// Hours after creation at which message_cache rows are deleted
    #[arg(long, env = "CACHE_RETENTION_HOURS", default_value = "24",
        value_parser = hours(1, 1 << 20))]
    pub cache_retention_hours: Duration,
    /// Seconds between runs of the message_cache expiry job
    #[arg(long, env = "CACHE_EXPIRY_INTERVAL_SECS", default_value = "60",
        value_parser = seconds(1, 1 << 24))]
    pub cache_expiry_interval_secs: Duration,
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub test_hooks: TestHooks,
}

/// Test seams, compiled in only with the `test-hooks` feature (the test suite's builds): a
/// release pod has no such setting.
#[cfg(feature = "test-hooks")]
#[derive(Debug, Args, Clone)]
pub struct TestHooks {
    /// Delay every event's handling by this many milliseconds (slows the pipeline)
    #[arg(long, env = "TEST_EVENT_DELAY_MS", hide = true, value_parser = millis(0, 60_000))]
    pub test_event_delay_ms: Option<Duration>,
}

#[cfg(not(feature = "test-hooks"))]
#[derive(Debug, Args, Clone)]
pub struct TestHooks {}

impl TestHooks {
    /// The pipeline's slow-guild hook, if a test asked for one.
    fn slow_hook(&self) -> Option<gateway_actors::SlowGuildHook> {
        #[cfg(feature = "test-hooks")]
        if let Some(delay) = self.test_event_delay_ms {
            return Some(std::sync::Arc::new(move |_| Some(delay)));
        }
        None
    }
}

/// The relay: Discord's gateway protocol for the bot's own process, on RELAY_ADDR.
#[derive(Debug, Args, Clone)]
pub struct RelayArgs {
    /// Listen address of the relay, a Discord-compatible gateway for the bot's own discord.js process; unset, the pod runs no relay
    #[arg(long, env = "RELAY_ADDR", value_parser = http_addr())]
    pub relay_addr: Option<SocketAddr>,
    /// The relay's URL as the bot reaches this pod (READY's resume_gateway_url) [default: ws://RELAY_ADDR]
    #[arg(long, env = "RELAY_URL")]
    pub relay_url: Option<String>,
    /// Seconds a relay client may stay away and still RESUME (its missed events are kept that long)
    #[arg(long, env = "RELAY_RESUME_WINDOW", default_value = "60",
        value_parser = seconds(1, 3600))]
    pub relay_resume_window: Duration,
    /// Bytes of released events the relay keeps for resuming clients, at most
    #[arg(long, env = "RELAY_BUFFER_BYTES", default_value = "67108864",
        value_parser = number(1 << 16, 1 << 34))]
    pub relay_buffer_bytes: u64,
    /// Clients the relay serves at once (each bot replica is one)
    #[arg(long, env = "RELAY_MAX_CLIENTS", default_value = "4",
        value_parser = number(1, 64))]
    pub relay_max_clients: u64,
    /// The heartbeat interval the relay's HELLO asks of its clients, in milliseconds (Discord's: 41250)
    #[arg(long, env = "RELAY_HEARTBEAT_MS", default_value = "41250",
        value_parser = millis(100, 120_000))]
    pub relay_heartbeat_ms: Duration,
}

impl RelayArgs {
    /// The relay's address and settings, when RELAY_ADDR is set.
    pub fn settings(&self, token: &str) -> Option<(SocketAddr, crate::relay::hub::RelaySettings)> {
        let addr = self.relay_addr?;
        Some((
            addr,
            crate::relay::hub::RelaySettings {
                token: token.to_owned(),
                public_url: self
                    .relay_url
                    .clone()
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| format!("ws://{addr}")),
                resume_window: self.relay_resume_window,
                buffer_bytes: self.relay_buffer_bytes as usize,
                heartbeat_interval: self.relay_heartbeat_ms,
                max_clients: self.relay_max_clients as usize,
            },
        ))
    }
}

/// The guild data API (`/v1`), served on HTTP_ADDR.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Bearer token that /v1 requires, and that pods send each other; unset, /v1 refuses every request
    #[arg(long, env = "API_TOKEN", hide_env_values = true, value_parser = api_token())]
    pub api_token: Option<String>,
    /// Base URL of pod {ordinal} ({ordinal+N} adds N, for local ports)
    #[arg(long, env = "POD_URL_TEMPLATE", default_value = DEFAULT_POD_URL_TEMPLATE,
        value_parser = pod_url_template())]
    pub pod_url_template: UrlTemplate,
    /// Milliseconds a /v1 query may take (waiting for a connection included) before it is interrupted
    #[arg(long, env = "QUERY_TIMEOUT_MS", default_value = "5000",
        value_parser = millis(1, 600_000))]
    pub query_timeout_ms: Duration,
    /// Milliseconds one /v1 write may take, waiting for the pod's writer included; the guild's
    /// events wait while it runs, so it is kept short (a longer one is interrupted, 504)
    #[arg(long, env = "API_WRITE_TIMEOUT_MS", default_value = "1000",
        value_parser = millis(10, 60_000))]
    pub api_write_timeout_ms: Duration,
    /// Most rows a /v1 query may return; more is an error, never a truncation
    #[arg(long, env = "QUERY_MAX_ROWS", default_value = "50000",
        value_parser = number(1, 10_000_000))]
    pub query_max_rows: u64,
    /// Most bytes a /v1 query's answer may take, counted while its rows are read; more is an error (422)
    #[arg(long, env = "QUERY_MAX_BYTES", default_value = "16777216",
        value_parser = number(1024, 1 << 30))]
    pub query_max_bytes: u64,
    /// Read-only connections for /v1 queries (apart from the pipeline's own)
    #[arg(long, env = "QUERY_POOL_SIZE", default_value = "4",
        value_parser = number(1, 64))]
    pub query_pool_size: u64,
    /// Largest /v1 request body, in bytes
    #[arg(long, env = "API_MAX_BODY_BYTES", default_value = "1048576",
        value_parser = number(1024, 64 << 20))]
    pub api_max_body_bytes: u64,
    /// Milliseconds a client has to send a /v1 request body; slower bodies get 408
    #[arg(long, env = "API_BODY_TIMEOUT_MS", default_value = "10000",
        value_parser = millis(100, 600_000))]
    pub api_body_timeout_ms: Duration,
}

/// The StatefulSet's pods behind its headless Service (deploy/base), in the same namespace.
pub const DEFAULT_POD_URL_TEMPLATE: &str = "http://gateway-{ordinal}.gateway:3000";

/// Validated settings of the data API.
#[derive(Clone)]
pub struct ApiConfig {
    pub token: Option<String>,
    pub pod_urls: UrlTemplate,
    pub limits: QueryLimits,
    pub pool_size: u32,
    pub max_body: usize,
    pub body_timeout: Duration,
    /// One write's limit in the writer (API_WRITE_TIMEOUT_MS).
    pub write_timeout: Duration,
}

impl ApiArgs {
    fn validate(&self) -> Result<ApiConfig, ConfigError> {
        let token = self.api_token.clone().filter(|t| !t.is_empty());
        Ok(ApiConfig {
            token,
            pod_urls: self.pod_url_template.clone(),
            limits: QueryLimits {
                timeout: self.query_timeout_ms,
                max_rows: self.query_max_rows as usize,
                max_bytes: self.query_max_bytes as usize,
            },
            pool_size: self.query_pool_size as u32,
            max_body: self.api_max_body_bytes as usize,
            body_timeout: self.api_body_timeout_ms,
            write_timeout: self.api_write_timeout_ms,
        })
    }
}

/// DISCORD_SHARDS: how many Discord shards the bot runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardCount {
    Count(u32),
    /// What Discord recommends (`GET /gateway/bot`), read at start.
    Auto,
}

/// The shard count for a strategy and pod count, checked; `Auto` gives `None` (resolved by
/// `serve` at start; it cannot move a guild, see [`ShardCount`]'s checks).
pub fn checked_shards(
    strategy: Strategy,
    pods: u32,
    shards: Option<ShardCount>,
) -> Result<Option<u32>, ConfigError> {
    match (strategy, shards) {
        (_, None) => Ok(Some(gateway_actors::partition::default_shards(strategy, pods))),
        (Strategy::Md5, Some(ShardCount::Auto)) => Ok(None),
        (Strategy::Discord, Some(ShardCount::Auto)) => Err(bad(
            "DISCORD_SHARDS",
            "auto",
            "with SHARD_STRATEGY=discord the shard count decides which pod owns a guild, so every pod and the HTTP services must use the same number: set one (see GET /gateway/bot's shards)",
        )),
        (Strategy::Discord, Some(ShardCount::Count(s))) if s < pods => Err(bad(
            "DISCORD_SHARDS",
            &s.to_string(),
            format!("with SHARD_STRATEGY=discord each of the {pods} pods needs at least one shard"),
        )),
        (_, Some(ShardCount::Count(s))) => Ok(Some(s)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings of a pod.
#[derive(Clone)]
pub struct PodConfig {
    pub sharding: Partition,
    /// DISCORD_SHARDS=auto: `serve` sets `sharding.shards` from Discord's recommendation.
    pub shards_auto: bool,
    pub database: PathBuf,
    pub http_addr: SocketAddr,
    pub log_format: LogFormat,
    pub pipeline: PipelineConfig,
    pub api: ApiConfig,
}

/// The ordinal of a StatefulSet pod from its hostname (`gateway-2` -> 2).
pub fn ordinal_from_hostname(hostname: &str) -> Option<u32> {
    let (_, suffix) = hostname.rsplit_once('-')?;
    suffix.parse().ok()
}

const MAX_PODS: u64 = 1 << 16;

impl PodArgs {
    /// The checks that involve more than one setting, and the assembled configuration.
    pub fn validate(&self) -> Result<PodConfig, ConfigError> {
        let pods = self.num_gateway_pods as u32;
        let ordinal = match self.pod_ordinal {
            Some(ordinal) => ordinal as u32,
            None => std::env::var("HOSTNAME")
                .ok()
                .and_then(|h| ordinal_from_hostname(&h))
                .unwrap_or(0),
        };
        // An ordinal at or past NUM_GATEWAY_PODS is a standby pod: it owns nothing and runs
        // no Discord session until a rescale gives it guilds (scale up: the StatefulSet first).
        let shards = checked_shards(self.shard_strategy, pods, self.discord_shards)?;
        let sharding = Partition {
            strategy: self.shard_strategy,
            ordinal,
            pods,
            // `auto` (md5 only): 1 until `serve` asks Discord; ownership does not depend on it.
            shards: shards.unwrap_or(1),
        };
        let database = self.database_url.clone();
        let mut pipeline = PipelineConfig::new(sharding, database.clone());
        pipeline.guild_mailbox = self.guild_mailbox_capacity as usize;
        pipeline.guild_stuck = self.guild_stuck_secs;
        pipeline.writer_mailbox = self.writer_mailbox_capacity as usize;
        pipeline.max_batch = self.writer_max_batch as usize;
        pipeline.max_in_flight = self.max_in_flight as usize;
        pipeline.guild_idle = self.guild_idle_secs;
        pipeline.audit_window = self.audit_window_secs;
        pipeline.wal_autocheckpoint = self.sqlite_wal_autocheckpoint as u32;
        pipeline.guild_workers = self.guild_workers as usize;
        pipeline.cache_expiry = CacheExpiry {
            content_ttl: self.cache_content_ttl_minutes,
            retention: self.cache_retention_hours,
        };
        pipeline.cache_expiry_interval = self.cache_expiry_interval_secs;
        pipeline.slow_hook = self.test_hooks.slow_hook();
        Ok(PodConfig {
            sharding,
            shards_auto: shards.is_none(),
            database,
            http_addr: self.http_addr,
            log_format: self.log_format,
            pipeline,
            api: self.api.validate()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_ordinals() {
        assert_eq!(ordinal_from_hostname("gateway-2"), Some(2));
        assert_eq!(ordinal_from_hostname("my-gateway-10"), Some(10));
        assert_eq!(ordinal_from_hostname("laptop"), None);
        assert_eq!(ordinal_from_hostname("gateway-x"), None);
    }

    #[derive(Debug, clap::Parser)]
    struct Pod {
        #[command(flatten)]
        pod: PodArgs,
    }

    #[test]
    fn each_setting_parses_to_its_type_and_names_its_variable() {
        use clap::Parser;
        let pod = Pod::try_parse_from([
            "pod",
            "--guild-stuck-secs",
            "7",
            "--cache-retention-hours",
            "2",
            "--database-url",
            "sqlite:///tmp/x.db",
            "--shard-strategy",
            "discord",
        ])
        .unwrap()
        .pod;
        assert_eq!(pod.guild_stuck_secs, Duration::from_secs(7));
        assert_eq!(pod.cache_retention_hours, Duration::from_secs(7200));
        assert_eq!(pod.database_url, PathBuf::from("/tmp/x.db"));
        assert_eq!(pod.shard_strategy, Strategy::Discord);
        let e = Pod::try_parse_from(["pod", "--writer-max-batch", "0"]).unwrap_err();
        let setting = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<ConfigError>())
            .expect("the parser's own error");
        assert_eq!(
            setting.to_string(),
            "WRITER_MAX_BATCH=\"0\": must be from 1 to 1048576"
        );
    }

    #[test]
    fn numbers_reject_signs_and_text() {
        assert!(parse_number("X", "-1", 0, 10).is_err());
        assert!(parse_number("X", "abc", 0, 10).is_err());
        assert!(parse_number("X", "11", 0, 10).is_err());
        assert_eq!(parse_number("X", "7", 0, 10).unwrap(), 7);
        let e = parse_number("NUM_GATEWAY_PODS", "0", 1, 5).unwrap_err();
        assert_eq!(e.to_string(), "NUM_GATEWAY_PODS=\"0\": must be from 1 to 5");
    }
}
