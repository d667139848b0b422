//! serenity's decoded events -> the pipeline's [`Dispatch`]: the frame is decoded once, by
//! serenity, and only the fields the handlers use are carried over.

use gateway_actors::event::{
    decode_dispatch, AuditEntry, Author, Channel, Dispatch, Emoji, Event, EventKind, GuildCreate,
    Id, MessageCreate, MessageUpdate, Reaction, ReferencedMessage, TimeoutChange,
};
use serenity::model::channel::{GuildChannel, ReactionType};
use serenity::model::event::Event as SEvent;
use serenity::model::guild::audit_log::Change;

fn channel(c: &GuildChannel) -> Channel {
    Channel {
        id: Id(c.id.get()),
        kind: u8::from(c.kind),
        guild_id: Some(Id(c.guild_id.get())),
        name: Some(c.name.clone()),
        parent_id: c.parent_id.map(|p| Id(p.get())),
    }
}

fn emoji(e: &ReactionType) -> Emoji {
    match e {
        ReactionType::Custom { id, name, .. } => Emoji {
            id: Some(Id(id.get())),
            name: name.clone(),
        },
        ReactionType::Unicode(name) => Emoji {
            id: None,
            name: Some(name.clone()),
        },
        _ => Emoji {
            id: None,
            name: None,
        },
    }
}

fn reaction(r: &serenity::model::channel::Reaction, added: bool) -> Option<(Option<Id>, Event)> {
    let user_id = r.user_id?;
    Some((
        r.guild_id.map(|g| Id(g.get())),
        Event::Reaction(Reaction {
            added,
            message_id: Id(r.message_id.get()),
            user_id: Id(user_id.get()),
            guild_id: r.guild_id.map(|g| Id(g.get())),
            emoji: emoji(&r.emoji),
        }),
    ))
}

/// Converts one event; `seq` is the gateway sequence number as counted by the connection.
pub fn to_dispatch(event: &SEvent, seq: Option<u64>) -> Dispatch {
    let g = |id: serenity::model::id::GuildId| Some(Id(id.get()));
    let (kind, guild_id, converted) = match event {
        SEvent::Ready(r) => (
            EventKind::Ready,
            None,
            Event::Ready {
                bot_user_id: Id(r.ready.user.id.get()),
            },
        ),
        SEvent::Resumed(_) => (EventKind::Resumed, None, Event::Other),
        SEvent::GuildCreate(e) => {
            let guild = &e.guild;
            let create = GuildCreate {
                id: Id(guild.id.get()),
                channels: guild.channels.values().map(channel).collect(),
                threads: guild.threads.iter().map(channel).collect(),
            };
            (
                EventKind::GuildCreate,
                g(guild.id),
                Event::GuildCreate(create),
            )
        }
        SEvent::ChannelCreate(e) => (
            EventKind::ChannelCreate,
            g(e.channel.guild_id),
            Event::ChannelUpsert(channel(&e.channel)),
        ),
        SEvent::ChannelUpdate(e) => (
            EventKind::ChannelUpdate,
            g(e.channel.guild_id),
            Event::ChannelUpsert(channel(&e.channel)),
        ),
        SEvent::ChannelDelete(e) => (
            EventKind::ChannelDelete,
            g(e.channel.guild_id),
            Event::ChannelDelete {
                id: Id(e.channel.id.get()),
            },
        ),
        SEvent::ThreadCreate(e) => (
            EventKind::ThreadCreate,
            g(e.thread.guild_id),
            Event::ChannelUpsert(channel(&e.thread)),
        ),
        SEvent::ThreadUpdate(e) => (
            EventKind::ThreadUpdate,
            g(e.thread.guild_id),
            Event::ChannelUpsert(channel(&e.thread)),
        ),
        SEvent::ThreadDelete(e) => (
            EventKind::ThreadDelete,
            g(e.thread.guild_id),
            Event::ChannelDelete {
                id: Id(e.thread.id.get()),
            },
        ),
        SEvent::MessageCreate(e) => {
            let m = &e.message;
            let create = MessageCreate {
                id: Id(m.id.get()),
                channel_id: Id(m.channel_id.get()),
                guild_id: m.guild_id.map(|id| Id(id.get())),
                author: Author {
                    id: Id(m.author.id.get()),
                    bot: m.author.bot,
                    system: m.author.system,
                },
                webhook_id: m.webhook_id.map(|w| Id(w.get())),
                content: m.content.clone(),
                referenced_message: m.referenced_message.as_ref().map(|r| ReferencedMessage {
                    author: Author {
                        id: Id(r.author.id.get()),
                        bot: r.author.bot,
                        system: r.author.system,
                    },
                }),
                reactions: m.reactions.len(),
            };
            (
                EventKind::MessageCreate,
                create.guild_id,
                Event::MessageCreate(Box::new(create)),
            )
        }
        SEvent::MessageUpdate(e) => {
            let update = MessageUpdate {
                id: Id(e.id.get()),
                channel_id: Id(e.channel_id.get()),
                guild_id: e.guild_id.map(|id| Id(id.get())),
                content: e.content.clone(),
            };
            (
                EventKind::MessageUpdate,
                update.guild_id,
                Event::MessageUpdate(update),
            )
        }
        SEvent::MessageDelete(e) => (
            EventKind::MessageDelete,
            e.guild_id.map(|id| Id(id.get())),
            Event::MessageDelete {
                ids: vec![Id(e.message_id.get())],
            },
        ),
        SEvent::MessageDeleteBulk(e) => (
            EventKind::MessageDeleteBulk,
            e.guild_id.map(|id| Id(id.get())),
            Event::MessageDelete {
                ids: e.ids.iter().map(|id| Id(id.get())).collect(),
            },
        ),
        SEvent::ReactionAdd(e) => match reaction(&e.reaction, true) {
            Some((guild, ev)) => (EventKind::MessageReactionAdd, guild, ev),
            None => (
                EventKind::MessageReactionAdd,
                e.reaction.guild_id.map(|id| Id(id.get())),
                Event::Other,
            ),
        },
        SEvent::ReactionRemove(e) => match reaction(&e.reaction, false) {
            Some((guild, ev)) => (EventKind::MessageReactionRemove, guild, ev),
            None => (
                EventKind::MessageReactionRemove,
                e.reaction.guild_id.map(|id| Id(id.get())),
                Event::Other,
            ),
        },
        SEvent::GuildBanAdd(e) => (
            EventKind::GuildBanAdd,
            g(e.guild_id),
            Event::Ban {
                user_id: Id(e.user.id.get()),
                added: true,
            },
        ),
        SEvent::GuildBanRemove(e) => (
            EventKind::GuildBanRemove,
            g(e.guild_id),
            Event::Ban {
                user_id: Id(e.user.id.get()),
                added: false,
            },
        ),
        SEvent::GuildMemberRemove(e) => (
            EventKind::GuildMemberRemove,
            g(e.guild_id),
            Event::MemberRemove {
                user_id: Id(e.user.id.get()),
            },
        ),
        SEvent::GuildMemberUpdate(e) => (
            EventKind::GuildMemberUpdate,
            g(e.guild_id),
            Event::MemberUpdate {
                user_id: Id(e.user.id.get()),
                timeout_until_ms: e
                    .communication_disabled_until
                    .map(|t| t.unix_timestamp() * 1000 + i64::from(t.nanosecond() / 1_000_000)),
            },
        ),
        SEvent::GuildAuditLogEntryCreate(e) => {
            let entry = &e.entry;
            let timeout_change = entry.changes.iter().flatten().find_map(|c| match c {
                Change::CommunicationDisabledUntil { new, .. } => Some(if new.is_some() {
                    TimeoutChange::Set
                } else {
                    TimeoutChange::Cleared
                }),
                _ => None,
            });
            let converted = AuditEntry {
                id: Id(entry.id.get()),
                action: u16::from(entry.action.num()),
                target_id: entry.target_id.map(|t| Id(t.get())),
                executor_id: Some(Id(entry.user_id.get())),
                reason: entry.reason.clone(),
                timeout_change,
            };
            (
                EventKind::GuildAuditLogEntryCreate,
                g(e.guild_id),
                Event::AuditEntry(converted),
            )
        }
        SEvent::Unknown(unknown) if EventKind::from_name(&unknown.kind) != EventKind::Other => {
            // serenity could not decode a type we handle (a field it requires is missing):
            // decode it ourselves rather than lose it.
            match decode_dispatch(&unknown.kind, seq, &unknown.value.to_string()) {
                Ok(dispatch) => return dispatch,
                Err(e) => {
                    tracing::warn!(event = %unknown.kind, error = %e, "undecodable dispatch skipped");
                    (EventKind::from_name(&unknown.kind), None, Event::Other)
                }
            }
        }
        other => {
            // Rarer types: their name and guild from their JSON form (each is serialized once).
            let value = serde_json::to_value(other).unwrap_or_default();
            let name = value.get("t").and_then(|t| t.as_str()).unwrap_or_default();
            let guild = value
                .get("d")
                .and_then(|d| d.get("guild_id"))
                .and_then(|id| id.as_str())
                .and_then(|id| id.parse().ok())
                .map(Id);
            let kind = match other {
                SEvent::Unknown(u) => EventKind::from_name(&u.kind),
                _ => EventKind::from_name(name),
            };
            (kind, guild, Event::Other)
        }
    };
    Dispatch {
        kind,
        seq,
        guild_id,
        event: converted,
    }
}
