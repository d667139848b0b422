//! `GuildActor`: one per active guild; applies its guild's events in order.
//!
//! Started by the shard filter on a guild's first event (restoring the guild's channels and
//! member timeouts from the database), it turns events into writes and hands them to the
//! writer. When the writer's mailbox is full it pauses its own mailbox until there is room, so
//! backpressure stays with the guilds that write. Moderation events wait (without blocking) for
//! their audit log entries in [`ModerationLog`]. After an idle period with nothing queued,
//! waiting or uncommitted it asks the filter to passivate it; the filter decides, so no event
//! can race the stop.

use crate::actors::inbox::{GuildEvent, GuildInbox, Passivate};
use crate::actors::writer::WriterLink;
use crate::domain::event::Id;
use crate::domain::handlers::GuildState;
use crate::domain::moderation::{ModerationLog, Resolution};
use crate::domain::op::Op;
use crate::health::StorageHealth;
use crate::metrics::Metrics;
use crate::progress::{Progress, Ticket};
use crate::relay_feed::RelayFeed;
use crate::storage::database::ReadPool;
use crate::storage::restore;
use actix::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test and bench seam: returns a delay to wait (asynchronously) before handling an event of
/// the given guild, to simulate a slow guild. Production passes `None` and pays one branch.
pub type SlowGuildHook = Arc<dyn Fn(Id) -> Option<Duration> + Send + Sync>;

/// The filter agreed to passivation: stop now.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

/// No more events will come (end of input, shutdown): stop waiting for audit log entries.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct FlushWaiting;

/// The guild moves to another pod (a rescale's freeze): what waits for its counterpart is
/// kept for the new owner, unresolved (`Op::HandOver`), which pairs it with what follows.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct HandOverWaiting;

/// The guild is live here (again, after handing itself over through new sessions): what
/// waits is this actor's to resolve.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct TakeOver;

impl Handler<TakeOver> for GuildActor {
    type Result = ();
    fn handle(&mut self, _: TakeOver, _: &mut Self::Context) {
        self.handing_over = false;
        self.moderation.take_back();
    }
}

/// A moderation item's ticket and, to hand it over, the event as received.
pub(crate) struct Waiting {
    ticket: Ticket,
    carried: Option<Carried>,
}

/// A moderation event as received: its type, seq, payload and receipt time.
struct Carried {
    kind: &'static str,
    seq: Option<u64>,
    payload: std::sync::Arc<str>,
    received_ms: i64,
}

/// Everything a guild actor needs besides its guild id.
#[derive(Clone)]
pub(crate) struct GuildDeps {
    /// The one writer, behind its bounded queue (a full queue pauses the guild's mailbox).
    pub writer: WriterLink,
    /// Read-only connections, to restore a guild's channels and timeouts at start.
    pub reads: ReadPool,
    pub metrics: Arc<Metrics>,
    /// Where a ticket is completed once its event's writes are committed (or it writes none).
    pub progress: Arc<Progress>,
    /// Whether commits succeed: nothing is declared stuck while they do not.
    pub health: Arc<StorageHealth>,
    /// With nothing queued, waiting or unwritten for this long, an actor asks to passivate.
    pub idle_after: Duration,
    /// How long a moderation event and its audit log entry wait for each other.
    pub audit_window: Duration,
    /// The bot's user id from READY (0 until known).
    pub bot_user_id: Arc<AtomicU64>,
    /// A test and bench seam that slows chosen guilds; `None` in production.
    pub slow_hook: Option<SlowGuildHook>,
    /// The relay's feed, when the pod runs a relay: the filter holds what it may send.
    pub relay: Option<Arc<RelayFeed>>,
}

pub(crate) struct GuildActor {
    /// The guild's channels (names, categories): what message rows need, restored from the
    /// database when the actor starts again after passivation.
    state: GuildState,
    /// Moderation events and audit log entries waiting for their pair. An event waiting here
    /// is not done, so `last_seq_committed` stays behind it until it is written.
    moderation: ModerationLog<Waiting>,
    /// Shared with the filter: the mailbox count and the overflow this actor pulls from.
    inbox: Arc<GuildInbox>,
    /// Where to ask for passivation (the filter decides, so no event races the stop).
    passivate: Recipient<Passivate>,
    deps: GuildDeps,
    /// When the last event arrived: passivation waits `idle_after` from here.
    last_event: Instant,
    /// Writes waiting for room in the writer, oldest first (see [`GuildActor::write`]).
    blocked: VecDeque<BlockedWrite>,
    /// The guild moves away (a rescale's freeze): waiting moderation items are handed over.
    handing_over: bool,
    /// The one timer for the oldest waiting moderation item, and its deadline. Each expiry
    /// sets the next, so an item that arrived while an older one waited is never left
    /// without a timer.
    expiry: Option<(Instant, SpawnHandle)>,
    /// A drain asked to write what waits for its pair: done once the events queued before
    /// the request are handled, so that an event still in the overflow (a ban whose entry is
    /// behind it) is not left to wait out the audit window.
    flush_requested: bool,
}

/// One event's writes, waiting for room in the writer.
struct BlockedWrite {
    ticket: Ticket,
    also: Option<Ticket>,
    ops: Vec<Op>,
    /// Handing it on also hands on the current mailbox event.
    dequeue: bool,
}

impl GuildActor {
    pub(crate) fn new(
        guild_id: Id,
        inbox: Arc<GuildInbox>,
        passivate: Recipient<Passivate>,
        deps: GuildDeps,
    ) -> Self {
        GuildActor {
            state: GuildState::new(guild_id),
            moderation: ModerationLog::new(guild_id, deps.audit_window, Default::default()),
            inbox,
            passivate,
            deps,
            last_event: Instant::now(),
            blocked: VecDeque::new(),
            handing_over: false,
            expiry: None,
            flush_requested: false,
        }
    }

    fn restore(&mut self) {
        let guild_id = self.state.guild_id();
        let restored = self
            .deps
            .reads
            .get()
            .map_err(|e| e.to_string())
            .and_then(|conn| {
                let channels =
                    restore::load_channels(&conn, guild_id).map_err(|e| e.to_string())?;
                let timeouts =
                    restore::load_timeouts(&conn, guild_id).map_err(|e| e.to_string())?;
                Ok((channels, timeouts))
            });
        match restored {
            Ok((channels, timeouts)) => {
                self.state = GuildState::with_channels(guild_id, channels);
                self.moderation = ModerationLog::new(guild_id, self.deps.audit_window, timeouts);
            }
            Err(e) => tracing::error!(guild_id = %guild_id, error = %e,
                "restoring the guild's channels and timeouts; categories may be missing until its next GUILD_CREATE"),
        }
    }

    fn bot_user_id(&self) -> Option<Id> {
        match self.deps.bot_user_id.load(Ordering::Relaxed) {
            0 => None,
            id => Some(Id(id)),
        }
    }

    fn process(&mut self, event: GuildEvent, ctx: &mut Context<Self>) {
        let GuildEvent {
            ticket,
            dispatch,
            received_ms: now_ms,
            ..
        } = event;
        let carried = dispatch.payload.clone().map(|payload| Carried {
            kind: dispatch.kind.name(),
            seq: dispatch.seq,
            payload,
            received_ms: now_ms,
        });
        let bot = self.bot_user_id();
        match self.moderation.handle(
            Waiting { ticket, carried },
            &dispatch.event,
            dispatch.seq,
            Instant::now(),
            now_ms,
            bot,
        ) {
            Ok(resolutions) => {
                let waits = !resolutions
                    .iter()
                    .any(|r| r.tokens.iter().any(|w| w.ticket == ticket));
                if let (true, Some(relay)) = (waits, &self.deps.relay) {
                    // It waits for its audit log entry (at most the audit window): the
                    // guild's later events, an interaction among them, do not wait behind it.
                    // Its row lands when the pair is found.
                    relay.done(ticket.number());
                }
                self.apply_resolutions(resolutions, ctx);
                if self.handing_over {
                    self.hand_over_waiting(ctx);
                }
                self.schedule_expiry(ctx);
                self.dequeued(ctx);
            }
            Err(Waiting { ticket, .. }) => {
                let ops = self.state.handle(&dispatch.event);
                if ops.is_empty() {
                    self.deps.metrics.kind(dispatch.kind).skipped.inc();
                    self.complete(ticket);
                    self.dequeued(ctx);
                } else {
                    self.write(ticket, None, ops, true, ctx);
                }
            }
        }
    }

    fn apply_resolutions(
        &mut self,
        resolutions: Vec<Resolution<Waiting>>,
        ctx: &mut Context<Self>,
    ) {
        for Resolution { tokens, ops } in resolutions {
            let mut tokens = tokens.into_iter().map(|w| w.ticket);
            let Some(first) = tokens.next() else { continue };
            let second = tokens.next();
            if ops.is_empty() {
                self.complete(first);
                if let Some(t) = second {
                    self.complete(t);
                }
            } else {
                self.write(first, second, ops, false, ctx);
            }
        }
    }

    /// Keeps exactly one timer, set for the oldest waiting item's deadline.
    fn schedule_expiry(&mut self, ctx: &mut Context<Self>) {
        let next = self.moderation.next_deadline();
        if self.expiry.as_ref().map(|(at, _)| *at) == next {
            return;
        }
        if let Some((_, handle)) = self.expiry.take() {
            ctx.cancel_future(handle);
        }
        if let Some(deadline) = next {
            let handle = ctx.run_later(
                deadline.saturating_duration_since(Instant::now()),
                |act, ctx| {
                    act.expiry = None;
                    let resolutions = act.moderation.expire(Instant::now());
                    act.apply_resolutions(resolutions, ctx);
                    act.schedule_expiry(ctx);
                },
            );
            self.expiry = Some((deadline, handle));
        }
    }

    /// Hands ops to the writer, in the order they are produced: when the writer is full, or
    /// earlier writes still wait for room, they queue behind those, and the guild's mailbox
    /// is held until the queue is empty. `dequeue` marks the current mailbox event as handed on.
    fn write(
        &mut self,
        ticket: Ticket,
        also: Option<Ticket>,
        ops: Vec<Op>,
        dequeue: bool,
        ctx: &mut Context<Self>,
    ) {
        if self.blocked.is_empty() {
            if let Ok(permit) = self.deps.writer.permits.clone().try_acquire_owned() {
                let unwritten = self.inbox.unwritten.clone();
                self.deps.writer.send(ticket, also, ops, unwritten, permit);
                if dequeue {
                    self.dequeued(ctx);
                }
                return;
            }
        }
        self.blocked.push_back(BlockedWrite {
            ticket,
            also,
            ops,
            dequeue,
        });
        self.deps.metrics.writes_waiting_for_writer.inc();
        if self.blocked.len() == 1 {
            self.wait_for_writer(ctx);
        }
    }

    /// Sends the oldest blocked write once the writer has room, then waits again for the next.
    fn wait_for_writer(&mut self, ctx: &mut Context<Self>) {
        let permits = self.deps.writer.permits.clone();
        ctx.wait(
            async move { permits.acquire_owned().await.ok() }
                .into_actor(self)
                .map(|permit, act, ctx| {
                    let Some(write) = act.blocked.pop_front() else {
                        return;
                    };
                    act.deps.metrics.writes_waiting_for_writer.dec();
                    match permit {
                        Some(permit) => {
                            let unwritten = act.inbox.unwritten.clone();
                            act.deps.writer.send(
                                write.ticket,
                                write.also,
                                write.ops,
                                unwritten,
                                permit,
                            )
                        }
                        None => {
                            // The semaphore is never closed; if it were, say so loudly.
                            act.deps.metrics.handler_errors.inc();
                            tracing::error!("writer link closed; event not written");
                            act.complete(write.ticket);
                            if let Some(t) = write.also {
                                act.complete(t);
                            }
                        }
                    }
                    if write.dequeue {
                        act.dequeued(ctx);
                    }
                    if !act.blocked.is_empty() {
                        act.wait_for_writer(ctx);
                    }
                }),
        );
    }

    fn complete(&self, ticket: Ticket) {
        self.deps.metrics.processed.inc();
        self.deps.progress.complete(ticket);
    }

    /// The current mailbox event is handed on: the oldest overflow event takes its place.
    fn dequeued(&mut self, ctx: &mut Context<Self>) {
        let me = ctx.address();
        let handed = self.inbox.handed_on(|next| me.do_send(next));
        let metrics = &self.deps.metrics;
        metrics.guild_mailbox_depth.dec();
        if handed.pulled {
            metrics.guild_overflow_depth.dec();
            metrics.guild_mailbox_depth.inc();
        }
        if handed.recovered {
            metrics.guilds_stuck.dec();
            tracing::warn!(guild_id = %self.state.guild_id(), "stuck guild is making progress again");
        }
        self.flush_if_requested(ctx);
    }

    /// Writes everything waiting for its pair, if a drain asked and nothing is queued.
    fn flush_if_requested(&mut self, ctx: &mut Context<Self>) {
        if !self.flush_requested || !self.inbox.is_empty() {
            return;
        }
        self.flush_requested = false;
        let resolutions = self.moderation.flush();
        self.apply_resolutions(resolutions, ctx);
        self.schedule_expiry(ctx);
    }
}

impl Actor for GuildActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.deps.metrics.guild_actors.inc();
        self.restore();
        let check_every = (self.deps.idle_after / 2).max(Duration::from_millis(10));
        ctx.run_interval(check_every, |act, _| {
            let idle = act.last_event.elapsed() >= act.deps.idle_after
                && !act.moderation.is_waiting()
                && act.blocked.is_empty()
                && act.inbox.is_empty()
                && act.inbox.unwritten.load(Ordering::Acquire) == 0;
            if idle {
                act.passivate.do_send(Passivate {
                    guild_id: act.state.guild_id(),
                    inbox: act.inbox.clone(),
                });
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
        let delay = self
            .deps
            .slow_hook
            .as_ref()
            .and_then(|hook| hook(self.state.guild_id()));
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

impl Handler<HandOverWaiting> for GuildActor {
    type Result = ();
    fn handle(&mut self, _: HandOverWaiting, ctx: &mut Self::Context) {
        // From now on everything this actor still processes precedes the freeze point (it
        // may still sit in the overflow): what comes to wait is handed over too.
        self.handing_over = true;
        self.hand_over_waiting(ctx);
    }
}

impl GuildActor {
    fn hand_over_waiting(&mut self, ctx: &mut Context<Self>) {
        let guild_id = self.state.guild_id();
        let (handed, resolved) = self.moderation.hand_over();
        self.apply_resolutions(resolved, ctx);
        for Waiting { ticket, carried } in handed {
            match carried {
                Some(c) => {
                    let op = Op::HandOver {
                        guild_id,
                        seq: c.seq,
                        kind: c.kind,
                        payload: c.payload,
                        received_ms: c.received_ms,
                    };
                    self.write(ticket, None, vec![op], false, ctx);
                }
                None => self.complete(ticket),
            }
        }
        self.schedule_expiry(ctx);
    }
}

impl Handler<FlushWaiting> for GuildActor {
    type Result = ();
    fn handle(&mut self, _: FlushWaiting, ctx: &mut Self::Context) {
        self.flush_requested = true;
        self.flush_if_requested(ctx);
    }
}

impl Handler<Stop> for GuildActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
