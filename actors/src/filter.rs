//! `ShardFilter`: the gate every dispatch passes.
//!
//! It counts each dispatch by type, drops those of guilds another pod owns, and forwards the
//! rest to the guild's actor, starting it if needed. It never waits on a guild: when a guild's
//! mailbox is full, the event is shed (counted in `events_shed_total`, logged) and the filter
//! moves on, so one stuck guild cannot stall the others. (A replay asks for
//! [`Overflow::Queue`] instead: it enqueues beyond the bound, and the reader's in-flight limit
//! is the bound.) Guild-less events (DMs) are owned by
//! pod 0 and store nothing.

use crate::event::{Event, EventKind, Id};
use crate::guild::{FlushWaiting, GuildActor, GuildDeps, GuildEvent, GuildSlot, Stop};
use crate::metrics::Metrics;
use crate::pipeline::Overflow;
use crate::progress::Progress;
use crate::shard::Sharding;
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A guild actor reports that it is idle and may be stopped.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Passivate {
    pub guild_id: Id,
    pub slot: Arc<GuildSlot>,
}

struct GuildEntry {
    addr: Addr<GuildActor>,
    slot: Arc<GuildSlot>,
}

pub struct ShardFilter {
    sharding: Sharding,
    mailbox_capacity: usize,
    overflow: Overflow,
    guilds: HashMap<Id, GuildEntry>,
    workers: Vec<ArbiterHandle>,
    deps: GuildDeps,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
}

impl ShardFilter {
    /// `workers`: the arbiters guild actors run on (spread by guild id); empty means the
    /// filter's own.
    pub fn new(
        sharding: Sharding,
        mailbox_capacity: usize,
        overflow: Overflow,
        workers: Vec<ArbiterHandle>,
        deps: GuildDeps,
    ) -> Self {
        let metrics = deps.metrics.clone();
        let progress = deps.progress.clone();
        ShardFilter {
            sharding,
            mailbox_capacity,
            overflow,
            guilds: HashMap::new(),
            workers,
            deps,
            metrics,
            progress,
        }
    }

    fn finish(&self, event: GuildEvent) {
        self.metrics.processed.inc();
        self.progress.complete(event.ticket);
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
        let filter = ctx.address();
        let slot = Arc::new(GuildSlot::default());
        let actor_slot = slot.clone();
        let deps = deps.clone();
        let make =
            move |_: &mut Context<GuildActor>| GuildActor::new(guild_id, actor_slot, filter, deps);
        let addr = if workers.is_empty() {
            GuildActor::create(make)
        } else {
            let worker = &workers[(guild_id.0 % workers.len() as u64) as usize];
            GuildActor::start_in_arbiter(worker, make)
        };
        GuildEntry { addr, slot }
    })
}

impl Actor for ShardFilter {
    type Context = Context<Self>;
}

impl Handler<GuildEvent> for ShardFilter {
    type Result = ();
    fn handle(&mut self, event: GuildEvent, ctx: &mut Self::Context) {
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
        if !session_event && !self.sharding.owns(dispatch.guild_id.map(|id| id.0)) {
            counters.foreign.inc();
            self.finish(event);
            return;
        }
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
        if self.overflow == Overflow::Shed && entry.slot.queued.load(Ordering::Acquire) >= capacity
        {
            let kind = event.dispatch.kind;
            let seq = event.dispatch.seq;
            self.metrics.shed.inc();
            let shed = self.metrics.shed.get();
            // Log the first and then every 1000th, so a stuck guild cannot flood the log.
            if shed == 1 || shed.is_multiple_of(1000) {
                tracing::warn!(guild_id = %guild_id, event = kind.name(), seq, shed_total = shed,
                    "guild mailbox full ({capacity} events): event shed");
            }
            self.finish(event);
            return;
        }
        entry.slot.queued.fetch_add(1, Ordering::AcqRel);
        self.metrics.guild_mailbox_depth.inc();
        entry.addr.do_send(event);
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
        if Arc::ptr_eq(&entry.slot, &msg.slot)
            && entry.slot.queued.load(Ordering::Acquire) == 0
            && entry.slot.unwritten.load(Ordering::Acquire) == 0
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
