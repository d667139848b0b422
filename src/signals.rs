//! SIGTERM and SIGINT, as one future: the start of a graceful shutdown.

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

/// Installs the handlers now (so a signal arriving early is not missed) and returns a future
/// that resolves with the signal's name when one arrives.
pub fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}
