//! All configuration, in one place: environment variables mirrored as CLI flags.
//!
//! clap reads flags and environment variables as text; validation happens here so that every
//! bad value ends the program with one line naming the variable and the value, before anything
//! (the database, a port) is touched.

use clap::Args;
use gateway_actors::shard::{Sharding, Strategy};
use gateway_actors::store::CacheExpiry;
use gateway_actors::PipelineConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Settings shared by every long-running mode.
#[derive(Debug, Args, Clone)]
pub struct PodArgs {
    /// This pod's ordinal [default: the trailing -N of HOSTNAME, else 0]
    #[arg(long, env = "POD_ORDINAL", global = true)]
    pub pod_ordinal: Option<String>,
    /// Number of gateway pods
    #[arg(long, env = "NUM_GATEWAY_PODS", global = true, default_value = "1")]
    pub num_gateway_pods: String,
    /// How guilds map to pods: md5 (the HTTP services' function) or discord (Discord's shards)
    #[arg(long, env = "SHARD_STRATEGY", global = true, default_value = "md5")]
    pub shard_strategy: String,
    /// Path of this pod's SQLite file (parent directories are created)
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "./data/gateway.sqlite3"
    )]
    pub database_url: String,
    /// Listen address for /metrics, /healthz, /readyz and /status
    #[arg(long, env = "HTTP_ADDR", global = true, default_value = "0.0.0.0:3000")]
    pub http_addr: String,
    /// Log format: text or json
    #[arg(long, env = "LOG_FORMAT", global = true, default_value = "text")]
    pub log_format: String,
    /// Events in a guild actor's mailbox before the rest wait in its overflow queue (nothing is shed)
    #[arg(
        long,
        env = "GUILD_MAILBOX_CAPACITY",
        global = true,
        default_value = "1024"
    )]
    pub guild_mailbox_capacity: String,
    /// Write commands queued for the SQLite writer before guild actors wait
    #[arg(
        long,
        env = "WRITER_MAILBOX_CAPACITY",
        global = true,
        default_value = "8192"
    )]
    pub writer_mailbox_capacity: String,
    /// Most write commands committed in one transaction
    #[arg(long, env = "WRITER_MAX_BATCH", global = true, default_value = "2000")]
    pub writer_max_batch: String,
    /// Events accepted but not yet committed before the source waits
    #[arg(long, env = "MAX_IN_FLIGHT", global = true, default_value = "65536")]
    pub max_in_flight: String,
    /// Seconds a guild actor may stay idle before it is stopped (passivated)
    #[arg(long, env = "GUILD_IDLE_SECS", global = true, default_value = "300")]
    pub guild_idle_secs: String,
    /// Seconds a guild with queued events may make no progress before it is declared stuck and its events are dropped (counted)
    #[arg(long, env = "GUILD_STUCK_SECS", global = true, default_value = "120")]
    pub guild_stuck_secs: String,
    /// Test seam: delay every event's handling by this many milliseconds (slows the pipeline)
    #[arg(long, env = "TEST_EVENT_DELAY_MS", global = true, hide = true)]
    pub test_event_delay_ms: Option<String>,
    /// Seconds a moderation event and its audit log entry wait for each other
    #[arg(long, env = "AUDIT_WINDOW_SECS", global = true, default_value = "5")]
    pub audit_window_secs: String,
    /// SQLite WAL pages before an automatic checkpoint; 0 when Litestream checkpoints (Kubernetes)
    #[arg(
        long,
        env = "SQLITE_WAL_AUTOCHECKPOINT",
        global = true,
        default_value = "1000"
    )]
    pub sqlite_wal_autocheckpoint: String,
    /// Threads that run guild actors
    #[arg(long, env = "GUILD_WORKERS", global = true, default_value = "1")]
    pub guild_workers: String,
    /// Minutes without a touch after which message_cache content is cleared
    #[arg(
        long,
        env = "CACHE_CONTENT_TTL_MINUTES",
        global = true,
        default_value = "60"
    )]
    pub cache_content_ttl_minutes: String,
    /// Hours after creation at which message_cache rows are deleted
    #[arg(
        long,
        env = "CACHE_RETENTION_HOURS",
        global = true,
        default_value = "24"
    )]
    pub cache_retention_hours: String,
    /// Seconds between runs of the message_cache expiry job
    #[arg(
        long,
        env = "CACHE_EXPIRY_INTERVAL_SECS",
        global = true,
        default_value = "60"
    )]
    pub cache_expiry_interval_secs: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Validated settings of a pod.
#[derive(Clone)]
pub struct PodConfig {
    pub sharding: Sharding,
    pub database: PathBuf,
    pub http_addr: SocketAddr,
    pub log_format: LogFormat,
    pub pipeline: PipelineConfig,
}

/// A bad setting: which variable, which value, what is wrong. Displays as one line.
#[derive(Debug, thiserror::Error)]
#[error("{variable}={value:?}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub problem: String,
}

fn bad(variable: &'static str, value: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        value: value.to_owned(),
        problem: problem.into(),
    }
}

/// A whole number, without sign, within `min..=max`.
pub fn parse_number(
    variable: &'static str,
    value: &str,
    min: u64,
    max: u64,
) -> Result<u64, ConfigError> {
    let n: u64 = value.trim().parse().map_err(|_| {
        bad(
            variable,
            value,
            format!("not a whole number from {min} to {max}"),
        )
    })?;
    if n < min || n > max {
        return Err(bad(variable, value, format!("must be from {min} to {max}")));
    }
    Ok(n)
}

pub fn parse_strategy(variable: &'static str, value: &str) -> Result<Strategy, ConfigError> {
    value.parse().map_err(|_| {
        bad(
            variable,
            value,
            "unknown strategy (expected md5 or discord)",
        )
    })
}

/// The ordinal of a StatefulSet pod from its hostname (`gateway-2` -> 2).
pub fn ordinal_from_hostname(hostname: &str) -> Option<u32> {
    let (_, suffix) = hostname.rsplit_once('-')?;
    suffix.parse().ok()
}

const MAX_PODS: u64 = 1 << 16;

impl PodArgs {
    pub fn validate(&self) -> Result<PodConfig, ConfigError> {
        let pods = parse_number("NUM_GATEWAY_PODS", &self.num_gateway_pods, 1, MAX_PODS)? as u32;
        let ordinal = match &self.pod_ordinal {
            Some(value) => parse_number("POD_ORDINAL", value, 0, MAX_PODS)? as u32,
            None => std::env::var("HOSTNAME")
                .ok()
                .and_then(|h| ordinal_from_hostname(&h))
                .unwrap_or(0),
        };
        if ordinal >= pods {
            return Err(bad(
                "POD_ORDINAL",
                &ordinal.to_string(),
                format!("must be below NUM_GATEWAY_PODS={pods}"),
            ));
        }
        let strategy = parse_strategy("SHARD_STRATEGY", &self.shard_strategy)?;
        if self.database_url.trim().is_empty() {
            return Err(bad(
                "DATABASE_URL",
                &self.database_url,
                "must be a file path",
            ));
        }
        // Accept sqlite: URLs as the TypeScript deployment wrote them.
        let database = PathBuf::from(
            self.database_url
                .strip_prefix("sqlite://")
                .or_else(|| self.database_url.strip_prefix("sqlite:"))
                .unwrap_or(&self.database_url),
        );
        let http_addr = self.http_addr.parse().map_err(|_| {
            bad(
                "HTTP_ADDR",
                &self.http_addr,
                "not an address such as 0.0.0.0:3000",
            )
        })?;
        let log_format = match self.log_format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(bad("LOG_FORMAT", other, "expected text or json")),
        };
        let number = |variable, value: &str, min, max| {
            parse_number(variable, value, min, max).map(|n| n as usize)
        };
        let sharding = Sharding {
            strategy,
            ordinal,
            pods,
        };
        let mut pipeline = PipelineConfig::new(sharding, database.clone());
        pipeline.guild_mailbox = number(
            "GUILD_MAILBOX_CAPACITY",
            &self.guild_mailbox_capacity,
            1,
            1 << 24,
        )?;
        pipeline.writer_mailbox = number(
            "WRITER_MAILBOX_CAPACITY",
            &self.writer_mailbox_capacity,
            1,
            1 << 24,
        )?;
        pipeline.max_batch = number("WRITER_MAX_BATCH", &self.writer_max_batch, 1, 1 << 20)?;
        pipeline.max_in_flight = number("MAX_IN_FLIGHT", &self.max_in_flight, 1, 1 << 26)?;
        pipeline.guild_idle = Duration::from_secs(parse_number(
            "GUILD_IDLE_SECS",
            &self.guild_idle_secs,
            1,
            1 << 32,
        )?);
        pipeline.guild_stuck = Duration::from_secs(parse_number(
            "GUILD_STUCK_SECS",
            &self.guild_stuck_secs,
            1,
            1 << 32,
        )?);
        if let Some(value) = &self.test_event_delay_ms {
            let delay =
                Duration::from_millis(parse_number("TEST_EVENT_DELAY_MS", value, 0, 60_000)?);
            pipeline.slow_hook = Some(std::sync::Arc::new(move |_| Some(delay)));
        }
        pipeline.audit_window = Duration::from_secs(parse_number(
            "AUDIT_WINDOW_SECS",
            &self.audit_window_secs,
            0,
            3600,
        )?);
        pipeline.wal_autocheckpoint = parse_number(
            "SQLITE_WAL_AUTOCHECKPOINT",
            &self.sqlite_wal_autocheckpoint,
            0,
            1 << 30,
        )? as u32;
        pipeline.guild_workers = number("GUILD_WORKERS", &self.guild_workers, 0, 256)?;
        pipeline.cache_expiry = CacheExpiry {
            content_ttl: Duration::from_secs(
                60 * parse_number(
                    "CACHE_CONTENT_TTL_MINUTES",
                    &self.cache_content_ttl_minutes,
                    1,
                    1 << 24,
                )?,
            ),
            retention: Duration::from_secs(
                3600 * parse_number(
                    "CACHE_RETENTION_HOURS",
                    &self.cache_retention_hours,
                    1,
                    1 << 20,
                )?,
            ),
        };
        pipeline.cache_expiry_interval = Duration::from_secs(parse_number(
            "CACHE_EXPIRY_INTERVAL_SECS",
            &self.cache_expiry_interval_secs,
            1,
            1 << 24,
        )?);
        Ok(PodConfig {
            sharding,
            database,
            http_addr,
            log_format,
            pipeline,
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
