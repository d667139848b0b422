//! serenity's decoded events -> the pipeline's [`Dispatch`], through the same JSON decoder
//! that `replay` uses ([`decode_dispatch`]): what each event means is defined once, in
//! `gateway_actors::event`, for live pods and replays alike.
//!
//! serenity's model serializes back to Discord's own shape (`{"t": NAME, "d": PAYLOAD}`), so
//! the payload is re-encoded and decoded by ours. That costs one serialization per event
//! (measured in BENCHMARKS.md) and buys one definition; a test runs every stream we have
//! through both paths and finds the same dispatches.

use gateway_actors::event::{decode_dispatch, Dispatch, Event, EventKind};
use serde::Deserialize;
use serde_json::value::RawValue;
use serenity::model::event::Event as SEvent;
use std::borrow::Cow;
use std::cell::RefCell;

/// serenity's serialized event: its name and payload, the payload left undecoded.
#[derive(Deserialize)]
struct Tagged<'a> {
    #[serde(borrow)]
    t: Cow<'a, str>,
    #[serde(borrow)]
    d: Option<&'a RawValue>,
}

thread_local! {
    /// The payload's JSON, reused from event to event (the connection has one thread).
    static PAYLOAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// For the types the pipeline stores, the dispatch name and the payload serialized alone (the
/// same JSON as the tagged form's `d`, without the wrapper to parse again).
macro_rules! stored_payload {
    ($event:expr, $buf:expr, $($variant:ident => $kind:ident,)*) => {
        match $event {
            $(SEvent::$variant(e) => {
                Some((EventKind::$kind.name(), serde_json::to_writer(&mut *$buf, e)))
            })*
            _ => None,
        }
    };
}

fn chain(e: impl std::error::Error) -> String {
    gateway_actors::errors::chain(&e)
}

/// Converts one event; `seq` is the gateway sequence number as counted by the connection.
pub fn to_dispatch(event: &SEvent, seq: Option<u64>) -> Dispatch {
    let decoded = PAYLOAD.with_borrow_mut(|buf| {
        buf.clear();
        let stored = stored_payload!(event, buf,
            MessageCreate => MessageCreate,
            MessageUpdate => MessageUpdate,
            MessageDelete => MessageDelete,
            MessageDeleteBulk => MessageDeleteBulk,
            ReactionAdd => MessageReactionAdd,
            ReactionRemove => MessageReactionRemove,
            GuildCreate => GuildCreate,
            ChannelCreate => ChannelCreate,
            ChannelUpdate => ChannelUpdate,
            ChannelDelete => ChannelDelete,
            ThreadCreate => ThreadCreate,
            ThreadUpdate => ThreadUpdate,
            ThreadDelete => ThreadDelete,
            GuildAuditLogEntryCreate => GuildAuditLogEntryCreate,
            GuildBanAdd => GuildBanAdd,
            GuildBanRemove => GuildBanRemove,
            GuildMemberRemove => GuildMemberRemove,
            GuildMemberUpdate => GuildMemberUpdate,
        );
        match (event, stored) {
            (_, Some((name, Ok(())))) => {
                let payload = std::str::from_utf8(buf).unwrap_or("{}");
                decode_dispatch(name, seq, payload).map_err(|e| (name.to_owned(), chain(e)))
            }
            (_, Some((name, Err(e)))) => Err((name.to_owned(), e.to_string())),
            // serenity could not decode it (a field it requires is missing): its raw payload
            // is still ours to decode, rather than lose it.
            (SEvent::Unknown(unknown), None) => {
                decode_dispatch(&unknown.kind, seq, &unknown.value.to_string())
                    .map_err(|e| (unknown.kind.clone(), chain(e)))
            }
            // Everything else, rarer: the tagged form gives its name.
            (other, None) => match serde_json::to_string(other) {
                Ok(json) => match serde_json::from_str::<Tagged>(&json) {
                    Ok(tagged) => {
                        let payload = tagged.d.map_or("{}", RawValue::get);
                        decode_dispatch(&tagged.t, seq, payload)
                            .map_err(|e| (tagged.t.into_owned(), chain(e)))
                    }
                    Err(e) => Err((String::from("?"), e.to_string())),
                },
                Err(e) => Err((String::from("?"), e.to_string())),
            },
        }
    });
    decoded.unwrap_or_else(|(name, error)| {
        tracing::warn!(event = %name, %error, "undecodable dispatch skipped");
        let kind = EventKind::from_name(&name);
        Dispatch {
            kind,
            other_name: (kind == EventKind::Other).then(|| name.as_str().into()),
            relay_payload: None,
            seq,
            guild_id: None,
            event: Event::Other,
            payload: None,
        }
    })
}

/// Fields Discord sends as null to say "none" (a cleared nickname, timeout or topic): kept as
/// null for relay clients, where discord.js reads null as a change and absence as none.
const MEANINGFUL_NULLS: &[&str] = &[
    "nick",
    "avatar",
    "banner",
    "communication_disabled_until",
    "premium_since",
    "topic",
    "parent_id",
    "icon",
    "description",
    "global_name",
    "edited_timestamp",
    "last_message_id",
    "afk_channel_id",
    "system_channel_id",
    "rules_channel_id",
    "public_updates_channel_id",
    "accent_color",
    "unicode_emoji",
];

/// The event's payload for relay clients: serenity's model in Discord's shape, without the
/// nulls serenity writes for fields Discord left out (discord.js reads a null `mentions` or
/// `public_flags` as a value, and fails), except [`MEANINGFUL_NULLS`].
pub fn relay_payload(event: &SEvent) -> Option<std::sync::Arc<str>> {
    let tagged = serde_json::to_string(event).ok()?;
    let d = super::compact_json::member(&tagged, "d")?;
    let mut d = super::compact_json::without_nulls(d, |key| MEANINGFUL_NULLS.contains(&key))?;
    // serenity tells interactions apart by their type, and writes them without it.
    if let SEvent::InteractionCreate(e) = event {
        let kind = format!("\"type\":{}", u8::from(e.interaction.kind()));
        match d.as_str() {
            "{}" => d = format!("{{{kind}}}"),
            _ if d.starts_with('{') => d.insert_str(1, &format!("{kind},")),
            _ => return None,
        }
    }
    Some(d.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_actors::event::decode_frame;

    /// serenity keeps a guild's channels in a map: their order carries no meaning. The kept
    /// payload is serenity's serialization on one path and the line's text on the other: it
    /// must decode to the same dispatch (what a capture log re-applies), so it is replaced by
    /// that decoding's own Debug text.
    fn in_order(mut dispatch: Dispatch) -> Dispatch {
        if let Some(payload) = dispatch.payload.take() {
            let again = gateway_actors::event::decode_dispatch(
                dispatch.kind.name(),
                dispatch.seq,
                &payload,
            )
            .expect("a kept payload decodes");
            assert!(again.payload.is_some());
            dispatch.payload = Some(
                format!(
                    "{:?}",
                    in_order(Dispatch {
                        payload: None,
                        ..again
                    })
                    .event
                )
                .into(),
            );
        }
        if let Event::GuildCreate(guild) = &mut dispatch.event {
            guild.channels.sort_by_key(|c| c.id);
            guild.threads.sort_by_key(|c| c.id);
        }
        dispatch
    }

    /// Both paths give the same dispatch for every line of `stream`.
    fn paths_agree(name: &str, stream: &str) {
        let mut compared = 0;
        for (n, line) in stream.lines().enumerate() {
            let ours = decode_frame(line).expect("the stream decodes");
            let theirs: SEvent = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name} line {}: serenity: {e}", n + 1));
            let (ours, live) = (
                in_order(ours.clone()),
                in_order(to_dispatch(&theirs, ours.seq)),
            );
            // Debug shows every field of the decoded event, so equal text is equal meaning.
            assert_eq!(
                format!("{live:?}"),
                format!("{ours:?}"),
                "{name} line {}: the live path and replay disagree",
                n + 1
            );
            compared += 1;
        }
        assert!(compared > 0, "{name} is empty");
    }

    /// The relay's form as first written: through a value tree (slower, plainly right).
    fn relay_payload_by_value(event: &SEvent) -> Option<serde_json::Value> {
        fn drop_absent(value: &mut serde_json::Value) {
            match value {
                serde_json::Value::Object(fields) => {
                    fields
                        .retain(|key, v| !v.is_null() || MEANINGFUL_NULLS.contains(&key.as_str()));
                    fields.values_mut().for_each(drop_absent);
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(drop_absent),
                _ => {}
            }
        }
        let serde_json::Value::Object(mut tagged) = serde_json::to_value(event).ok()? else {
            return None;
        };
        let mut d = tagged.remove("d")?;
        drop_absent(&mut d);
        if let (SEvent::InteractionCreate(e), serde_json::Value::Object(fields)) = (event, &mut d) {
            fields.insert("type".into(), u8::from(e.interaction.kind()).into());
        }
        Some(d)
    }

    /// The relay's form of every event of `stream` means what the value tree's did.
    fn relay_forms_agree(name: &str, stream: &str) {
        let mut compared = 0;
        for (n, line) in stream.lines().enumerate() {
            let event: SEvent = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name} line {}: serenity: {e}", n + 1));
            let text = relay_payload(&event)
                .unwrap_or_else(|| panic!("{name} line {}: no relay form", n + 1));
            let parsed: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} line {}: not JSON: {e}", n + 1));
            assert_eq!(
                Some(parsed),
                relay_payload_by_value(&event),
                "{name} line {}",
                n + 1
            );
            compared += 1;
        }
        assert!(compared > 0, "{name} is empty");
    }

    #[test]
    fn the_relay_form_drops_serenitys_nulls_as_the_value_tree_did() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/events.sample.ndjson"
        );
        let sample = std::fs::read_to_string(path).expect("the sample fixture");
        relay_forms_agree("events.sample.ndjson", &sample);
        relay_forms_agree("synthetic", &synthetic_stream());
    }

    fn synthetic_stream() -> String {
        let mut stream = Vec::new();
        guild_gateway_dev::synthetic::generate(
            &mut stream,
            50,
            3000,
            &guild_gateway_dev::synthetic::DEFAULT_TEXTS
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>(),
        )
        .expect("generating");
        String::from_utf8(stream).expect("utf-8")
    }

    #[test]
    fn live_and_replay_decode_the_sample_alike() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/events.sample.ndjson"
        );
        let sample = std::fs::read_to_string(path).expect("the sample fixture");
        paths_agree("events.sample.ndjson", &sample);
    }

    #[test]
    fn live_and_replay_decode_the_synthetic_stream_alike() {
        paths_agree("synthetic", &synthetic_stream());
    }
}
