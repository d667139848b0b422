//! The gateway side of a pod: its Discord sessions ([`shards`], one [`connection`] per shard),
//! when each may identify ([`identify`]), what each close code means ([`close_codes`]), the
//! conversion of events ([`convert`], with [`compact_json`] for the relay's form), and
//! [`GatewayActor`], which feeds them to the pipeline in order.

pub mod close_codes;
pub mod compact_json;
pub mod connection;
pub mod convert;
pub mod identify;
pub mod sessions;

use actix::prelude::*;
use connection::ShardEvent;
use gateway_actors::event::EventKind;
use gateway_actors::Pipeline;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::Arc;

/// The connection's metrics, in the pod's registry.
pub struct GatewayMetrics {
    pub connected: IntGauge,
    pub heartbeat_latency: Gauge,
    pub reconnects: IntCounter,
    pub resumes: IntCounter,
    /// Dispatches by type, one counter per [`EventKind`] (looked up by index, not by label).
    events: Vec<IntCounter>,
    pub backpressure_waits: IntCounter,
    /// Sessions (shards) this pod runs.
    pub shards: IntGauge,
    /// Identifies Discord accepted (READY).
    pub identifies: IntCounter,
    /// The bot's session starts left today, as Discord last said.
    pub session_starts_remaining: IntGauge,
}

impl GatewayMetrics {
    /// Counts one dispatch from the gateway.
    pub fn count(&self, kind: EventKind) {
        self.events[kind as usize].inc();
    }

    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let connected = IntGauge::new(
            "gateway_connected",
            "1 while the Discord gateway connection is up.",
        )?;
        let heartbeat_latency = Gauge::new(
            "gateway_heartbeat_latency_seconds",
            "Last heartbeat round trip to the gateway.",
        )?;
        let reconnects = IntCounter::new(
            "gateway_reconnects_total",
            "New gateway sessions after the first (serenity re-identified after a lost session).",
        )?;
        let resumes = IntCounter::new(
            "gateway_resumes_total",
            "Sessions resumed after a lost connection.",
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "gateway_events_total",
                "Dispatches received from the gateway, by type.",
            ),
            &["type"],
        )?;
        let backpressure_waits = IntCounter::new(
            "gateway_backpressure_waits_total",
            "Times the connection waited because the pipeline's event queue was full.",
        )?;
        let shards = IntGauge::new("gateway_shards", "Discord sessions (shards) this pod runs.")?;
        let identifies = IntCounter::new(
            "gateway_identifies_total",
            "Sessions started (identifies Discord answered with READY).",
        )?;
        let session_starts_remaining = IntGauge::new(
            "session_starts_remaining",
            "The bot's session starts left before Discord's daily reset (GET /gateway/bot).",
        )?;
        let closes = IntCounterVec::new(
            Opts::new(
                "gateway_closes_total",
                "Gateway sessions closed by Discord, by close code.",
            ),
            &["code"],
        )?;
        registry.register(Box::new(shards.clone()))?;
        registry.register(Box::new(identifies.clone()))?;
        registry.register(Box::new(session_starts_remaining.clone()))?;
        registry.register(Box::new(closes.clone()))?;
        close_codes::watch().set_counter(closes);
        // Unknown until the first GET /gateway/bot.
        session_starts_remaining.set(-1);
        registry.register(Box::new(backpressure_waits.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        registry.register(Box::new(heartbeat_latency.clone()))?;
        registry.register(Box::new(reconnects.clone()))?;
        registry.register(Box::new(resumes.clone()))?;
        registry.register(Box::new(events.clone()))?;
        Ok(GatewayMetrics {
            connected,
            heartbeat_latency,
            reconnects,
            resumes,
            events: EventKind::ALL
                .iter()
                .map(|k| events.with_label_values(&[k.name()]))
                .collect(),
            backpressure_waits,
            shards,
            identifies,
            session_starts_remaining,
        })
    }
}

/// Feeds the connection's events to the pipeline, one at a time, in order: while the pipeline
/// is full, the actor (and so the stream) waits.
pub struct GatewayActor {
    pipeline: Arc<Pipeline>,
    /// Told when every event of the connection has been submitted.
    finished: Option<tokio::sync::oneshot::Sender<()>>,
}

impl GatewayActor {
    pub fn new(pipeline: Arc<Pipeline>, finished: tokio::sync::oneshot::Sender<()>) -> Self {
        GatewayActor {
            pipeline,
            finished: Some(finished),
        }
    }
}

impl Actor for GatewayActor {
    type Context = Context<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(finished) = self.finished.take() {
            let _ = finished.send(());
        }
    }
}

impl StreamHandler<ShardEvent> for GatewayActor {
    fn handle(&mut self, (session, dispatch): ShardEvent, ctx: &mut Self::Context) {
        let pipeline = self.pipeline.clone();
        ctx.wait(
            async move {
                let seq = dispatch.seq;
                pipeline.submit_from(dispatch, session.epoch).await;
                if let Some(seq) = seq {
                    session
                        .last_seq_submitted
                        .store(seq, std::sync::atomic::Ordering::SeqCst);
                }
            }
            .into_actor(self),
        );
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
