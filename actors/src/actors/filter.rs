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
//! this pod are written to the capture log until they go live ([`GoLive`] re-applies the log
//! first), the ones leaving are dropped once frozen ([`Freeze`]), and [`Commit`] switches to the
//! new layout. Each of these steps holds the filter's mailbox while it changes state, so no
//! event is routed by half of a change.
//!
//! A freeze is exact ([`crate::domain::rescale::anchor`]): after it, the leaving guilds of each group are still
//! applied until the group's anchor event passes in this pod's own stream, so the pod applies
//! exactly what precedes the point where the new owner's log takes over, however far behind
//! its sessions it runs. [`SettleFreeze`] ends the wait.

use crate::actors::guild::{FlushWaiting, GuildActor, GuildDeps, HandOverWaiting, Stop, TakeOver};
use crate::actors::inbox::{GuildEvent, GuildInbox, Offered, Passivate};
use crate::actors::writer::{Handoff, WriteCmd};
use crate::domain::event::{decode_dispatch, DecodeError, Dispatch, Event, EventKind, Id};
use crate::domain::op::Op;
use crate::domain::rescale::anchor::{self, Anchor, AnchorOutcome, Group};
use crate::domain::rescale::ownership::{Ownership, Route};
use crate::log_limit::LogLimit;
use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::storage::rescale::{event_log, handoff};
use actix::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct GuildEntry {
    addr: Addr<GuildActor>,
    inbox: Arc<GuildInbox>,
}

pub struct ShardFilter {
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

/// The last [`MAX_RECENT`] anchor identities, for membership.
#[derive(Default)]
struct RecentAnchors {
    set: std::collections::HashSet<u64>,
    order: std::collections::VecDeque<u64>,
}

/// About 12 MB; minutes of a busy pod's messages. An anchor older than that (a new owner
/// lagging more) is waited for until the drain limit, then its group is frozen without it.
const MAX_RECENT: usize = 1 << 18;

impl RecentAnchors {
    fn insert(&mut self, identity: u64) {
        if self.set.insert(identity) {
            self.order.push_back(identity);
            if self.order.len() > MAX_RECENT {
                if let Some(oldest) = self.order.pop_front() {
                    self.set.remove(&oldest);
                }
            }
        }
    }

    fn contains(&self, identity: u64) -> bool {
        self.set.contains(&identity)
    }
}

/// An old owner's side of the exact handoff ([`crate::domain::rescale::anchor`]).
#[derive(Default)]
struct Handover {
    /// Per group: the last anchor event seen, and the group's capturable events since.
    last: HashMap<Group, (u64, u64)>,
    /// Once frozen: groups waiting for their anchor to pass, by its identity.
    waiting: HashMap<u64, Vec<Anchor>>,
    pending: std::collections::HashSet<Group>,
    outcomes: Vec<AnchorOutcome>,
    /// The freeze was asked: outcomes are being settled.
    freezing: bool,
}

impl ShardFilter {
    /// `workers`: the arbiters guild actors run on (spread by guild id); empty means the
    /// filter's own.
    pub fn new(
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

    /// Follows this pod's own (committed) sessions' stream during a rescale: the anchors that
    /// pass, each group's last anchor and count since; and says whether a leaving guild's
    /// event is still to be applied (its group's anchor has not passed yet).
    fn before_anchor(&mut self, event: &GuildEvent, route: Route) -> bool {
        let dispatch = &event.dispatch;
        let own_stream = event.source_epoch == self.ownership.sessions_epoch;
        let identity = anchor::identity(&dispatch.event).filter(|_| own_stream);
        if let Some(identity) = identity {
            self.recent.insert(identity);
        }
        let (Some(handover), Some(next)) = (&mut self.handover, self.ownership.next) else {
            return false;
        };
        let now = &self.ownership;
        if own_stream {
            if let Some(identity) = identity {
                for anchor in handover.waiting.remove(&identity).unwrap_or_default() {
                    handover.pending.remove(&anchor.group);
                    handover.outcomes.push(AnchorOutcome {
                        source: now.ordinal,
                        anchor,
                        skip: 0,
                        passed: true,
                    });
                }
            }
            // What the group's new owner captures of it: counted from its last anchor.
            if let Some(guild) = dispatch.guild_id.filter(|_| capturable(dispatch)) {
                let to = next.layout.owner(guild.0);
                if now.incoming_to(to, guild.0) {
                    let group = Group::of(guild.0, &now.layout, &next.layout);
                    match identity {
                        Some(identity) => {
                            handover.last.insert(group, (identity, 0));
                        }
                        None => {
                            if let Some(last) = handover.last.get_mut(&group) {
                                last.1 += 1;
                            }
                        }
                    }
                }
            }
        }
        match (route, dispatch.guild_id) {
            (Route::Frozen, Some(guild)) => {
                handover
                    .pending
                    .contains(&Group::of(guild.0, &now.layout, &next.layout))
            }
            _ => false,
        }
    }

    /// Whether this pod gives away guilds of `group`, and reads the stream its anchor is in.
    fn waits_for(&self, group: &Group) -> bool {
        let Some(next) = self.ownership.next else {
            return false;
        };
        let now = &self.ownership;
        if anchor::shared_streams(&now.layout, &next.layout) {
            now.layout
                .sessions(now.ordinal)
                .iter()
                .any(|s| u64::from(s[0]) == group.key)
        } else {
            now.outgoing(group.key) && next.layout.owner(group.key) == group.to
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

impl ShardFilter {
    /// The capture-log append of an event, if it stores anything.
    fn capture_op(
        &self,
        dispatch: &crate::domain::event::Dispatch,
        received_ms: i64,
    ) -> Option<Op> {
        let (Some(payload), Some(guild_id)) = (&dispatch.payload, dispatch.guild_id) else {
            return None;
        };
        capturable(dispatch).then(|| Op::Capture {
            guild_id,
            seq: dispatch.seq,
            kind: dispatch.kind.name(),
            payload: payload.clone(),
            received_ms,
        })
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

    /// Re-applies the capture log (after the writer committed every capture sent so far) and
    /// marks the incoming guilds live (`live`): no event can come between, the filter waits
    /// meanwhile. A guild's events before its group's anchor are skipped when its old owner
    /// passed that anchor (it applied them). If the log cannot be read, nothing changes.
    /// Answers (re-applied, skipped).
    fn go_live(
        &mut self,
        live: Ownership,
        ctx: &mut Context<Self>,
    ) -> Result<(usize, usize), String> {
        let conn = self.deps.reads.get().map_err(|e| e.to_string())?;
        let captured = event_log::captured(&conn).map_err(|e| e.to_string())?;
        let anchors = handoff::anchors_for(&conn, live.ordinal).map_err(|e| e.to_string())?;
        // Waiting moderation items the old owners handed over precede their freeze points:
        // they come first, never skipped.
        let handed =
            event_log::handed_over(&conn, |g| live.incoming(g)).map_err(|e| e.to_string())?;
        drop(conn);
        let handed_count = handed.len();
        // A guild handed to this pod through its own new sessions keeps its actor: it stops
        // handing its waiting items over (everything before the freeze point is done).
        for (guild_id, entry) in &self.guilds {
            if live.incoming(guild_id.0) {
                entry.addr.do_send(TakeOver);
            }
        }
        let captured: Vec<_> = handed
            .into_iter()
            .chain(captured)
            .map(|c| {
                let dispatch = decode_dispatch(&c.kind, c.seq, &c.payload);
                (c, dispatch)
            })
            .collect();
        let mut skip = vec![false; handed_count];
        skip.extend(before_anchors(&captured[handed_count..], &anchors, &live));
        let skipped = skip.iter().filter(|&&s| s).count();
        self.ownership = live;
        let mut replayed = 0;
        for ((c, dispatch), skipped) in captured.into_iter().zip(skip) {
            if skipped {
                continue;
            }
            replayed += 1;
            match dispatch {
                Ok(dispatch) => {
                    // No seq: the log's are older than what this pod has received since.
                    let ticket = self.progress.admit_now(None);
                    self.deliver(
                        GuildEvent {
                            ticket,
                            dispatch,
                            source_epoch: 0,
                            received_ms: c.received_ms.unwrap_or_else(crate::domain::time::now_ms),
                        },
                        ctx,
                    );
                }
                // It was decoded once before it was captured: this is a bug, said loudly.
                Err(e) => {
                    self.metrics.handler_errors.inc();
                    tracing::error!(error = %e, kind = c.kind, "a captured event no longer decodes");
                }
            }
        }
        Ok((replayed, skipped))
    }
}

/// For each captured event: whether its old owner applied it (see [`crate::domain::rescale::anchor`]).
fn before_anchors(
    captured: &[(event_log::Captured, Result<Dispatch, DecodeError>)],
    anchors: &[AnchorOutcome],
    live: &Ownership,
) -> Vec<bool> {
    let Some(next) = live.next else {
        return vec![false; captured.len()];
    };
    let log: Vec<(u64, Option<u64>)> = captured
        .iter()
        .map(|(c, dispatch)| {
            let identity = dispatch
                .as_ref()
                .ok()
                .and_then(|d| anchor::identity(&d.event));
            (c.guild_id, identity)
        })
        .collect();
    anchor::applied_by_old_owners(&log, anchors, &live.layout, &next.layout, |g| {
        live.layout.owner(g)
    })
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

/// Whether an event goes to the capture log (it stores something, for a guild).
fn capturable(dispatch: &crate::domain::event::Dispatch) -> bool {
    !matches!(dispatch.event, Event::Other)
        && dispatch.payload.is_some()
        && dispatch.guild_id.is_some()
}

/// Replace the ownership (a rescale was prepared, aborted, or a pod restarted mid-way).
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetOwnership(pub Ownership);

impl Handler<SetOwnership> for ShardFilter {
    type Result = ();
    fn handle(&mut self, msg: SetOwnership, _: &mut Self::Context) {
        self.ownership = msg.0;
        // An old owner follows its stream from the prepare on (see `before_anchor`).
        match (self.ownership.next, &self.handover) {
            (Some(_), None) => self.handover = Some(Handover::default()),
            (None, _) => self.handover = None,
            _ => {}
        }
    }
}

/// Stop applying the guilds this pod gives away, each group once its anchor has passed
/// (groups without one at once). [`SettleFreeze`] says when they all have.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Freeze {
    pub anchors: Vec<Anchor>,
}

impl Handler<Freeze> for ShardFilter {
    type Result = ();
    fn handle(&mut self, msg: Freeze, _: &mut Self::Context) {
        if let Some(next) = &mut self.ownership.next {
            next.frozen = true;
        }
        let relevant: Vec<Anchor> = msg
            .anchors
            .into_iter()
            .filter(|a| self.waits_for(&a.group))
            .collect();
        let ordinal = self.ownership.ordinal;
        let recent = &self.recent;
        let handover = self.handover.get_or_insert_with(Handover::default);
        handover.freezing = true;
        for anchor in relevant {
            if handover.pending.contains(&anchor.group)
                || handover
                    .outcomes
                    .iter()
                    .any(|o| o.anchor.group == anchor.group)
            {
                continue;
            }
            if recent.contains(anchor.identity) {
                // Already past the new owner's anchor: frozen here, after the last anchor
                // event of the group and what followed it.
                let outcome = match handover.last.get(&anchor.group) {
                    Some(&(identity, since)) => AnchorOutcome {
                        source: ordinal,
                        anchor: Anchor {
                            group: anchor.group,
                            identity,
                        },
                        skip: since + 1,
                        passed: true,
                    },
                    None => AnchorOutcome {
                        source: ordinal,
                        anchor,
                        skip: 0,
                        passed: false,
                    },
                };
                handover.outcomes.push(outcome);
            } else {
                handover.pending.insert(anchor.group);
                handover
                    .waiting
                    .entry(anchor.identity)
                    .or_default()
                    .push(anchor);
            }
        }
    }
}

/// Ends a freeze's wait for its anchors once all have passed, or now (`give_up`: the groups
/// still waiting are frozen without theirs, and their new owners re-apply their whole log).
/// Answers `None` while anchors are pending, else the progress mark before which every event
/// of the leaving guilds was accepted, and what became of each anchor. Waiting moderation
/// events of the leaving guilds are handed over unresolved ([`HandOverWaiting`]): their new
/// owner pairs them with the counterparts that come after the freeze point.
#[derive(Message)]
#[rtype(result = "Option<(u64, Vec<AnchorOutcome>)>")]
pub struct SettleFreeze {
    pub give_up: bool,
}

impl Handler<SettleFreeze> for ShardFilter {
    type Result = Option<(u64, Vec<AnchorOutcome>)>;
    fn handle(&mut self, msg: SettleFreeze, _: &mut Self::Context) -> Self::Result {
        // No rescale state (cannot happen while a freeze is asked): nothing to wait for.
        let Some(handover) = self.handover.as_mut() else {
            return Some((self.progress.mark(), Vec::new()));
        };
        if !handover.freezing || (!handover.pending.is_empty() && !msg.give_up) {
            return None;
        }
        let ordinal = self.ownership.ordinal;
        let mut outcomes = std::mem::take(&mut handover.outcomes);
        for anchor in handover.waiting.drain().flat_map(|(_, anchors)| anchors) {
            outcomes.push(AnchorOutcome {
                source: ordinal,
                anchor,
                skip: 0,
                passed: false,
            });
        }
        self.handover = None;
        let now = self.ownership;
        for (guild_id, entry) in &self.guilds {
            if now.outgoing(guild_id.0) {
                entry.addr.do_send(HandOverWaiting);
            }
        }
        Some((self.progress.mark(), outcomes))
    }
}

/// The incoming guilds' rows are imported: re-apply the capture log and go live. Answers how
/// many captured events were re-applied, and how many were skipped (their old owner applied
/// them before its anchor).
#[derive(Message)]
#[rtype(result = "Result<(usize, usize), String>")]
pub struct GoLive(pub Ownership);

impl Handler<GoLive> for ShardFilter {
    type Result = ResponseFuture<Result<(usize, usize), String>>;
    fn handle(&mut self, msg: GoLive, ctx: &mut Self::Context) -> Self::Result {
        let (done, result) = tokio::sync::oneshot::channel();
        // An empty save: it commits every capture queued before it. `wait` holds every other
        // message (new events) until the log is re-applied.
        let committed = self.deps.writer.addr.send(Handoff::Save(msg.0));
        ctx.wait(
            async move { committed.await.map_err(|e| e.to_string())? }
                .into_actor(self)
                .map(move |saved: Result<(), String>, act, ctx| {
                    let replayed = saved.and_then(|()| act.go_live(msg.0, ctx));
                    let _ = done.send(replayed);
                }),
        );
        Box::pin(async move {
            result
                .await
                .unwrap_or_else(|_| Err("the shard filter stopped".into()))
        })
    }
}

/// The epoch commits (delete what was given away, persist, apply the new layout), or the
/// change is aborted before any freeze (`give_away: false`: every row stays).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Commit {
    pub ownership: Ownership,
    pub give_away: bool,
}

impl Handler<Commit> for ShardFilter {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, msg: Commit, ctx: &mut Self::Context) -> Self::Result {
        let before = self.ownership;
        let give_away = msg.give_away;
        let gone = move |g: u64| give_away && before.outgoing(g) && !before.incoming(g);
        let committed = self
            .deps
            .writer
            .addr
            .send(Handoff::Commit(msg.ownership, Box::new(gone)));
        let (done, result) = tokio::sync::oneshot::channel();
        // `wait`: no event is routed until the writer committed (every capture sent before is
        // committed first); then the new ownership applies, or, if the commit failed, the old
        // one goes on as before.
        ctx.wait(
            async move { committed.await.map_err(|e| e.to_string())? }
                .into_actor(self)
                .map(move |result: Result<(), String>, act, _| {
                    if result.is_ok() {
                        act.ownership = msg.ownership;
                        act.handover = None;
                        // The actors of guilds given away hold state that a later return
                        // must not find.
                        let leaving: Vec<Id> =
                            act.guilds.keys().copied().filter(|g| gone(g.0)).collect();
                        for guild_id in leaving {
                            if let Some(entry) = act.guilds.remove(&guild_id) {
                                entry.addr.do_send(Stop);
                            }
                        }
                    }
                    let _ = done.send(result);
                }),
        );
        Box::pin(async move {
            result
                .await
                .unwrap_or_else(|_| Err("the shard filter stopped".into()))
        })
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
