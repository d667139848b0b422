//! Logs via `tracing` to stderr, as text or JSON. Filtered by RUST_LOG (default `info`).
//!
//! serenity's spans are kept at `warn` unless RUST_LOG names serenity: its INFO spans record
//! every gateway event with `Debug`, which costs a quarter of a live pod's CPU and would put
//! message content into the context of any log line written inside them.

use crate::config::LogFormat;
use tracing_subscriber::EnvFilter;

pub fn init(format: LogFormat) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter = if directives.contains("serenity") {
        EnvFilter::new(directives)
    } else {
        EnvFilter::new(format!("{directives},serenity=warn"))
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Err(e) = result {
        eprintln!("warning: logging already initialised: {e}");
    }
}
