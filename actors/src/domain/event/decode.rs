//! From Discord's wire format to the model: the frame, then the `d` payload by event kind,
//! one function per kind (or group of kinds sharing a payload shape).

use super::{
    AuditEntry, Channel, Dispatch, Event, EventKind, GuildCreate, Id, MessageCreate, MessageUpdate,
    Reaction, TimeoutChange,
};
use crate::domain::time::parse_timestamp_ms;
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

#[derive(Deserialize)]
struct UserRef {
    id: Id,
}

#[derive(Deserialize)]
struct UserScoped {
    #[serde(default)]
    guild_id: Option<Id>,
    user: UserRef,
}

#[derive(Deserialize)]
struct MemberUpdate {
    #[serde(default)]
    guild_id: Option<Id>,
    user: UserRef,
    #[serde(default)]
    communication_disabled_until: Option<String>,
}

#[derive(Deserialize)]
struct ReadyPayload {
    user: UserRef,
}

#[derive(Deserialize)]
struct AuditChange {
    key: String,
    #[serde(default)]
    new_value: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct AuditPayload {
    #[serde(default)]
    guild_id: Option<Id>,
    id: Id,
    action_type: u16,
    #[serde(default)]
    target_id: Option<Id>,
    #[serde(default)]
    user_id: Option<Id>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    changes: Option<Vec<AuditChange>>,
}

/// Why a line of a recorded stream could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a gateway frame")]
    Frame(#[source] serde_json::Error),
    #[error("op {0} is not a dispatch (op 0)")]
    NotDispatch(u8),
    #[error("dispatch without an event type (t)")]
    MissingType,
    #[error("dispatch without data (d)")]
    MissingData,
    #[error("bad {kind} payload")]
    Payload {
        kind: &'static str,
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct Frame<'a> {
    op: u8,
    /// Owned only when the name has JSON escapes (valid, if unusual).
    #[serde(default, borrow)]
    t: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default, borrow)]
    d: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct GuildScoped {
    #[serde(default)]
    guild_id: Option<Id>,
}

#[derive(Deserialize)]
struct Ids {
    ids: Vec<Id>,
    #[serde(default)]
    guild_id: Option<Id>,
}

#[derive(Deserialize)]
struct Deleted {
    id: Id,
    #[serde(default)]
    guild_id: Option<Id>,
}

/// Decodes one wire frame (a line of a recorded stream, or a gateway text frame).
pub fn decode_frame(text: &str) -> Result<Dispatch, DecodeError> {
    let frame: Frame = serde_json::from_str(text).map_err(DecodeError::Frame)?;
    if frame.op != 0 {
        return Err(DecodeError::NotDispatch(frame.op));
    }
    let name = frame.t.ok_or(DecodeError::MissingType)?;
    let data = frame.d.ok_or(DecodeError::MissingData)?;
    decode_dispatch(&name, frame.s, data.get())
}

/// Decodes the `d` payload of a dispatch of type `name`.
pub fn decode_dispatch(name: &str, seq: Option<u64>, data: &str) -> Result<Dispatch, DecodeError> {
    let kind = EventKind::from_name(name);
    let (guild_id, event) = match decoder(kind) {
        Some(decode) => decode(kind, data).map_err(|source| DecodeError::Payload {
            kind: kind.name(),
            source,
        })?,
        None => other(data),
    };
    // Kept for every kind: a capture log re-decodes it, and a relay client is sent it.
    let payload = Some(std::sync::Arc::from(data));
    let other_name = (kind == EventKind::Other).then(|| std::sync::Arc::from(name));
    Ok(Dispatch {
        kind,
        other_name,
        relay_payload: None,
        seq,
        guild_id,
        event,
        payload,
    })
}

/// A decoded payload: the guild it belongs to, and the event.
type Decoded = (Option<Id>, Event);

/// Decodes the payload of a kind (some decoders serve several kinds, told apart by `kind`).
type Decoder = fn(EventKind, &str) -> serde_json::Result<Decoded>;

/// The decoder of each kind the handlers act on; `None`: only its guild is read ([`other`]).
fn decoder(kind: EventKind) -> Option<Decoder> {
    Some(match kind {
        EventKind::GuildCreate => guild_create,
        EventKind::ChannelCreate
        | EventKind::ChannelUpdate
        | EventKind::ThreadCreate
        | EventKind::ThreadUpdate => channel_upsert,
        EventKind::ChannelDelete | EventKind::ThreadDelete => channel_delete,
        EventKind::MessageCreate => message_create,
        EventKind::MessageUpdate => message_update,
        EventKind::MessageDelete => message_delete,
        EventKind::MessageDeleteBulk => message_delete_bulk,
        EventKind::MessageReactionAdd | EventKind::MessageReactionRemove => reaction,
        EventKind::Ready => ready,
        EventKind::GuildBanAdd | EventKind::GuildBanRemove => ban,
        EventKind::GuildMemberRemove => member_remove,
        EventKind::GuildMemberUpdate => member_update,
        EventKind::GuildAuditLogEntryCreate => audit_entry,
        _ => return None,
    })
}

fn guild_create(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let g: GuildCreate = serde_json::from_str(data)?;
    Ok((Some(g.id), Event::GuildCreate(g)))
}

fn channel_upsert(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let c: Channel = serde_json::from_str(data)?;
    Ok((c.guild_id, Event::ChannelUpsert(c)))
}

fn channel_delete(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let d: Deleted = serde_json::from_str(data)?;
    Ok((d.guild_id, Event::ChannelDelete { id: d.id }))
}

fn message_create(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let m: MessageCreate = serde_json::from_str(data)?;
    Ok((m.guild_id, Event::MessageCreate(Box::new(m))))
}

fn message_update(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let m: MessageUpdate = serde_json::from_str(data)?;
    Ok((m.guild_id, Event::MessageUpdate(m)))
}

fn message_delete(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let d: Deleted = serde_json::from_str(data)?;
    Ok((d.guild_id, Event::MessageDelete { ids: vec![d.id] }))
}

fn message_delete_bulk(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let d: Ids = serde_json::from_str(data)?;
    Ok((d.guild_id, Event::MessageDelete { ids: d.ids }))
}

fn reaction(kind: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let mut r: Reaction = serde_json::from_str(data)?;
    r.added = kind == EventKind::MessageReactionAdd;
    Ok((r.guild_id, Event::Reaction(r)))
}

fn ready(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let r: ReadyPayload = serde_json::from_str(data)?;
    Ok((
        None,
        Event::Ready {
            bot_user_id: r.user.id,
        },
    ))
}

fn ban(kind: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let b: UserScoped = serde_json::from_str(data)?;
    Ok((
        b.guild_id,
        Event::Ban {
            user_id: b.user.id,
            added: kind == EventKind::GuildBanAdd,
        },
    ))
}

fn member_remove(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let m: UserScoped = serde_json::from_str(data)?;
    Ok((m.guild_id, Event::MemberRemove { user_id: m.user.id }))
}

fn member_update(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let m: MemberUpdate = serde_json::from_str(data)?;
    let timeout_until_ms = match m.communication_disabled_until {
        Some(t) => Some(parse_timestamp_ms(&t).ok_or_else(|| {
            serde::de::Error::custom(format!("bad communication_disabled_until {t:?}"))
        })?),
        None => None,
    };
    Ok((
        m.guild_id,
        Event::MemberUpdate {
            user_id: m.user.id,
            timeout_until_ms,
        },
    ))
}

fn audit_entry(_: EventKind, data: &str) -> serde_json::Result<Decoded> {
    let a: AuditPayload = serde_json::from_str(data)?;
    let timeout_change = a
        .changes
        .iter()
        .flatten()
        .find(|c| c.key == "communication_disabled_until")
        .map(|c| {
            if c.new_value.is_some() {
                TimeoutChange::Set
            } else {
                TimeoutChange::Cleared
            }
        });
    let entry = AuditEntry {
        id: a.id,
        action: a.action_type,
        target_id: a.target_id,
        executor_id: a.user_id,
        reason: a.reason,
        timeout_change,
    };
    Ok((a.guild_id, Event::AuditEntry(entry)))
}

/// Any other kind: only its guild, for the shard filter. Payloads that are not objects
/// (READY's siblings never are, but be lenient) carry no guild.
fn other(data: &str) -> Decoded {
    let scoped: Option<GuildScoped> = serde_json::from_str(data).ok();
    (scoped.and_then(|s| s.guild_id), Event::Other)
}
