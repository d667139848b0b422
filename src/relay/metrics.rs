//! The relay's metrics, in the pod's registry.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

pub struct RelayMetrics {
    /// Clients connected now.
    pub clients: IntGauge,
    /// Events released to the relay (each is sent to every client).
    pub released: IntCounter,
    /// Dispatches written to clients' sockets.
    pub sent: IntCounter,
    pub resumes_ok: IntCounter,
    pub resumes_failed: IntCounter,
    /// From the pod accepting an event to its write on a client's socket.
    pub lag: Histogram,
    /// What the resume ring holds.
    pub buffer_bytes: IntGauge,
    /// Guilds whose documents the relay keeps.
    pub guilds: IntGauge,
}

impl RelayMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let clients = IntGauge::new("relay_clients", "Clients connected to the pod's relay.")?;
        let released = IntCounter::new(
            "relay_events_released_total",
            "Events released to the relay: applied by this pod as their guild's owner, and committed.",
        )?;
        let sent = IntCounter::new(
            "relay_events_total",
            "Dispatches the relay wrote to its clients (each client counts its own).",
        )?;
        let resumes = IntCounterVec::new(
            Opts::new(
                "relay_resumes_total",
                "RESUMEs of relay clients, by outcome.",
            ),
            &["outcome"],
        )?;
        let lag = Histogram::with_opts(
            HistogramOpts::new(
                "relay_lag_seconds",
                "From the pod accepting an event to its write on a relay client's socket.",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )?;
        let buffer_bytes = IntGauge::new(
            "relay_buffer_bytes",
            "Bytes the relay's resume ring holds (bounded by RELAY_BUFFER_BYTES).",
        )?;
        let guilds = IntGauge::new(
            "relay_guilds",
            "Guilds whose state the relay keeps for its clients' GUILD_CREATEs.",
        )?;
        registry.register(Box::new(clients.clone()))?;
        registry.register(Box::new(released.clone()))?;
        registry.register(Box::new(sent.clone()))?;
        registry.register(Box::new(resumes.clone()))?;
        registry.register(Box::new(lag.clone()))?;
        registry.register(Box::new(buffer_bytes.clone()))?;
        registry.register(Box::new(guilds.clone()))?;
        Ok(RelayMetrics {
            clients,
            released,
            sent,
            resumes_ok: resumes.with_label_values(&["ok"]),
            resumes_failed: resumes.with_label_values(&["failed"]),
            lag,
            buffer_bytes,
            guilds,
        })
    }
}
