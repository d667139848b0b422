//! Where a moving guild's events pass from its old owner to its new one, exactly.
//!
//! A margin of wall-clock time cannot say it: an old owner that lags its sessions (its queues
//! under backpressure) may receive an event after its freeze that the new owner received
//! before it began capturing, and no one would apply it. So the handoff point is an event both
//! owners see in the same order: an *anchor*.
//!
//! - The new owner's capture log starts at some point of each stream. Its first event of an
//!   anchor kind (a message created or deleted, an audit log entry: each carries a unique
//!   snowflake, so its payload occurs once) in a [`Group`] is that group's anchor.
//! - The old owner goes on applying a group's guilds after the freeze request until the
//!   anchor passes in its own sessions' stream; from the anchor on, they are frozen. What it
//!   applied is exactly what precedes the anchor, whatever its lag.
//! - The new owner re-applies its log from the anchor on, skipping what precedes it (the old
//!   owner applied that): no event twice, none lost.
//!
//! A group is the stream both owners see in the same order. When the Discord shard count does
//! not change, the old and the new owner read a guild from sessions of the same shard, which
//! carry the shard's events in one order: the group is (new owner, shard), and any anchor
//! event of the shard serves every moving guild on it. When the shard count changes, only a
//! guild's own events keep their order across the two sessions: the group is (new owner,
//! guild). A group with no anchor by the freeze (nothing of an anchor kind captured in it) is
//! frozen at once and its whole log re-applied: the margin's guarantee, reported.

use crate::domain::event::Event;
use crate::domain::partition::discord_shard;
use crate::domain::rescale::ownership::Layout;
use serde::{Deserialize, Serialize};

/// An anchor event's identity: its type and the unique snowflake it names (a message created
/// or deleted, an audit log entry), mixed into one number. `None` for the events that can
/// repeat (a ban, a reaction, an update).
pub(crate) fn identity(event: &Event) -> Option<u64> {
    let (tag, id) = match event {
        Event::MessageCreate(m) => (1, m.id),
        Event::MessageDelete { ids } => (2, *ids.first()?),
        Event::AuditEntry(entry) => (3, entry.id),
        _ => return None,
    };
    // splitmix64's finaliser: distinct (tag, id) pairs stay distinct in practice.
    let mut z = id.0 ^ (tag << 62);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Some(z ^ (z >> 31))
}

/// The stream in which a moving guild's anchor is looked for (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Group {
    /// The guild's new owner.
    pub to: u32,
    /// The shard (the shard count is unchanged) or the guild id (it changes).
    pub key: u64,
}

impl Group {
    /// The group of a guild moving from `from` to `to` (its new owner under `to`).
    pub fn of(guild_id: u64, from: &Layout, to: &Layout) -> Group {
        let key = if shared_streams(from, to) {
            u64::from(discord_shard(guild_id, to.shards))
        } else {
            guild_id
        };
        Group {
            to: to.owner(guild_id),
            key,
        }
    }
}

/// Whether the old and new owners of every guild read it from sessions of the same shard.
pub(crate) fn shared_streams(from: &Layout, to: &Layout) -> bool {
    from.shards == to.shards
}

/// A group's anchor: the identity of its first anchor event in the new owner's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    pub group: Group,
    pub identity: u64,
}

/// The anchors of a capture log (`(guild, identity)` in log order): each group's first
/// anchor event.
pub(crate) fn anchors_of(
    log: impl IntoIterator<Item = (u64, Option<u64>)>,
    from: &Layout,
    to: &Layout,
) -> Vec<Anchor> {
    let mut anchors: Vec<Anchor> = Vec::new();
    for (guild, identity) in log {
        let Some(identity) = identity else {
            continue;
        };
        let group = Group::of(guild, from, to);
        if !anchors.iter().any(|a| a.group == group) {
            anchors.push(Anchor { group, identity });
        }
    }
    anchors
}

/// Where an old owner froze a group: `passed`, it applied exactly the group's events before
/// the event `anchor.identity` and the `skip` group events from it on (its freeze point, which
/// the new owner's log holds); otherwise it froze the group without a known point (its anchor
/// did not pass within the limit), and the new owner re-applies the group's whole log, as
/// with a margin alone.
///
/// A lagging old owner freezes at the new owner's anchor itself (`skip` 0). One that had
/// already passed it freezes at once, after the last anchor event it saw in the group and the
/// `skip - 1` capturable group events after that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AnchorOutcome {
    /// The old owner.
    pub source: u32,
    pub anchor: Anchor,
    pub skip: u64,
    pub passed: bool,
}

/// For each entry of a new owner's capture log (`(guild, identity)` in order): whether its
/// old owner applied it (see [`AnchorOutcome`]). `old_owner` names each guild's.
pub(crate) fn applied_by_old_owners(
    log: &[(u64, Option<u64>)],
    outcomes: &[AnchorOutcome],
    from: &Layout,
    to: &Layout,
    old_owner: impl Fn(u64) -> u32,
) -> Vec<bool> {
    let mut position = std::collections::HashMap::new();
    for (i, (_, identity)) in log.iter().enumerate() {
        if let Some(identity) = identity {
            position.entry(*identity).or_insert(i);
        }
    }
    let groups: Vec<Group> = log.iter().map(|(g, _)| Group::of(*g, from, to)).collect();
    let mut applied = vec![false; log.len()];
    for o in outcomes.iter().filter(|o| o.passed) {
        let Some(&at) = position.get(&o.anchor.identity) else {
            continue;
        };
        // The group's entries from the freeze point on, of every old owner, as the old owner
        // counted them; only its own guilds' are its to mark.
        let mut counted = 0;
        for (i, (guild, _)) in log.iter().enumerate() {
            if groups[i] != o.anchor.group {
                continue;
            }
            if i >= at {
                counted += 1;
            }
            if old_owner(*guild) == o.source && (i < at || counted <= o.skip) {
                applied[i] = true;
            }
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{AuditEntry, Id};
    use crate::domain::partition::Strategy;

    fn layout(pods: u32, shards: u32) -> Layout {
        Layout {
            pods,
            strategy: Strategy::Md5,
            shards,
        }
    }

    fn deleted(id: u64) -> Event {
        Event::MessageDelete { ids: vec![Id(id)] }
    }

    #[test]
    fn identities_name_unique_events_only() {
        assert_eq!(identity(&deleted(1)), identity(&deleted(1)));
        assert_ne!(identity(&deleted(1)), identity(&deleted(2)));
        let entry = Event::AuditEntry(AuditEntry {
            id: Id(1),
            action: 22,
            target_id: None,
            executor_id: None,
            reason: None,
            timeout_change: None,
        });
        assert_ne!(identity(&entry), identity(&deleted(1)));
        let ban = Event::Ban {
            user_id: Id(1),
            added: true,
        };
        assert_eq!(identity(&ban), None);
        assert_eq!(identity(&Event::Other), None);
    }

    #[test]
    fn groups_are_shards_when_the_count_holds_and_guilds_when_it_changes() {
        let guild = (5u64 << 22) | 7;
        let same = Group::of(guild, &layout(2, 4), &layout(3, 4));
        assert_eq!(same.key, 1);
        assert_eq!(same.to, layout(3, 4).owner(guild));
        let changed = Group::of(guild, &layout(2, 4), &layout(3, 8));
        assert_eq!(changed.key, guild);
    }

    #[test]
    fn each_group_is_anchored_at_its_first_unique_event() {
        let (from, to) = (layout(1, 1), layout(1, 1));
        let anchors = anchors_of([(10, None), (11, Some(5)), (10, Some(6))], &from, &to);
        assert_eq!(
            anchors,
            [Anchor {
                group: Group::of(10, &from, &to),
                identity: 5
            }]
        );
        let anchors = anchors_of([(10, None), (11, Some(5))], &layout(1, 1), &layout(1, 2));
        assert_eq!(anchors.len(), 1);
        assert_eq!(anchors[0].group.key, 11);
    }

    /// A log of one group: what the old owner applied is skipped, whether it lagged (froze at
    /// the anchor) or ran ahead (froze after its last anchor event and two more).
    #[test]
    fn the_old_owners_part_of_a_log_is_skipped_exactly() {
        let (from, to) = (layout(1, 1), layout(1, 1));
        let log = [
            (7, None),
            (7, Some(1)),
            (7, None),
            (7, Some(2)),
            (7, None),
            (7, None),
            (7, Some(3)),
        ];
        let group = Group::of(7, &from, &to);
        let outcome = |identity: u64, skip: u64| AnchorOutcome {
            source: 0,
            anchor: Anchor { group, identity },
            skip,
            passed: true,
        };
        let applied = |o: AnchorOutcome| applied_by_old_owners(&log, &[o], &from, &to, |_| 0);
        // Lagging: it froze at the new owner's anchor 1.
        assert_eq!(
            applied(outcome(1, 0)),
            [true, false, false, false, false, false, false]
        );
        // Ahead: it applied 2 and the two events after it.
        assert_eq!(
            applied(outcome(2, 3)),
            [true, true, true, true, true, true, false]
        );
        // Not passed: nothing is skipped.
        let missed = AnchorOutcome {
            passed: false,
            ..outcome(2, 3)
        };
        assert_eq!(applied(missed), [false; 7]);
        // Another old owner's guilds are not this one's to skip.
        let other = applied_by_old_owners(&log, &[outcome(2, 3)], &from, &to, |_| 1);
        assert_eq!(other, [false; 7]);
    }
}
