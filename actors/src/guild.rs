//! `GuildActor`: one per active guild; applies its guild's events in order.
//!
//! Started by the shard filter on a guild's first event (restoring the guild's channels from
//! the database), it turns events into writes and hands them to the writer. When the writer's
//! mailbox is full it pauses its own mailbox until there is room, so backpressure stays with
//! the guilds that write. After an idle period with nothing queued and nothing uncommitted it
//! asks the filter to passivate it; the filter decides, so no event can race the stop.

use crate::event::{Dispatch, Id};
use crate::filter::{Passivate, ShardFilter};
use crate::handlers::GuildState;
use crate::metrics::Metrics;
use crate::progress::{Progress, Ticket};
use crate::store::{self, ReadPool};
use crate::writer::WriterLink;
use actix::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test and bench seam: returns a delay to wait (asynchronously) before handling an event of
/// the given guild, to simulate a slow guild. Production passes `None` and pays one branch.
pub type SlowGuildHook = Arc<dyn Fn(Id) -> Option<Duration> + Send + Sync>;

/// Counters shared by the filter and one guild actor.
#[derive(Default)]
pub struct GuildSlot {
    /// Events sent by the filter and not yet handed to the writer (the mailbox bound).
    pub queued: AtomicUsize,
    /// Write commands sent to the writer and not yet committed.
    pub unwritten: Arc<AtomicUsize>,
}

/// One event for a guild actor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GuildEvent {
    pub ticket: Ticket,
    pub dispatch: Dispatch,
}

/// The filter agreed to passivation: stop now.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Everything a guild actor needs besides its guild id.
#[derive(Clone)]
pub struct GuildDeps {
    pub writer: WriterLink,
    pub reads: ReadPool,
    pub metrics: Arc<Metrics>,
    pub progress: Arc<Progress>,
    pub idle_after: Duration,
    pub slow_hook: Option<SlowGuildHook>,
}

pub struct GuildActor {
    state: GuildState,
    slot: Arc<GuildSlot>,
    filter: Addr<ShardFilter>,
    deps: GuildDeps,
    last_event: Instant,
}

impl GuildActor {
    pub fn new(guild_id: Id, slot: Arc<GuildSlot>, filter: Addr<ShardFilter>, deps: GuildDeps) -> Self {
        GuildActor { state: GuildState::new(guild_id), slot, filter, deps, last_event: Instant::now() }
    }

    fn restore_channels(&mut self) {
        let guild_id = self.state.guild_id();
        let rows = self
            .deps
            .reads
            .get()
            .map_err(|e| e.to_string())
            .and_then(|conn| store::load_channels(&conn, guild_id).map_err(|e| e.to_string()));
        match rows {
            Ok(rows) => self.state = GuildState::with_channels(guild_id, rows),
            Err(e) => tracing::error!(guild_id = %guild_id, error = %e, "loading the guild's channels; categories may be missing until its next GUILD_CREATE"),
        }
    }

    fn process(&mut self, event: GuildEvent, ctx: &mut Context<Self>) {
        let ops = self.state.handle(&event.dispatch.event);
        if ops.is_empty() {
            self.finish_skipped(event);
            return;
        }
        let unwritten = self.slot.unwritten.clone();
        match self.deps.writer.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.deps.writer.send(event.ticket, ops, unwritten, permit);
                self.dequeued();
            }
            Err(_) => {
                // The writer is full: hold this guild's mailbox until there is room.
                let permits = self.deps.writer.permits.clone();
                ctx.wait(
                    async move { permits.acquire_owned().await.ok() }
                        .into_actor(self)
                        .map(move |permit, act, _| match permit {
                            Some(permit) => {
                                act.deps.writer.send(event.ticket, ops, unwritten, permit);
                                act.dequeued();
                            }
                            None => {
                                // The semaphore is never closed; if it were, say so loudly.
                                act.deps.metrics.handler_errors.inc();
                                tracing::error!("writer link closed; event not written");
                                act.finish_skipped(event);
                            }
                        }),
                );
            }
        }
    }

    fn finish_skipped(&mut self, event: GuildEvent) {
        self.deps.metrics.kind(event.dispatch.kind).skipped.inc();
        self.deps.metrics.processed.inc();
        self.deps.progress.complete(event.ticket);
        self.dequeued();
    }

    fn dequeued(&self) {
        self.slot.queued.fetch_sub(1, Ordering::AcqRel);
        self.deps.metrics.guild_mailbox_depth.dec();
    }
}

impl Actor for GuildActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.deps.metrics.guild_actors.inc();
        self.restore_channels();
        let check_every = (self.deps.idle_after / 2).max(Duration::from_millis(10));
        ctx.run_interval(check_every, |act, _| {
            let idle = act.last_event.elapsed() >= act.deps.idle_after
                && act.slot.queued.load(Ordering::Acquire) == 0
                && act.slot.unwritten.load(Ordering::Acquire) == 0;
            if idle {
                act.filter.do_send(Passivate { guild_id: act.state.guild_id(), slot: act.slot.clone() });
            }
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.deps.metrics.guild_actors.dec();
    }
}

impl Handler<GuildEvent> for GuildActor {
    type Result = ();
    fn handle(&mut self, event: GuildEvent, ctx: &mut Self::Context) {
        self.last_event = Instant::now();
        let delay = self.deps.slow_hook.as_ref().and_then(|hook| hook(self.state.guild_id()));
        match delay {
            None => self.process(event, ctx),
            Some(delay) => ctx.wait(
                actix::clock::sleep(delay)
                    .into_actor(self)
                    .map(move |_, act, ctx| act.process(event, ctx)),
            ),
        }
    }
}

impl Handler<Stop> for GuildActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
