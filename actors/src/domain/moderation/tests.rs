//! Pairing in either order, expiry, timeouts (only on change, last wins) and the hand-over.

use super::*;

const GUILD: Id = Id(1);
const USER: Id = Id(2);
const MOD: Id = Id(3);
const BOT: Id = Id(4);

fn entry(id: u64, action: u16, executor: Id, timeout_change: Option<TimeoutChange>) -> Event {
    Event::AuditEntry(AuditEntry {
        id: Id(id),
        action,
        target_id: Some(USER),
        executor_id: Some(executor),
        reason: Some("raid".into()),
        timeout_change,
    })
}

fn log() -> ModerationLog<u32> {
    ModerationLog::new(GUILD, Duration::from_secs(5), HashMap::new())
}

fn mod_rows(resolutions: &[Resolution<u32>]) -> Vec<(&'static str, Option<Id>, String)> {
    resolutions
        .iter()
        .flat_map(|r| &r.ops)
        .filter_map(|op| match op {
            Op::InsertModAction {
                action,
                executor_id,
                reason,
                ..
            } => Some((*action, *executor_id, reason.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn pairs_in_either_order() {
    let t0 = Instant::now();
    let mut log = log();
    let ban = Event::Ban {
        user_id: USER,
        added: true,
    };
    assert!(log
        .handle(1, &ban, Some(1), t0, 0, Some(BOT))
        .unwrap()
        .is_empty());
    let r = log
        .handle(2, &entry(10, 22, MOD, None), Some(2), t0, 0, Some(BOT))
        .unwrap();
    assert_eq!(mod_rows(&r), vec![("ban", Some(MOD), "raid".to_string())]);
    assert_eq!(r[0].tokens, vec![1, 2]);

    let r = log
        .handle(3, &entry(11, 23, MOD, None), Some(3), t0, 0, Some(BOT))
        .unwrap();
    assert!(r.is_empty());
    let r = log
        .handle(
            4,
            &Event::Ban {
                user_id: USER,
                added: false,
            },
            Some(4),
            t0,
            0,
            Some(BOT),
        )
        .unwrap();
    assert_eq!(mod_rows(&r), vec![("unban", Some(MOD), "raid".to_string())]);
    assert!(!log.is_waiting());
}

#[test]
fn unmatched_events_are_written_when_the_window_closes_and_leaves_are_not_kicks() {
    let t0 = Instant::now();
    let mut log = log();
    log.handle(
        1,
        &Event::Ban {
            user_id: USER,
            added: true,
        },
        Some(7),
        t0,
        0,
        None,
    )
    .unwrap();
    log.handle(
        2,
        &Event::MemberRemove { user_id: USER },
        Some(8),
        t0,
        0,
        None,
    )
    .unwrap();
    assert!(log.expire(t0 + Duration::from_secs(4)).is_empty());
    let r = log.expire(t0 + Duration::from_secs(5));
    assert_eq!(mod_rows(&r), vec![("ban", None, String::new())]);
    let tokens: Vec<u32> = r.iter().flat_map(|r| r.tokens.clone()).collect();
    assert_eq!(tokens, vec![1, 2]);
}

#[test]
fn timeouts_only_on_change_and_the_bot_is_not_logged() {
    let t0 = Instant::now();
    let mut log = log();
    let set = Event::MemberUpdate {
        user_id: USER,
        timeout_until_ms: Some(600_000),
    };
    assert!(log
        .handle(1, &set, None, t0, 0, Some(BOT))
        .unwrap()
        .is_empty());
    // The same value again writes nothing.
    let r = log.handle(2, &set, None, t0, 0, Some(BOT)).unwrap();
    assert_eq!(r.len(), 1);
    assert!(r[0].ops.is_empty());
    // The entry, by the bot itself: resolved, not logged, the state still saved.
    let r = log
        .handle(
            3,
            &entry(12, 24, BOT, Some(TimeoutChange::Set)),
            None,
            t0,
            0,
            Some(BOT),
        )
        .unwrap();
    assert!(mod_rows(&r).is_empty());
    assert!(matches!(
        r[0].ops[..],
        [Op::SetMemberTimeout {
            until_ms: Some(600_000),
            ..
        }]
    ));
    // Cleared while in the future: timeout_removed with its duration unset.
    let clear = Event::MemberUpdate {
        user_id: USER,
        timeout_until_ms: None,
    };
    log.handle(4, &clear, None, t0, 1000, Some(BOT)).unwrap();
    let r = log.flush();
    assert_eq!(mod_rows(&r), vec![("timeout_removed", None, String::new())]);
}

/// A timeout waiting for its entry, then its removal paired at once: the persisted state
/// ends as the last event left it (removed), not as the earlier event resolves later.
#[test]
fn the_last_timeout_change_wins_whatever_order_they_resolve_in() {
    let t0 = Instant::now();
    let mut log = log();
    let state = |r: &[Resolution<u32>]| -> Vec<Option<i64>> {
        r.iter()
            .flat_map(|r| &r.ops)
            .filter_map(|op| match op {
                Op::SetMemberTimeout { until_ms, .. } => Some(*until_ms),
                _ => None,
            })
            .collect()
    };
    let set = Event::MemberUpdate {
        user_id: USER,
        timeout_until_ms: Some(600_000),
    };
    assert!(log.handle(1, &set, None, t0, 0, None).unwrap().is_empty());
    let clear = Event::MemberUpdate {
        user_id: USER,
        timeout_until_ms: None,
    };
    let early = entry(13, 24, MOD, Some(TimeoutChange::Cleared));
    assert!(log.handle(2, &early, None, t0, 0, None).unwrap().is_empty());
    let r = log.handle(3, &clear, None, t0, 1000, None).unwrap();
    assert_eq!(state(&r), vec![None]);
    // The first one's window closes later: logged, but it leaves the state alone.
    let r = log.flush();
    assert_eq!(mod_rows(&r), vec![("timeout", None, String::new())]);
    assert_eq!(state(&r), Vec::<Option<i64>>::new());
}

/// A guild handed over to itself (new sessions, same pod) sees its waiting timeout again:
/// it must still be logged, with its state, as if it had never been seen.
#[test]
fn a_timeout_handed_over_and_seen_again_is_still_logged() {
    let t0 = Instant::now();
    let mut log = log();
    let set = |until: Option<i64>| Event::MemberUpdate {
        user_id: USER,
        timeout_until_ms: until,
    };
    // Two changes: the member goes back to before the first.
    for (token, until) in [(1, 600_000), (2, 900_000)] {
        let r = log.handle(token, &set(Some(until)), None, t0, 0, None);
        assert!(r.unwrap().is_empty());
    }
    let (handed, resolved) = log.hand_over();
    assert_eq!((handed, resolved.len()), (vec![1, 2], 0));
    // Until it is taken back, a later change is judged against the handed ones.
    let r = log.handle(3, &set(Some(900_000)), None, t0, 0, None);
    assert!(!r.unwrap().is_empty(), "no change after the handed ones");
    log.take_back();
    let r = log.handle(3, &set(Some(900_000)), None, t0, 0, None);
    assert!(
        r.unwrap().is_empty(),
        "still a change: it waits for its entry"
    );
    let r = log.flush();
    assert_eq!(mod_rows(&r), vec![("timeout", None, String::new())]);
    let state: Vec<_> = r
        .iter()
        .flat_map(|r| &r.ops)
        .filter(|op| {
            matches!(
                op,
                Op::SetMemberTimeout {
                    until_ms: Some(900_000),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(state.len(), 1);
}

/// A timeout waiting for its entry, superseded by a clear that was resolved at once: the
/// stored state is the clear's. Handed over, the timeout would set it again on the new
/// owner, so it is logged at the hand-over instead, leaving the state alone.
#[test]
fn a_timeout_superseded_by_a_resolved_change_is_logged_not_handed_over() {
    let t0 = Instant::now();
    let mut log = log();
    let set = |until: Option<i64>| Event::MemberUpdate {
        user_id: USER,
        timeout_until_ms: until,
    };
    assert!(log
        .handle(1, &set(Some(600_000)), None, t0, 0, None)
        .unwrap()
        .is_empty());
    let clear_entry = entry(13, 24, MOD, Some(TimeoutChange::Cleared));
    assert!(log
        .handle(2, &clear_entry, None, t0, 0, None)
        .unwrap()
        .is_empty());
    let cleared = log.handle(3, &set(None), None, t0, 1000, None).unwrap();
    assert_eq!(
        mod_rows(&cleared),
        vec![("timeout_removed", Some(MOD), "raid".to_string())]
    );
    let (handed, resolved) = log.hand_over();
    assert!(handed.is_empty(), "{handed:?}");
    assert_eq!(mod_rows(&resolved), vec![("timeout", None, String::new())]);
    let states = resolved
        .iter()
        .flat_map(|r| &r.ops)
        .filter(|op| matches!(op, Op::SetMemberTimeout { .. }))
        .count();
    assert_eq!(states, 0, "the clear's state stands");
}

/// One log driven through a mass ban: queueing, out-of-order matches, then expiry; the steps
/// share its state, which is why it runs past the usual length.
#[test]
fn many_waiting_events_match_out_of_order_and_expire_oldest_first() {
    let t0 = Instant::now();
    let mut log = log();
    let ms = Duration::from_millis;
    let ban = |user: u64| Event::Ban {
        user_id: Id(user),
        added: true,
    };
    let entry_for = |user: u64| {
        Event::AuditEntry(AuditEntry {
            id: Id(10_000 + user),
            action: audit_action::MEMBER_BAN_ADD,
            target_id: Some(Id(user)),
            executor_id: Some(MOD),
            reason: Some("raid".into()),
            timeout_change: None,
        })
    };
    // Bans of users 100..1100 arriving 1 ms apart; every third one's entry comes, newest
    // first, and pairs at once.
    for i in 0..1000u32 {
        let r = log
            .handle(
                i,
                &ban(100 + u64::from(i)),
                Some(1),
                t0 + ms(u64::from(i)),
                0,
                None,
            )
            .unwrap();
        assert!(r.is_empty());
    }
    for i in (0..1000u32).rev().filter(|i| i % 3 == 0) {
        let r = log
            .handle(
                10_000 + i,
                &entry_for(100 + u64::from(i)),
                None,
                t0,
                0,
                None,
            )
            .unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].tokens, vec![i, 10_000 + i]);
        assert_eq!(mod_rows(&r), vec![("ban", Some(MOD), "raid".to_string())]);
    }
    // An entry for a user already paired is held, not matched again.
    assert!(log
        .handle(20_000, &entry_for(100), None, t0 + ms(600), 0, None)
        .unwrap()
        .is_empty());
    // The oldest waiting ban is user 101 (1 ms).
    assert_eq!(
        log.next_deadline(),
        Some(t0 + ms(1) + Duration::from_secs(5))
    );
    // 500 ms past the window: the unpaired bans of the first 501 ms, in arrival order.
    let r = log.expire(t0 + Duration::from_secs(5) + ms(500));
    let tokens: Vec<u32> = r.iter().flat_map(|r| r.tokens.clone()).collect();
    let expected: Vec<u32> = (0..=500).filter(|i| i % 3 != 0).collect();
    assert_eq!(tokens, expected);
    assert!(mod_rows(&r).iter().all(|row| row.1.is_none()));
    assert_eq!(
        log.next_deadline(),
        Some(t0 + ms(502) + Duration::from_secs(5))
    );
    // The rest: the remaining bans, then the held entry, which asks to complete a row.
    let r = log.flush();
    let tokens: Vec<u32> = r.iter().flat_map(|r| r.tokens.clone()).collect();
    let mut expected: Vec<u32> = (501..1000).filter(|i| i % 3 != 0).collect();
    expected.push(20_000);
    assert_eq!(tokens, expected);
    assert!(matches!(
        r.last().map(|r| &r.ops[..]),
        Some([Op::CompleteModAction { by_bot: false, .. }])
    ));
    assert!(!log.is_waiting());
    assert_eq!(log.next_deadline(), None);
}
