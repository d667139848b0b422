//! The new owner's side of a live rescale, and the ownership changes every pod goes through:
//! incoming guilds captured to the log until [`GoLive`] re-applies it, then [`Commit`] (or an
//! abort) ends the transition.

use super::handover::Handover;
use super::ShardFilter;
use crate::actors::guild::{Stop, TakeOver};
use crate::actors::inbox::GuildEvent;
use crate::actors::writer::handoff::Handoff;
use crate::actors::writer::SqliteWriter;
use crate::domain::event::{decode_dispatch, DecodeError, Dispatch, Id};
use crate::domain::op::Op;
use crate::domain::rescale::anchor::{self, AnchorOutcome};
use crate::domain::rescale::ownership::Ownership;
use crate::relay_feed::Relayed;
use crate::storage::relay_documents;
use crate::storage::rescale::{event_log, handoff, HandoffError};
use actix::prelude::*;
use std::time::Duration;

/// Why a rescale step was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RescaleError {
    /// Not in this state: another epoch, or a step out of order.
    #[error("{0}")]
    Conflict(String),
    /// The step failed in the database.
    #[error(transparent)]
    Handoff(#[from] HandoffError),
    /// An actor of the pipeline stopped (the pod is shutting down).
    #[error("the {0} is gone")]
    Gone(&'static str),
    #[error("the events accepted before the freeze were not committed within {0:?}")]
    NotCommitted(Duration),
    #[error("a blocking task failed")]
    Task(#[from] tokio::task::JoinError),
}

impl ShardFilter {
    /// The capture-log append of an event, if it stores anything.
    pub(super) fn capture_op(
        &self,
        dispatch: &crate::domain::event::Dispatch,
        received_ms: i64,
    ) -> Option<Op> {
        // The relay's form when there is one: what the new owner relays is what it captured.
        let payload = dispatch
            .relay_payload
            .as_ref()
            .or(dispatch.payload.as_ref());
        let (Some(payload), Some(guild_id)) = (payload, dispatch.guild_id) else {
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

    /// Re-applies the capture log (after the writer committed every capture sent so far) and
    /// marks the incoming guilds live (`live`): no event can come between, the filter waits
    /// meanwhile. A guild's events before its group's anchor are skipped when its old owner
    /// passed that anchor (it applied them). If the log cannot be read, nothing changes.
    /// Answers (re-applied, skipped).
    fn go_live(
        &mut self,
        live: Ownership,
        ctx: &mut Context<Self>,
    ) -> Result<(usize, usize), HandoffError> {
        let conn = self.deps.reads.get().map_err(HandoffError::Pool)?;
        let captured =
            event_log::captured(&conn).map_err(HandoffError::sql("reading the capture log"))?;
        let anchors = handoff::anchors_for(&conn, live.ordinal)
            .map_err(HandoffError::sql("reading the anchors"))?;
        // Waiting moderation items the old owners handed over precede their freeze points:
        // they come first, never skipped.
        let handed = event_log::handed_over(&conn, |g| live.incoming(g))
            .map_err(HandoffError::sql("reading the handed-over events"))?;
        let documents = match &self.deps.relay {
            Some(_) => relay_documents::load(&conn, |g| live.incoming(g))
                .map_err(HandoffError::sql("reading the relay's documents"))?,
            None => Vec::new(),
        };
        drop(conn);
        // The relay's clients meet each incoming guild (its rows are imported) before any of
        // its events this pod applies, once the commit makes it this pod's (see `relay_feed`).
        if let Some(feed) = &self.deps.relay {
            let documents = documents
                .into_iter()
                .map(|(guild_id, document)| Relayed {
                    guild_id: Some(guild_id),
                    kind: "GUILD_CREATE".into(),
                    data: document.into(),
                    received_ms: crate::domain::time::now_ms(),
                })
                .collect();
            feed.join(move |g| live.incoming(g), documents);
        }
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
        for (index, ((c, dispatch), skipped)) in captured.into_iter().zip(skip).enumerate() {
            if skipped {
                continue;
            }
            replayed += 1;
            match dispatch {
                Ok(dispatch) => {
                    // No seq: the log's are older than what this pod has received since.
                    let ticket = self.progress.admit_now(None);
                    let event = GuildEvent {
                        ticket,
                        dispatch,
                        source_epoch: 0,
                        received_ms: c.received_ms.unwrap_or_else(crate::domain::time::now_ms),
                    };
                    // This pod applies it as the owner: its relay sends it (the handed-over
                    // waiting events were relayed by the old owner when they came).
                    if index >= handed_count {
                        self.hold_for_relay(&event);
                    }
                    self.deliver(event, ctx);
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

/// Whether an event goes to the capture log: every event of a guild, since the new owner
/// applies and relays what its old owner did not (an interaction stores nothing and is still
/// the bot's to answer). Not a member request's answer: it goes to the one session that asked,
/// so the two owners' streams would not agree on it.
pub(super) fn capturable(dispatch: &crate::domain::event::Dispatch) -> bool {
    dispatch.payload.is_some()
        && dispatch.guild_id.is_some()
        && dispatch.name() != "GUILD_MEMBERS_CHUNK"
}

/// Replace the ownership (a rescale was prepared, aborted, or a pod restarted mid-way).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct SetOwnership(pub Ownership);

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

/// The incoming guilds' rows are imported: re-apply the capture log and go live. Answers how
/// many captured events were re-applied, and how many were skipped (their old owner applied
/// them before its anchor).
#[derive(Message)]
#[rtype(result = "Result<(usize, usize), RescaleError>")]
pub(crate) struct GoLive(pub Ownership);

impl Handler<GoLive> for ShardFilter {
    type Result = ResponseFuture<Result<(usize, usize), RescaleError>>;
    fn handle(&mut self, msg: GoLive, ctx: &mut Self::Context) -> Self::Result {
        let (done, result) = tokio::sync::oneshot::channel();
        // An empty save: it commits every capture queued before it. `wait` holds every other
        // message (new events) until the log is re-applied.
        let committed = self.deps.writer.addr.send(Handoff::Save(msg.0));
        ctx.wait(written(committed).into_actor(self).map(
            move |saved: Result<(), RescaleError>, act, ctx| {
                let replayed = saved.and_then(|()| Ok(act.go_live(msg.0, ctx)?));
                let _ = done.send(replayed);
            },
        ));
        Box::pin(async move {
            result
                .await
                .unwrap_or(Err(RescaleError::Gone("shard filter")))
        })
    }
}

/// The epoch commits (delete what was given away, persist, apply the new layout), or the
/// change is aborted before any freeze (`give_away: false`: every row stays).
#[derive(Message)]
#[rtype(result = "Result<(), RescaleError>")]
pub(crate) struct Commit {
    pub ownership: Ownership,
    pub give_away: bool,
}

impl Handler<Commit> for ShardFilter {
    type Result = ResponseFuture<Result<(), RescaleError>>;
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
        ctx.wait(written(committed).into_actor(self).map(
            move |result: Result<(), RescaleError>, act, _| {
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
            },
        ));
        Box::pin(async move {
            result
                .await
                .unwrap_or(Err(RescaleError::Gone("shard filter")))
        })
    }
}

/// The writer's answer to a rescale step, as the step's result.
async fn written(step: Request<SqliteWriter, Handoff>) -> Result<(), RescaleError> {
    Ok(step.await.map_err(|_| RescaleError::Gone("writer"))??)
}
