//! The live-rescale steps as the pod's handle runs them: prepare (capture the incoming guilds),
//! freeze (stop applying the leaving ones, up to their anchors), export and import (hand the
//! frozen guilds over and take them over), then commit or abort. One step runs at a time
//! (`Pipeline::handoff`), and each is persisted through the writer before it takes effect, so
//! a restart resumes in the same step.

use super::Pipeline;
use crate::actors::filter::handover::{Freeze, SettleFreeze};
use crate::actors::filter::rescale::{Commit, GoLive, RescaleError, SetOwnership};
use crate::actors::writer::handoff::Handoff;
use crate::domain::rescale::anchor::Anchor;
use crate::domain::rescale::ownership::{Layout, Ownership, Transition};
use crate::storage::rescale::{handoff, HandoffError};
use std::path::PathBuf;
use std::time::Duration;

/// How a freeze went: how long the pod applied leaving guilds while it waited for their
/// anchors, and how many anchors passed (exact handoff) or not (frozen without, reported).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct FreezeReport {
    pub drain_ms: u64,
    pub anchors_passed: usize,
    pub anchors_missed: usize,
}

impl Pipeline {
    /// This new owner's anchors for the rescale to `epoch`: each group's first anchor event in
    /// its capture log (see [`crate::domain::rescale::anchor`]). The old owners freeze at them.
    pub async fn anchors(&self, epoch: u64) -> Result<Vec<Anchor>, RescaleError> {
        let (now, next) = self.transition(epoch)?;
        let database = self.database.clone();
        let captured = tokio::task::spawn_blocking(move || {
            let conn = rusqlite::Connection::open_with_flags(
                &database,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            crate::storage::rescale::event_log::captured(&conn)
        })
        .await?
        .map_err(HandoffError::sql("reading the capture log"))?;
        Ok(crate::domain::rescale::anchor::anchors_of(
            captured.iter().map(|c| {
                let event = crate::domain::event::decode_dispatch(&c.kind, c.seq, &c.payload);
                let identity = event
                    .ok()
                    .and_then(|d| crate::domain::rescale::anchor::identity(&d.event));
                (c.guild_id, identity)
            }),
            &now.layout,
            &next.layout,
        ))
    }

    async fn save(&self, ownership: Ownership) -> Result<(), RescaleError> {
        self.writer
            .send(Handoff::Save(ownership))
            .await
            .map_err(|_| RescaleError::Gone("writer"))?
            .map_err(RescaleError::from)
    }

    /// The transition of `epoch`, or why there is none.
    fn transition(&self, epoch: u64) -> Result<(Ownership, Transition), RescaleError> {
        let now = self.ownership();
        match now.next {
            Some(next) if next.epoch == epoch => Ok((now, next)),
            Some(next) => Err(RescaleError::Conflict(format!(
                "pod {} is in the rescale to epoch {} ({}), not {epoch}",
                now.ordinal, next.epoch, next.layout
            ))),
            None => Err(RescaleError::Conflict(format!(
                "pod {} has no rescale under way (committed epoch {}: {})",
                now.ordinal, now.epoch, now.layout
            ))),
        }
    }

    /// Step 1: start capturing the guilds that come here under `layout` (epoch `epoch`), from
    /// the cluster's `from` layout (epoch `epoch - 1`). A standby pod that owns nothing takes
    /// `from` as its own (it may have started on a fresh volume after the last rescale).
    pub async fn prepare(
        &self,
        epoch: u64,
        layout: Layout,
        from: Layout,
        operation: u64,
    ) -> Result<Ownership, RescaleError> {
        let _one = self.handoff.lock().await;
        let mut now = self.ownership();
        let standby = |o: &Ownership, l: &Layout| o.ordinal >= l.pods;
        match now.next {
            Some(next)
                if next.epoch == epoch && next.layout == layout && next.operation == operation =>
            {
                return Ok(now)
            }
            Some(next) => {
                return Err(RescaleError::Conflict(format!(
                    "pod {} holds operation {:016x}, a rescale to epoch {} ({}); one operation at a time: finish it (`guild-gateway rescale`) or abort it (`--abort`)",
                    now.ordinal, next.operation, next.epoch, next.layout
                )))
            }
            None if now.epoch == epoch && now.layout == layout => return Ok(now),
            None if now.epoch + 1 == epoch && now.layout == from => {}
            None if standby(&now, &now.layout) && standby(&now, &from) => {
                now.epoch = epoch - 1;
                now.layout = from;
            }
            _ => {
                return Err(RescaleError::Conflict(format!(
                    "pod {} cannot prepare epoch {epoch} ({layout}): committed epoch {} ({}), under way: {}",
                    now.ordinal,
                    now.epoch,
                    now.layout,
                    now.next.map_or("none".into(), |t| format!("epoch {} ({})", t.epoch, t.layout))
                )))
            }
        }
        let prepared = Ownership {
            next: Some(Transition {
                epoch,
                layout,
                frozen: false,
                live: false,
                operation,
            }),
            ..now
        };
        self.save(prepared).await?;
        self.filter
            .send(SetOwnership(prepared))
            .await
            .map_err(|_| RescaleError::Gone("shard filter"))?;
        self.set_ownership(prepared);
        tracing::info!(epoch, %layout, "rescale prepared: capturing incoming guilds");
        Ok(prepared)
    }

    /// Step 2: stop applying the guilds that leave, and commit what was accepted for them.
    /// The freeze is persisted first, so that no crash can bring back a pod that applies them
    /// again, nor allow an abort after the filter dropped one of their events.
    ///
    /// `anchors` (the new owners' [`crate::domain::rescale::anchor`]s): each group's leaving guilds are applied
    /// until its anchor passes in this pod's stream, for at most `drain`; a group whose anchor
    /// has not passed by then is frozen without it (reported: its new owner re-applies its
    /// whole log, as with a margin alone).
    pub async fn freeze(
        &self,
        epoch: u64,
        anchors: Vec<Anchor>,
        drain: Duration,
        limit: Duration,
    ) -> Result<(Ownership, FreezeReport), RescaleError> {
        let _one = self.handoff.lock().await;
        let (now, next) = self.transition(epoch)?;
        let frozen = Ownership {
            next: Some(Transition {
                frozen: true,
                ..next
            }),
            ..now
        };
        let mut report = FreezeReport::default();
        if !next.frozen {
            self.save(frozen).await?;
            self.set_ownership(frozen);
            report = self.freeze_to_anchors(anchors, drain).await?;
            if report.anchors_missed > 0 {
                tracing::warn!(epoch, missed = report.anchors_missed, drain_ms = report.drain_ms,
                    "rescale: some anchors did not pass within the drain limit; their groups are frozen as of now and re-applied whole by their new owners");
            }
            self.count_leaving(now).await;
            tracing::info!(
                epoch,
                passed = report.anchors_passed,
                drain_ms = report.drain_ms,
                "rescale: outgoing guilds frozen"
            );
        }
        self.frozen_committed(limit).await?;
        Ok((frozen, report))
    }

    /// Has the filter freeze the leaving guilds at `anchors` (applying each group's until its
    /// anchor passes, for at most `drain`), records the outcomes through the writer and this
    /// process's freeze mark.
    async fn freeze_to_anchors(
        &self,
        anchors: Vec<Anchor>,
        drain: Duration,
    ) -> Result<FreezeReport, RescaleError> {
        let gone = |_| RescaleError::Gone("shard filter");
        self.filter.send(Freeze { anchors }).await.map_err(gone)?;
        let draining = std::time::Instant::now();
        let (mark, outcomes) = loop {
            let give_up = draining.elapsed() >= drain;
            if let Some(settled) = self
                .filter
                .send(SettleFreeze { give_up })
                .await
                .map_err(gone)?
            {
                break settled;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let report = FreezeReport {
            drain_ms: draining.elapsed().as_millis() as u64,
            anchors_passed: outcomes.iter().filter(|o| o.passed).count(),
            anchors_missed: outcomes.iter().filter(|o| !o.passed).count(),
        };
        self.writer
            .send(Handoff::Anchors(outcomes))
            .await
            .map_err(|_| RescaleError::Gone("writer"))?
            .map_err(RescaleError::from)?;
        *self.freeze_mark.lock().unwrap_or_else(|p| p.into_inner()) = Some(mark);
        Ok(report)
    }

    /// Sets the gauge of guilds still to leave; a failed count only leaves the gauge as it was.
    async fn count_leaving(&self, now: Ownership) {
        let database = self.database.clone();
        let leaving = tokio::task::spawn_blocking(move || {
            handoff::count_guilds(&database, move |g| now.outgoing(g) && !now.incoming(g))
        })
        .await;
        if let Ok(Ok(leaving)) = leaving {
            self.metrics.rescale_guilds_remaining.set(leaving);
        }
    }

    /// Waits until every event accepted before this process's freeze is done (at once after
    /// a restart: the filter started frozen).
    async fn frozen_committed(&self, limit: Duration) -> Result<(), RescaleError> {
        let mark = *self.freeze_mark.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mark) = mark {
            tokio::time::timeout(limit, self.progress.wait_before(mark))
                .await
                .map_err(|_| RescaleError::NotCommitted(limit))?;
        }
        Ok(())
    }

    /// Step 3 (on the old owner): a database of the frozen guilds that go to pod `to`.
    pub async fn export(&self, epoch: u64, to: u32, out: PathBuf) -> Result<(), RescaleError> {
        let (now, next) = self.transition(epoch)?;
        if !next.frozen {
            return Err(RescaleError::Conflict(format!(
                "pod {} is not frozen for epoch {epoch}",
                now.ordinal
            )));
        }
        let database = self.database.clone();
        let moves =
            move |g: u64| now.outgoing(g) && next.layout.owner(g) == to && to != now.ordinal;
        tokio::task::spawn_blocking(move || handoff::export(&database, &out, to, moves))
            .await?
            .map_err(|source| {
                HandoffError::Export {
                    to,
                    source: Box::new(source),
                }
                .into()
            })
    }

    /// Step 3 (on the new owner): import the exported `files`, re-apply the capture log (from
    /// each passed anchor on: what precedes it the old owner applied), and apply the incoming
    /// guilds' events from now on. `frozen_at`: when the freeze began, for the pause metric.
    /// Answers the guilds imported, the events re-applied and those skipped.
    pub async fn import(
        &self,
        epoch: u64,
        files: Vec<PathBuf>,
        frozen_at: Option<std::time::SystemTime>,
    ) -> Result<(Ownership, u64, usize, usize), RescaleError> {
        let _one = self.handoff.lock().await;
        let (now, next) = self.transition(epoch)?;
        if next.live {
            return Ok((now, 0, 0, 0));
        }
        let live = Ownership {
            next: Some(Transition { live: true, ..next }),
            ..now
        };
        let mut guilds = 0;
        for file in &files {
            guilds += handoff::guild_count(file).unwrap_or(0);
        }
        self.writer
            .send(Handoff::Import(files, live))
            .await
            .map_err(|_| RescaleError::Gone("writer"))?
            .map_err(RescaleError::from)?;
        let (replayed, skipped) = self
            .filter
            .send(GoLive(live))
            .await
            .map_err(|_| RescaleError::Gone("shard filter"))??;
        self.set_ownership(live);
        self.metrics.rescale_guilds_moved.inc_by(guilds);
        if let Some(pause) = frozen_at.and_then(|t| t.elapsed().ok()) {
            for _ in 0..guilds {
                self.metrics
                    .rescale_pause_seconds
                    .observe(pause.as_secs_f64());
            }
        }
        tracing::info!(
            epoch,
            guilds,
            replayed,
            skipped,
            "rescale: incoming guilds imported and live"
        );
        Ok((live, guilds, replayed, skipped))
    }

    /// Step 4: the new layout is this pod's; the rows it gave away are deleted.
    pub async fn commit(&self, epoch: u64) -> Result<Ownership, RescaleError> {
        let _one = self.handoff.lock().await;
        let now = self.ownership();
        if now.next.is_none() && now.epoch == epoch {
            return Ok(now);
        }
        let (now, next) = self.transition(epoch)?;
        let gives = now.ordinal < now.layout.pods;
        let takes = now.ordinal < next.layout.pods;
        if (gives && !next.frozen) || (takes && !next.live) {
            return Err(RescaleError::Conflict(format!(
                "pod {} cannot commit epoch {epoch}: frozen {}, live {}",
                now.ordinal, next.frozen, next.live
            )));
        }
        let Some(committed) = now.committed() else {
            return Err(RescaleError::Conflict("no rescale under way".into()));
        };
        self.commit_as(committed, true).await?;
        tracing::info!(epoch, layout = %next.layout, "rescale committed");
        Ok(committed)
    }

    /// Gives up a rescale before this pod froze anything: the capture log is dropped.
    /// Cancels the transition to `epoch` (of `operation`, when given) before any freeze.
    pub async fn abort(
        &self,
        epoch: u64,
        operation: Option<u64>,
    ) -> Result<Ownership, RescaleError> {
        let _one = self.handoff.lock().await;
        let (now, next) = self.transition(epoch)?;
        if let Some(op) = operation.filter(|&op| op != next.operation) {
            return Err(RescaleError::Conflict(format!(
                "pod {} holds operation {:016x}, not {op:016x}",
                now.ordinal, next.operation
            )));
        }
        if next.frozen || next.live || self.persisted_live {
            return Err(RescaleError::Conflict(format!(
                "pod {} is frozen or live for epoch {epoch}: after a freeze a rescale only rolls forward",
                now.ordinal
            )));
        }
        let back = Ownership { next: None, ..now };
        self.commit_as(back, false).await?;
        tracing::info!(epoch, "rescale aborted");
        Ok(back)
    }

    /// Ends the transition with `ownership`; `give_away`: delete the rows of the guilds that
    /// left (a commit), or keep every row (an abort).
    async fn commit_as(&self, ownership: Ownership, give_away: bool) -> Result<(), RescaleError> {
        self.filter
            .send(Commit {
                ownership,
                give_away,
            })
            .await
            .map_err(|_| RescaleError::Gone("shard filter"))??;
        self.set_ownership(ownership);
        // Only now does this pod's API serve the guilds it took: its relay's clients meet them.
        if let Some(feed) = self.relay_feed().filter(|_| give_away) {
            feed.open();
        }
        self.metrics.rescale_guilds_remaining.set(0);
        Ok(())
    }
}
