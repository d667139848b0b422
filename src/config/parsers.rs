//! The value parsers of every setting: each checks one kind of value and names the setting
//! (its environment variable, or `--flag`) in its error, through [`Setting`].

use super::{LogFormat, ShardCount};
use crate::routing::UrlTemplate;
use gateway_actors::partition::Strategy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub fn pod_url_template(
) -> Setting<impl Fn(&str, &str) -> Result<UrlTemplate, ConfigError> + Clone + Send + Sync + 'static>
{
    Setting(|name: &str, value: &str| {
        UrlTemplate::parse(value).map_err(|problem| bad(name, value, problem))
    })
}

/// A bearer token: empty (no token: /v1 refuses everything), or 16 characters or more without
/// surrounding spaces. Its value is never printed.
pub fn api_token(
) -> Setting<impl Fn(&str, &str) -> Result<String, ConfigError> + Clone + Send + Sync + 'static> {
    Setting(|name: &str, value: &str| {
        if !value.is_empty() && (value.trim() != value || value.len() < 16) {
            return Err(bad(
                name,
                "(hidden)",
                "must be at least 16 characters, without surrounding spaces",
            ));
        }
        Ok(value.to_owned())
    })
}

/// An http:// or https:// base URL.
pub fn http_url(
) -> Setting<impl Fn(&str, &str) -> Result<String, ConfigError> + Clone + Send + Sync + 'static> {
    Setting(|name: &str, value: &str| {
        let url = value.trim();
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            return Err(bad(name, url, "must be an http:// or https:// URL"));
        }
        Ok(url.to_owned())
    })
}

pub fn shard_count(
) -> Setting<impl Fn(&str, &str) -> Result<ShardCount, ConfigError> + Clone + Send + Sync + 'static>
{
    Setting(|name: &str, value: &str| match value.trim() {
        "auto" => Ok(ShardCount::Auto),
        n => parse_number(name, n, 1, MAX_SHARDS).map(|n| ShardCount::Count(n as u32)),
    })
}

/// Discord's own limit is far lower; this only keeps the arithmetic in range.
const MAX_SHARDS: u64 = 1 << 16;

/// A bad setting: which variable, which value, what is wrong. Displays as one line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{variable}={value:?}: {problem}")]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub problem: String,
}

pub(super) fn bad(variable: &str, value: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable: variable.to_owned(),
        value: value.to_owned(),
        problem: problem.into(),
    }
}

/// A clap value parser for one kind of setting. clap hands it the argument being parsed, so
/// its errors name the setting's environment variable (or `--flag`, for a flag without one)
/// whether the value came from the variable or the flag; each name is written once, in
/// `env = "..."`.
#[derive(Clone)]
pub struct Setting<F>(F);

impl<T, F> clap::builder::TypedValueParser for Setting<F>
where
    F: Fn(&str, &str) -> Result<T, ConfigError> + Clone + Send + Sync + 'static,
    T: Clone + Send + Sync + 'static,
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .or_else(|| arg.and_then(|a| a.get_long()).map(|l| format!("--{l}")))
            .unwrap_or_else(|| "a setting".to_owned());
        let parse = self.0.clone();
        // clap's own function parser keeps the ConfigError as the error's source.
        let named = move |value: &str| parse(&name, value);
        named.parse_ref(cmd, arg, value)
    }
}

/// A whole number, without sign, within `min..=max`.
pub fn parse_number(variable: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
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

/// A whole number within `min..=max`.
pub fn number(
    min: u64,
    max: u64,
) -> Setting<impl Fn(&str, &str) -> Result<u64, ConfigError> + Clone + Send + Sync + 'static> {
    Setting(move |name: &str, value: &str| parse_number(name, value, min, max))
}

/// A duration in whole `unit`s, `min..=max` of them.
pub(super) fn duration_of(
    unit: Duration,
    min: u64,
    max: u64,
) -> Setting<impl Fn(&str, &str) -> Result<Duration, ConfigError> + Clone + Send + Sync + 'static> {
    Setting(move |name: &str, value: &str| {
        parse_number(name, value, min, max).map(|n| unit * n as u32)
    })
}

pub fn millis(
    min: u64,
    max: u64,
) -> Setting<impl Fn(&str, &str) -> Result<Duration, ConfigError> + Clone + Send + Sync + 'static> {
    duration_of(Duration::from_millis(1), min, max)
}

pub fn seconds(
    min: u64,
    max: u64,
) -> Setting<impl Fn(&str, &str) -> Result<Duration, ConfigError> + Clone + Send + Sync + 'static> {
    duration_of(Duration::from_secs(1), min, max)
}

pub(super) fn minutes(
    min: u64,
    max: u64,
) -> Setting<impl Fn(&str, &str) -> Result<Duration, ConfigError> + Clone + Send + Sync + 'static> {
    duration_of(Duration::from_secs(60), min, max)
}

pub(super) fn hours(
    min: u64,
    max: u64,
) -> Setting<impl Fn(&str, &str) -> Result<Duration, ConfigError> + Clone + Send + Sync + 'static> {
    duration_of(Duration::from_secs(3600), min, max)
}

pub fn parse_strategy(variable: &str, value: &str) -> Result<Strategy, ConfigError> {
    value.parse().map_err(|_| {
        bad(
            variable,
            value,
            "unknown strategy (expected md5 or discord)",
        )
    })
}

/// A sharding strategy: md5 or discord.
pub fn strategy(
) -> Setting<impl Fn(&str, &str) -> Result<Strategy, ConfigError> + Clone + Send + Sync + 'static> {
    Setting(parse_strategy)
}

/// A path of a file, or a sqlite: URL as the TypeScript deployment wrote them.
pub(super) fn database_path(
) -> Setting<impl Fn(&str, &str) -> Result<PathBuf, ConfigError> + Clone + Send + Sync + 'static> {
    Setting(|name: &str, value: &str| {
        let path = value
            .strip_prefix("sqlite://")
            .or_else(|| value.strip_prefix("sqlite:"))
            .unwrap_or(value);
        if path.trim().is_empty() {
            return Err(bad(name, value, "must be a file path"));
        }
        Ok(PathBuf::from(path))
    })
}

pub(super) fn http_addr(
) -> Setting<impl Fn(&str, &str) -> Result<SocketAddr, ConfigError> + Clone + Send + Sync + 'static>
{
    Setting(|name: &str, value: &str| {
        value
            .parse()
            .map_err(|_| bad(name, value, "not an address such as 0.0.0.0:3000"))
    })
}

pub(super) fn log_format(
) -> Setting<impl Fn(&str, &str) -> Result<LogFormat, ConfigError> + Clone + Send + Sync + 'static>
{
    Setting(|name: &str, value: &str| match value {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(bad(name, other, "expected text or json")),
    })
}
