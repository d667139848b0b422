//! The old owner's side of a live rescale's exact hand-over
//! ([`crate::domain::rescale::anchor`]): after the freeze, the leaving guilds of each group are
//! still applied until the group's anchor event passes in this pod's own stream, so the pod
//! applies exactly what precedes the point where the new owner's log takes over, however far
//! behind its sessions it runs. [`SettleFreeze`] ends the wait.

use super::rescale::capturable;
use super::ShardFilter;
use crate::actors::guild::HandOverWaiting;
use crate::actors::inbox::GuildEvent;
use crate::domain::rescale::anchor::{self, Anchor, AnchorOutcome, Group};
use crate::domain::rescale::ownership::Route;
use actix::prelude::*;
use std::collections::HashMap;

/// The last [`MAX_RECENT`] anchor identities, for membership.
#[derive(Default)]
pub(super) struct RecentAnchors {
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
pub(super) struct Handover {
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
    /// Follows this pod's own (committed) sessions' stream during a rescale: the anchors that
    /// pass, each group's last anchor and count since; and says whether a leaving guild's
    /// event is still to be applied (its group's anchor has not passed yet).
    pub(super) fn before_anchor(&mut self, event: &GuildEvent, route: Route) -> bool {
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
}

/// Stop applying the guilds this pod gives away, each group once its anchor has passed
/// (groups without one at once). [`SettleFreeze`] says when they all have.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Freeze {
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
pub(crate) struct SettleFreeze {
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
