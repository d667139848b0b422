//! The pod's Prometheus metrics, registered once and shared by every actor.
//!
//! Labels are bounded: event types come from [`EventKind`] (unknown types are `OTHER`), and
//! guild ids are never labels (they are unbounded); per-guild figures are aggregated.

use crate::domain::event::EventKind;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};

/// Counters for one event type, resolved once so the hot path does no label lookup.
pub struct KindCounters {
    pub received: IntCounter,
    pub owned: IntCounter,
    pub foreign: IntCounter,
    pub skipped: IntCounter,
}

pub struct Metrics {
    pub registry: Registry,
    by_kind: Vec<KindCounters>,
    pub processed: IntCounter,
    pub handler_errors: IntCounter,
    pub shed: IntCounter,
    pub guild_actors: IntGauge,
    pub guild_mailbox_depth: IntGauge,
    pub writer_queue_depth: IntGauge,
    pub writer_batch_size: Histogram,
    pub writer_commit_seconds: Histogram,
    pub event_latency_seconds: Histogram,
    pub database_size_bytes: IntGauge,
    pub last_seq_received: IntGauge,
    pub last_seq_committed: IntGauge,
    pub events_in_flight: IntGauge,
    pub ready: IntGauge,
    pub pod_ordinal: IntGauge,
    pub pods: IntGauge,
    pub cache_expired: IntCounterVec,
    // What happens when the pod is busy or its storage fails.
    pub events_overflowed: IntCounter,
    pub guild_overflow_depth: IntGauge,
    pub writes_waiting_for_writer: IntGauge,
    pub guilds_stuck: IntGauge,
    pub storage_failing: IntGauge,
    pub write_retries: IntCounterVec,
    /// Writes refused because the row they name belongs to another guild than the event's.
    pub cross_guild_writes_refused: IntCounter,
    /// Live rescale: the committed epoch, the phase of the change under way, its events.
    pub epoch: IntGauge,
    pub rescale_phase: IntGauge,
    pub rescale_captured_events: IntCounter,
    pub rescale_frozen_events: IntCounter,
    pub rescale_guilds_moved: IntCounter,
    pub rescale_guilds_remaining: IntGauge,
    pub rescale_pause_seconds: Histogram,
    /// 1 while NUM_GATEWAY_PODS, SHARD_STRATEGY or DISCORD_SHARDS differ from the committed
    /// ownership this pod follows.
    pub config_stale: IntGauge,
    /// The data API's guarded writes in the writer, by outcome (committed, refused,
    /// out_of_scope, storage).
    pub api_writes: HistogramVec,
}

/// Creates metrics in one registry: each is registered as it is made, so a name used twice
/// fails at start-up.
struct Register<'a>(&'a Registry);

impl Register<'_> {
    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        let c = IntCounterVec::new(Opts::new(name, help), labels)?;
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn counter(&self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        let c = IntCounter::new(name, help)?;
        self.0.register(Box::new(c.clone()))?;
        Ok(c)
    }

    fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        let g = IntGauge::new(name, help)?;
        self.0.register(Box::new(g.clone()))?;
        Ok(g)
    }

    fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> Result<HistogramVec, prometheus::Error> {
        let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?;
        self.0.register(Box::new(h.clone()))?;
        Ok(h)
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: Vec<f64>,
    ) -> Result<Histogram, prometheus::Error> {
        let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
        self.0.register(Box::new(h.clone()))?;
        Ok(h)
    }

    /// The per-type event counters, one [`KindCounters`] per [`EventKind`], in its order.
    fn by_kind(&self) -> Result<Vec<KindCounters>, prometheus::Error> {
        let received = self.counter_vec(
            "events_received_total",
            "Dispatches received, by event type.",
            &["type"],
        )?;
        let owned = self.counter_vec(
            "events_owned_total",
            "Dispatches of guilds this pod owns (and DMs on pod 0), by event type.",
            &["type"],
        )?;
        let foreign = self.counter_vec(
            "events_foreign_total",
            "Dispatches of guilds other pods own, dropped by the shard filter, by event type.",
            &["type"],
        )?;
        let skipped = self.counter_vec(
            "events_skipped_total",
            "Owned dispatches that store nothing (unhandled types, DMs), by event type.",
            &["type"],
        )?;
        Ok(EventKind::ALL
            .iter()
            .map(|k| KindCounters {
                received: received.with_label_values(&[k.name()]),
                owned: owned.with_label_values(&[k.name()]),
                foreign: foreign.with_label_values(&[k.name()]),
                skipped: skipped.with_label_values(&[k.name()]),
            })
            .collect())
    }
}

impl Metrics {
    /// Longer than a function should be, on purpose: it is the table of the pod's metrics,
    /// one entry (name and help) per public field. Grouping it into functions would need a
    /// struct per group restating every field, since the fields stay flat for their users.
    pub fn new(pod_ordinal: u32, pods: u32) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("guild_gateway".into()), None)?;
        let register = Register(&registry);
        let (counter, gauge) = (|n, h| register.counter(n, h), |n, h| register.gauge(n, h));
        let histogram = |n, h, b| register.histogram(n, h, b);
        let counter_vec = |n, h, l| register.counter_vec(n, h, l);
        let by_kind = register.by_kind()?;

        let metrics = Metrics {
            by_kind,
            processed: counter(
                "events_processed_total",
                "Dispatches fully processed: committed, skipped, foreign or shed.",
            )?,
            handler_errors: counter(
                "handler_errors_total",
                "Writes that failed and were rolled back.",
            )?,
            shed: counter(
                "events_shed_total",
                "Owned dispatches dropped because their guild made no progress for GUILD_STUCK_SECS.",
            )?,
            guild_actors: gauge(
                "guild_actors",
                "Guild actors alive (guilds not passivated).",
            )?,
            guild_mailbox_depth: gauge(
                "guild_mailbox_depth",
                "Dispatches queued in all guild mailboxes together.",
            )?,
            writer_queue_depth: gauge(
                "writer_queue_depth",
                "Write commands queued for or held by the SQLite writer.",
            )?,
            writer_batch_size: histogram(
                "writer_batch_size",
                "Write commands per committed transaction.",
                exponential_buckets(1.0, 2.0, 14)?,
            )?,
            writer_commit_seconds: histogram(
                "writer_commit_seconds",
                "Time to apply and commit one batch.",
                exponential_buckets(0.0001, 2.0, 16)?,
            )?,
            event_latency_seconds: histogram(
                "event_latency_seconds",
                "Time from accepting a dispatch to its commit (or skip).",
                exponential_buckets(0.00005, 1.5, 32)?,
            )?,
            database_size_bytes: gauge(
                "database_size_bytes",
                "Size of the SQLite database and its WAL.",
            )?,
            last_seq_received: gauge(
                "last_seq_received",
                "Gateway seq of the newest event accepted.",
            )?,
            last_seq_committed: gauge(
                "last_seq_committed",
                "Gateway seq before which every event is committed or skipped.",
            )?,
            events_in_flight: gauge("events_in_flight", "Events accepted and not yet committed.")?,
            ready: gauge(
                "ready",
                "1 when /readyz answers ready (database writable, gateway session up).",
            )?,
            pod_ordinal: gauge("pod_ordinal", "This pod's ordinal.")?,
            pods: gauge(
                "pods",
                "Number of gateway pods in the committed ownership this pod follows.",
            )?,
            cache_expired: counter_vec(
                "message_cache_expired_total",
                "message_cache rows changed by the expiry job.",
                &["change"],
            )?,
            events_overflowed: counter(
                "events_overflowed_total",
                "Dispatches queued in a guild's overflow because its mailbox was full (none lost).",
            )?,
            guild_overflow_depth: gauge(
                "guild_overflow_depth",
                "Dispatches waiting in all guilds' overflow queues together.",
            )?,
            writes_waiting_for_writer: gauge(
                "writes_waiting_for_writer",
                "Guild actors' writes waiting for room in the writer's mailbox (WRITER_MAILBOX_CAPACITY).",
            )?,
            guilds_stuck: gauge(
                "guilds_stuck",
                "Guilds declared stuck (no progress for GUILD_STUCK_SECS): their new events are dropped.",
            )?,
            storage_failing: gauge(
                "storage_failing",
                "1 while commits fail (lock, full disk, read-only, I/O); the writer keeps retrying.",
            )?,
            write_retries: counter_vec(
                "write_retries_total",
                "Commits retried after a failure, by cause (transient: a lock; storage: disk or I/O).",
                &["cause"],
            )?,
            cross_guild_writes_refused: counter(
                "cross_guild_writes_refused_total",
                "Writes refused because the row they name (a channel, a message, an audit entry) belongs to another guild than the event's; nothing was changed.",
            )?,
            epoch: gauge(
                "ownership_epoch",
                "The committed ownership epoch this pod follows (each rescale adds one).",
            )?,
            rescale_phase: gauge(
                "rescale_phase",
                "This pod's part in a rescale: 0 none, 1 capturing, 2 frozen, 3 live (waiting for the commit).",
            )?,
            rescale_captured_events: counter(
                "rescale_captured_events_total",
                "Events of guilds coming to this pod written to the capture log.",
            )?,
            rescale_frozen_events: counter(
                "rescale_frozen_events_total",
                "Events of guilds leaving this pod not applied after their freeze (the new owner captured them).",
            )?,
            rescale_guilds_moved: counter(
                "rescale_guilds_moved_total",
                "Guilds imported by this pod from their previous owners.",
            )?,
            rescale_guilds_remaining: gauge(
                "rescale_guilds_remaining",
                "Guilds this pod gives away in the rescale under way (counted at the freeze), until the commit.",
            )?,
            rescale_pause_seconds: histogram(
                "rescale_pause_seconds",
                "Per moved guild: the time from its freeze on the old owner to live on this pod.",
                exponential_buckets(0.05, 2.0, 12)?,
            )?,
            config_stale: gauge(
                "config_stale",
                "1 while NUM_GATEWAY_PODS, SHARD_STRATEGY or DISCORD_SHARDS differ from the committed ownership the pod follows.",
            )?,
            api_writes: register.histogram_vec(
                "api_write_seconds",
                "The data API's guarded writes (POST /v1/guilds/{id}/execute): time in the writer, from the statement to its commit or rollback, by outcome (committed, refused, out_of_scope, storage).",
                &["outcome"],
                exponential_buckets(0.00005, 2.0, 16)?,
            )?,
            registry,
        };
        metrics.pod_ordinal.set(i64::from(pod_ordinal));
        metrics.pods.set(i64::from(pods));
        #[cfg(target_os = "linux")]
        metrics.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(metrics)
    }

    pub fn kind(&self, kind: EventKind) -> &KindCounters {
        &self.by_kind[kind as usize]
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }
}
