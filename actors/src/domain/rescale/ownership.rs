//! Who owns a guild while the pod count (or the strategy) changes under live traffic.
//!
//! Each pod persists its [`Ownership`]: the committed [`Layout`] with its epoch, and the
//! [`Transition`] to the next one while a rescale runs. A transition moves every guild whose
//! owner changes, and on a pod whose Discord sessions change (a new shard count, a strategy
//! switch, a standby pod joining or a pod leaving) every guild it holds, because its events
//! will come from other sessions:
//!
//! 1. *capture*: the new owner writes the incoming guilds' events to a durable log instead of
//!    applying them (from its own sessions, or from the new sessions it opened beside the old);
//! 2. *freeze*: after a margin for the skew between sessions, the old owner stops applying the
//!    outgoing guilds' events (they are in the new owner's log) and commits what it accepted;
//! 3. *live*: the new owner imports the guilds' rows as of the freeze, re-applies its log in
//!    order (an overlapping suffix of what the old owner applied: the writes are idempotent,
//!    so it converges), and from then on applies their events;
//! 4. *commit*: the epoch moves on; the old owner deletes the rows it gave away.
//!
//! The invariant: at most one pod writes a guild's rows at any time (the old owner until its
//! freeze has committed, the new owner only after its import), and every event is applied on
//! the final owner (applied before the freeze and exported, or captured and re-applied).

use crate::domain::partition::{Partition, Strategy};
use serde::Serialize;

/// How guilds map to pods: what every pod and the HTTP services must agree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub pods: u32,
    pub strategy: Strategy,
    /// The bot's Discord shard count.
    pub shards: u32,
}

impl Layout {
    pub fn of(sharding: &Partition) -> Layout {
        Layout {
            pods: sharding.pods,
            strategy: sharding.strategy,
            shards: sharding.shards,
        }
    }

    /// Pod `ordinal`'s view of this layout.
    pub fn sharding(&self, ordinal: u32) -> Partition {
        Partition {
            strategy: self.strategy,
            ordinal,
            pods: self.pods,
            shards: self.shards,
        }
    }

    /// The Discord sessions (`[shard, total]`) pod `ordinal` runs: none on a standby pod (an
    /// ordinal at or past the pod count owns nothing).
    pub fn sessions(&self, ordinal: u32) -> Vec<[u32; 2]> {
        if ordinal >= self.pods {
            return Vec::new();
        }
        self.sharding(ordinal)
            .pod_shards()
            .into_iter()
            .map(|s| [s, self.shards])
            .collect()
    }

    /// The owner of a guild.
    pub fn owner(&self, guild_id: u64) -> u32 {
        self.sharding(0).owner(guild_id)
    }
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pods, {}, {} shards",
            self.pods, self.strategy, self.shards
        )
    }
}

/// A change of layout in progress, as one pod sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub epoch: u64,
    pub layout: Layout,
    /// This pod no longer applies the guilds it gives away (and what it had accepted for them
    /// is committed): they may be exported.
    pub frozen: bool,
    /// This pod imported the guilds it receives and applies their events.
    pub live: bool,
    /// The id of the `rescale` operation that prepared it: one operation at a time, so a
    /// second command is refused with this id (0: prepared by a release without ids).
    pub operation: u64,
}

/// One pod's ownership: the committed layout and the transition under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Ownership {
    pub ordinal: u32,
    pub epoch: u64,
    pub layout: Layout,
    /// The epoch of the Discord sessions this pod applies events from: the committed layout's
    /// (the epoch of the last rescale that changed this pod's sessions). Events of any other
    /// sessions (a set being closed after a commit or an abort) are not applied.
    pub sessions_epoch: u64,
    pub next: Option<Transition>,
}

/// What the shard filter does with one guild's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Apply it (this pod owns the guild and it comes from the sessions that feed it).
    Apply,
    /// Write it to the capture log only (the guild is coming here and is not live yet).
    Capture,
    /// Apply it and keep it in the capture log too, until the epoch commits: a restart before
    /// then re-applies the whole log, an overlapping suffix, rather than a part of it.
    CaptureAndApply,
    /// The guild is leaving this pod and is frozen: the new owner captured it.
    Frozen,
    /// Another pod's guild (or sessions this pod does not read the guild from).
    Foreign,
}

impl Ownership {
    /// A pod that has never taken part in a rescale: epoch 1 of `sharding`.
    pub(crate) fn initial(sharding: &Partition) -> Ownership {
        Ownership {
            ordinal: sharding.ordinal,
            epoch: 1,
            layout: Layout::of(sharding),
            sessions_epoch: 1,
            next: None,
        }
    }

    /// The committed layout from this pod's side.
    pub fn sharding(&self) -> Partition {
        self.layout.sharding(self.ordinal)
    }

    /// Whether this pod's Discord sessions differ between the two layouts: then every guild
    /// it holds changes sessions, and is handed over as if it moved.
    pub fn sessions_change(&self) -> bool {
        self.next
            .is_some_and(|t| t.layout.sessions(self.ordinal) != self.layout.sessions(self.ordinal))
    }

    pub(crate) fn owns_now(&self, guild_id: u64) -> bool {
        self.ordinal < self.layout.pods && self.layout.owner(guild_id) == self.ordinal
    }

    /// The guild is handed to this pod by the transition.
    pub fn incoming(&self, guild_id: u64) -> bool {
        self.incoming_to(self.ordinal, guild_id)
    }

    /// The guild is handed to pod `ordinal` by the transition (which captures its events).
    pub(crate) fn incoming_to(&self, ordinal: u32, guild_id: u64) -> bool {
        let Some(next) = self.next else { return false };
        let owns_next = ordinal < next.layout.pods && next.layout.owner(guild_id) == ordinal;
        let owns_now = ordinal < self.layout.pods && self.layout.owner(guild_id) == ordinal;
        let sessions_change = next.layout.sessions(ordinal) != self.layout.sessions(ordinal);
        owns_next && (sessions_change || !owns_now)
    }

    /// The guild is handed away by this pod (possibly to itself, through new sessions).
    pub fn outgoing(&self, guild_id: u64) -> bool {
        let Some(next) = self.next else { return false };
        let owns_next =
            self.ordinal < next.layout.pods && next.layout.owner(guild_id) == self.ordinal;
        self.owns_now(guild_id) && (self.sessions_change() || !owns_next)
    }

    /// Guild-less events (DMs) belong to pod 0 under every layout.
    pub(crate) fn owns_guildless(&self) -> bool {
        self.ordinal == 0
    }

    /// The ownership once `next` commits.
    pub fn committed(&self) -> Option<Ownership> {
        let next = self.next?;
        Some(Ownership {
            ordinal: self.ordinal,
            epoch: next.epoch,
            layout: next.layout,
            sessions_epoch: if self.sessions_change() {
                next.epoch
            } else {
                self.sessions_epoch
            },
            next: None,
        })
    }

    /// Where a guild's event goes. `source_epoch` is the epoch of the sessions that delivered
    /// it: the committed sessions' events feed the committed owners, and while this pod's
    /// sessions change, the new sessions' feed the incoming guilds.
    pub fn route(&self, guild_id: u64, source_epoch: u64) -> Route {
        let from_old = source_epoch == self.sessions_epoch;
        let Some(next) = self.next else {
            return if from_old && self.owns_now(guild_id) {
                Route::Apply
            } else {
                Route::Foreign
            };
        };
        let from_new = if self.sessions_change() {
            source_epoch == next.epoch
        } else {
            from_old
        };
        if self.incoming(guild_id) {
            if from_new {
                return if next.live {
                    Route::CaptureAndApply
                } else {
                    Route::Capture
                };
            }
        } else if self.owns_now(guild_id) && from_old && !self.outgoing(guild_id) {
            return Route::Apply;
        }
        if self.outgoing(guild_id) && from_old {
            return if next.frozen {
                Route::Frozen
            } else {
                Route::Apply
            };
        }
        Route::Foreign
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(strategy: Strategy, pods: u32, shards: u32) -> Layout {
        Layout {
            pods,
            strategy,
            shards,
        }
    }

    fn moving(ordinal: u32, from: Layout, to: Layout, frozen: bool, live: bool) -> Ownership {
        Ownership {
            ordinal,
            epoch: 1,
            layout: from,
            sessions_epoch: 1,
            next: Some(Transition {
                epoch: 2,
                layout: to,
                frozen,
                live,
                operation: 7,
            }),
        }
    }

    /// Over every phase and many guilds: exactly one pod applies a guild's event from the
    /// sessions of each phase, and an event no pod applies is captured by the new owner.
    #[test]
    fn one_writer_and_nothing_dropped_in_every_phase() {
        let cases = [
            (layout(Strategy::Md5, 3, 1), layout(Strategy::Md5, 5, 1)),
            (layout(Strategy::Md5, 5, 1), layout(Strategy::Md5, 2, 1)),
            (
                layout(Strategy::Discord, 3, 3),
                layout(Strategy::Discord, 5, 5),
            ),
            (layout(Strategy::Md5, 3, 1), layout(Strategy::Discord, 3, 3)),
        ];
        for (from, to) in cases {
            let pods = from.pods.max(to.pods);
            for (frozen, live) in [(false, false), (true, false), (true, true)] {
                for guild in (0..300u64).map(|g| (g * 7919 + 13) << 22 | g) {
                    let routes: Vec<(Route, Route)> = (0..pods)
                        .map(|k| {
                            // A pod's old sessions are epoch 1's; its new ones epoch 2's if
                            // its sessions change, else the same sessions again.
                            let o = moving(k, from, to, frozen, live);
                            let new = if o.sessions_change() { 2 } else { 1 };
                            (o.route(guild, 1), o.route(guild, new))
                        })
                        .collect();
                    let applying = |r: Route| matches!(r, Route::Apply | Route::CaptureAndApply);
                    // An event reaches every pod's old sessions (if any) and new sessions.
                    let appliers = routes
                        .iter()
                        .filter(|(old, new)| applying(*old) || applying(*new))
                        .count();
                    let captured = routes.iter().any(|(o, n)| {
                        matches!(o, Route::Capture | Route::CaptureAndApply)
                            || matches!(n, Route::Capture | Route::CaptureAndApply)
                    });
                    assert!(appliers <= 1, "{from} -> {to}: two writers for {guild}");
                    if !live {
                        assert!(
                            appliers == 1 || captured,
                            "{from} -> {to} (frozen {frozen}): guild {guild} neither applied nor captured"
                        );
                    }
                    let owner = to.owner(guild);
                    if live && from.owner(guild) != owner {
                        assert!(applying(routes[owner as usize].1), "live owner applies");
                    }
                    if live {
                        // Committed: exactly the new owner applies, from the sessions it
                        // keeps; the closing set's late events are nobody's.
                        let appliers: Vec<(u32, u64)> = (0..pods)
                            .filter_map(|k| moving(k, from, to, true, true).committed())
                            .flat_map(|o| [1, 2].map(|e| (o, e)))
                            .filter(|(o, e)| o.route(guild, *e) == Route::Apply)
                            .map(|(o, e)| (o.ordinal, e))
                            .collect();
                        let kept = moving(owner, from, to, true, true)
                            .committed()
                            .map_or(0, |o| o.sessions_epoch);
                        assert_eq!(appliers, vec![(owner, kept)], "{from} -> {to}: {guild}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_standby_pod_runs_no_session() {
        let l = layout(Strategy::Md5, 3, 2);
        assert!(l.sessions(3).is_empty());
        assert_eq!(l.sessions(1), vec![[0, 2], [1, 2]]);
        let o = moving(3, l, layout(Strategy::Md5, 5, 2), false, false);
        assert!(o.sessions_change());
    }
}
