//! `ShardFilter`: the gate every dispatch passes.
//!
//! It counts each dispatch by type, drops those of guilds another pod owns, and offers the
//! rest to the guild's [`GuildInbox`], starting the guild's actor if needed. It never waits on
//! a guild: a full mailbox spills into the inbox's overflow (nothing is lost, order holds), and
//! only a guild that makes no progress for the stuck timeout has its events dropped, counted
//! in `events_shed_total` and logged. Guild-less events (DMs) are owned by pod 0 and store
//! nothing.
//!
//! During a live rescale it routes each event by [`Ownership::route`]: the guilds coming to
//! this pod are written to the capture log until they go live ([`rescale::GoLive`] re-applies
//! the log first), the ones leaving are dropped once frozen ([`handover::Freeze`]), and
//! [`rescale::Commit`] switches to the new layout. Each of these steps holds the filter's
//! mailbox while it changes state, so no event is routed by half of a change.

pub(crate) mod handover;
pub(crate) mod rescale;

use crate::actors::guild::{FlushWaiting, GuildActor, GuildDeps, Stop};
use crate::actors::inbox::{GuildEvent, GuildInbox, Offered, Passivate};
use crate::actors::writer::WriteCmd;
use crate::domain::event::{Event, EventKind, Id};
use crate::domain::rescale::ownership::{Ownership, Route};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::relay_feed::Relayed;
use actix::prelude::*;
use handover::{Handover, RecentAnchors};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct GuildEntry {
    addr: Addr<GuildActor>,
    inbox: Arc<GuildInbox>,
}

pub(crate) struct ShardFilter {
    /// Which guilds this pod applies, captures or ignores (a rescale changes it).
    ownership: Ownership,
    /// Events a guild's mailbox holds before the rest wait in its overflow.
    mailbox_capacity: usize,
    /// A guild with events queued that hands none on for this long is declared stuck.
    stuck_after: Duration,
    /// Active guilds: those with an actor. A passivated guild is absent until its next event.
    guilds: HashMap<Id, GuildEntry>,
    /// The arbiters guild actors run on, a guild always on the same one; empty: this one.
    workers: Vec<ArbiterHandle>,
    /// What each guild actor is started with.
    deps: GuildDeps,
    metrics: Arc<Metrics>,
    /// Where an event's ticket is completed when the filter is the last to hold it (foreign,
    /// frozen, captured only, or dropped).
    progress: Arc<Progress>,
    /// Rate limit for the log line of a dropped (stuck guild's) event.
    drop_log: LogLimit,
    /// During a rescale: what this pod, as an old owner, has seen of each group's stream,
    /// and, once the freeze is asked, the groups still waiting for their anchor.
    handover: Option<Handover>,
    /// The anchor events this pod's own stream carried lately, rescale or not: a new owner
    /// that lags may take as its anchor an event this pod saw before the prepare.
    recent: RecentAnchors,
}

impl ShardFilter {
    /// `workers`: the arbiters guild actors run on (spread by guild id); empty means the
    /// filter's own.
    pub(crate) fn new(
        ownership: Ownership,
        mailbox_capacity: usize,
        stuck_after: Duration,
        workers: Vec<ArbiterHandle>,
        deps: GuildDeps,
    ) -> Self {
        let metrics = deps.metrics.clone();
        let progress = deps.progress.clone();
        ShardFilter {
            ownership,
            mailbox_capacity,
            stuck_after,
            guilds: HashMap::new(),
            workers,
            deps,
            metrics,
            progress,
            drop_log: LogLimit::new(Duration::from_secs(10)),
            // A pod restarted mid-rescale follows its stream again from here.
            handover: ownership.next.map(|_| Handover::default()),
            recent: RecentAnchors::default(),
        }
    }

    fn finish(&self, event: GuildEvent) {
        self.metrics.processed.inc();
        self.progress.complete(event.ticket);
    }

    /// The last resort: an event of a stuck guild is dropped, counted and logged.
    fn drop_event(&mut self, guild_id: Id, event: GuildEvent, why: &'static str) {
        self.metrics.shed.inc();
        if let Some(suppressed) = self.drop_log.allow() {
            tracing::error!(guild_id = %guild_id, event = event.dispatch.kind.name(),
                seq = event.dispatch.seq, shed_total = self.metrics.shed.get(), suppressed,
                "{why}: event dropped");
        }
        self.finish(event);
    }

    /// Declares stuck every guild that handed nothing on for `stuck_after` with events queued,
    /// and drops its overflow. Nothing is declared stuck while storage fails.
    fn check_stuck(&mut self) {
        let Some(healthy_since) = self.deps.health.healthy_since() else {
            return;
        };
        let now = Instant::now();
        let mut dropped = Vec::new();
        for (guild_id, entry) in &self.guilds {
            if let Some(events) = entry
                .inbox
                .drop_if_stuck(now, self.stuck_after, healthy_since)
            {
                tracing::error!(guild_id = %guild_id, overflow_dropped = events.len(),
                    stuck_secs = self.stuck_after.as_secs_f64(),
                    "guild made no progress: declared stuck; its new events are dropped until it recovers");
                self.metrics.guilds_stuck.inc();
                self.metrics.guild_overflow_depth.sub(events.len() as i64);
                dropped.extend(events.into_iter().map(|e| (*guild_id, e)));
            }
        }
        for (guild_id, event) in dropped {
            self.drop_event(guild_id, event, "the guild is stuck");
        }
    }
}

/// The guild's entry, starting its actor if it has none. (Takes the filter's fields apart so
/// the caller keeps using the others.)
fn guild_entry<'a>(
    guilds: &'a mut HashMap<Id, GuildEntry>,
    workers: &[ArbiterHandle],
    deps: &GuildDeps,
    guild_id: Id,
    ctx: &Context<ShardFilter>,
) -> &'a GuildEntry {
    guilds.entry(guild_id).or_insert_with(|| {
        let passivate = ctx.address().recipient();
        let inbox = Arc::new(GuildInbox::default());
        let actor_inbox = inbox.clone();
        let deps = deps.clone();
        let make = move |_: &mut Context<GuildActor>| {
            GuildActor::new(guild_id, actor_inbox, passivate, deps)
        };
        let addr = if workers.is_empty() {
            GuildActor::create(make)
        } else {
            let worker = &workers[(guild_id.0 % workers.len() as u64) as usize];
            GuildActor::start_in_arbiter(worker, make)
        };
        GuildEntry { addr, inbox }
    })
}

impl Actor for ShardFilter {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let every = (self.stuck_after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        ctx.run_interval(every, |act, _| act.check_stuck());
    }
}

impl Handler<GuildEvent> for ShardFilter {
    type Result = ();
    fn handle(&mut self, mut event: GuildEvent, ctx: &mut Self::Context) {
        let dispatch = &event.dispatch;
        let counters = self.metrics.kind(dispatch.kind);
        counters.received.inc();
        if let Event::Ready { bot_user_id } = dispatch.event {
            // Every pod needs to know the bot, to leave its own moderation actions unlogged.
            self.deps
                .bot_user_id
                .store(bot_user_id.0, Ordering::Relaxed);
        }
        // Session events (READY, RESUMED) concern every pod; the rest go by guild.
        let session_event = matches!(dispatch.kind, EventKind::Ready | EventKind::Resumed);
        let mut route = match dispatch.guild_id {
            _ if session_event => Route::Apply,
            None if self.ownership.owns_guildless() => Route::Apply,
            None => Route::Foreign,
            Some(id) => self.ownership.route(id.0, event.source_epoch),
        };
        if self.before_anchor(&event, route) {
            route = Route::Apply;
        }
        if matches!(route, Route::Apply | Route::CaptureAndApply) && !session_event {
            self.hold_for_relay(&event);
        }
        let dispatch = &event.dispatch;
        let counters = self.metrics.kind(dispatch.kind);
        match route {
            // The payload is for the capture log only: not kept while the event waits.
            // Moderation events keep theirs while they wait: a rescale may hand them over.
            Route::Apply if !is_moderation(dispatch.kind) => event.dispatch.payload = None,
            Route::Apply => {}
            Route::Foreign | Route::Frozen => {
                if route == Route::Frozen {
                    self.metrics.rescale_frozen_events.inc();
                }
                counters.foreign.inc();
                self.finish(event);
                return;
            }
            Route::Capture | Route::CaptureAndApply => {
                let Some(capture) = self.capture_op(dispatch, event.received_ms) else {
                    // Stores nothing (or cannot be captured): nothing to carry over.
                    counters.skipped.inc();
                    self.finish(event);
                    return;
                };
                self.metrics.rescale_captured_events.inc();
                self.metrics.writer_queue_depth.inc();
                if route == Route::Capture {
                    counters.owned.inc();
                    let cmd = WriteCmd::capture(Some(event.ticket), capture);
                    self.deps.writer.addr.do_send(cmd);
                    return;
                }
                // Sent before the event reaches its actor, so the writer commits the capture
                // no later than the event's own writes.
                self.deps
                    .writer
                    .addr
                    .do_send(WriteCmd::capture(None, capture));
            }
        }
        self.deliver(event, ctx);
    }
}

/// Moderation events and audit entries: they may wait for their counterpart.
fn is_moderation(kind: EventKind) -> bool {
    matches!(
        kind,
        EventKind::GuildBanAdd
            | EventKind::GuildBanRemove
            | EventKind::GuildMemberRemove
            | EventKind::GuildMemberUpdate
            | EventKind::GuildAuditLogEntryCreate
    )
}

impl ShardFilter {
    /// With a relay, holds an event this pod applies as its guild's owner until it is done:
    /// then its clients are sent it. A pod relays exactly what it applies as owner, so across
    /// a rescale each event is relayed by the one pod that applied it.
    pub(super) fn hold_for_relay(&self, event: &GuildEvent) {
        let data = (event.dispatch.relay_payload.as_ref()).or(event.dispatch.payload.as_ref());
        let (Some(feed), Some(data)) = (&self.deps.relay, data) else {
            return;
        };
        let name = event.dispatch.name();
        // Answers to one client's member request: the relay routes them by nonce.
        if name == "GUILD_MEMBERS_CHUNK" {
            return;
        }
        feed.hold(
            event.ticket.number(),
            Relayed {
                guild_id: event.dispatch.guild_id.map(|g| g.0),
                kind: name.into(),
                data: data.clone(),
                received_ms: event.received_ms,
            },
        );
    }

    /// Hands an owned event to its guild's actor.
    fn deliver(&mut self, event: GuildEvent, ctx: &mut Context<Self>) {
        let dispatch = &event.dispatch;
        let counters = self.metrics.kind(dispatch.kind);
        counters.owned.inc();
        let guild_id = match (dispatch.guild_id, &dispatch.event) {
            (Some(id), event) if !matches!(event, Event::Other | Event::Ready { .. }) => id,
            // DMs and event types that store nothing end here.
            _ => {
                counters.skipped.inc();
                self.finish(event);
                return;
            }
        };
        let capacity = self.mailbox_capacity;
        let entry = guild_entry(&mut self.guilds, &self.workers, &self.deps, guild_id, ctx);
        let addr = entry.addr.clone();
        match entry
            .inbox
            .offer(event, capacity, |event| addr.do_send(event))
        {
            Offered::Mailbox => self.metrics.guild_mailbox_depth.inc(),
            Offered::Overflow => {
                self.metrics.events_overflowed.inc();
                self.metrics.guild_overflow_depth.inc();
            }
            Offered::Refused(event) => self.drop_event(guild_id, event, "the guild is stuck"),
        }
    }
}

impl Handler<Passivate> for ShardFilter {
    type Result = ();
    fn handle(&mut self, msg: Passivate, _: &mut Self::Context) {
        // Only the current actor of the guild, and only if nothing reached it meanwhile: the
        // filter is the only sender, so after removal no event can follow the Stop.
        let Some(entry) = self.guilds.get(&msg.guild_id) else {
            return;
        };
        if Arc::ptr_eq(&entry.inbox, &msg.inbox)
            && entry.inbox.is_empty()
            && entry.inbox.unwritten.load(Ordering::Acquire) == 0
        {
            if let Some(entry) = self.guilds.remove(&msg.guild_id) {
                entry.addr.do_send(Stop);
            }
        }
    }
}

impl Handler<FlushWaiting> for ShardFilter {
    type Result = ();
    fn handle(&mut self, _: FlushWaiting, _: &mut Self::Context) {
        for entry in self.guilds.values() {
            entry.addr.do_send(FlushWaiting);
        }
    }
}
