//! Logs via `tracing` to stderr, as text or JSON. Filtered by RUST_LOG (default `info`).
//!
//! serenity's gateway close messages also go to the close-code table
//! ([`crate::gateway::close_codes`]). serenity's spans are kept at `warn` unless RUST_LOG names
//! serenity: its INFO spans record
//! every gateway event with `Debug`, which costs a quarter of a live pod's CPU and would put
//! message content into the context of any log line written inside them.

use crate::config::LogFormat;
use crate::gateway::close_codes::CloseCodeLayer;
use tracing_subscriber::filter::{filter_fn, EnvFilter};
use tracing_subscriber::prelude::*;

pub fn init(format: LogFormat) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter = if directives.contains("serenity") {
        EnvFilter::new(directives)
    } else {
        EnvFilter::new(format!("{directives},serenity=warn"))
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    // serenity's close messages (some at INFO) reach the close-code table whatever RUST_LOG
    // says; events only, so serenity's costly spans stay off.
    let closes = CloseCodeLayer.with_filter(filter_fn(|meta| {
        meta.is_event()
            && meta.target().starts_with("serenity::gateway")
            && *meta.level() <= tracing::Level::INFO
    }));
    let result = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(closes)
        .try_init();
    if let Err(e) = result {
        eprintln!("warning: logging already initialised: {e}");
    }
}
