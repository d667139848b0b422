//! Logs via `tracing` to stderr, as text or JSON, filtered by RUST_LOG.
//!
//! The tools take LOG_FORMAT from the environment they share with pods, but never refuse to
//! start over it: a fake Discord is often started beside pods whose settings are being tested,
//! wrong ones included.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// LOG_FORMAT if it names a format; otherwise text, with a warning when it is set to
    /// something else.
    pub fn from_env() -> LogFormat {
        match std::env::var("LOG_FORMAT") {
            Ok(v) if v == "json" => LogFormat::Json,
            Ok(v) if v == "text" || v.is_empty() => LogFormat::Text,
            Err(std::env::VarError::NotPresent) => LogFormat::Text,
            Ok(v) => {
                eprintln!("warning: LOG_FORMAT={v:?} is neither text nor json; logging as text");
                LogFormat::Text
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                eprintln!("warning: LOG_FORMAT is not UTF-8; logging as text");
                LogFormat::Text
            }
        }
    }
}

/// Installs the subscriber; `default` is the filter when RUST_LOG is unset.
pub fn init(format: LogFormat, default: &str) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_owned());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(directives))
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging already initialised: {e}");
    }
}
