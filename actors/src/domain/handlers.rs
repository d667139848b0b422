//! What each event means for the database: pure functions from (guild state, event) to
//! [`Op`]s. The guild actor runs them; the plain-loop baseline bench runs the same code.

use crate::domain::event::{Channel, Event, Id, MessageCreate};
use crate::domain::op::{ChannelRow, MessageRow, Op};
use crate::domain::stats::message_stats;
use std::collections::HashMap;

/// Channel types whose messages count for `message_stats`: text, voice, announcement,
/// announcement thread, public thread, private thread, forum.
const COUNTED_CHANNEL_TYPES: [u8; 7] = [0, 2, 5, 10, 11, 12, 15];

#[derive(Debug, Clone)]
struct ChannelState {
    name: Option<String>,
    kind: Option<u8>,
    parent_id: Option<Id>,
}

/// What a guild actor remembers between events: its guild's channels.
#[derive(Debug, Clone)]
pub struct GuildState {
    guild_id: Id,
    channels: HashMap<Id, ChannelState>,
}

impl GuildState {
    pub fn new(guild_id: Id) -> Self {
        GuildState {
            guild_id,
            channels: HashMap::new(),
        }
    }

    /// State restored from the database (after passivation or a restart).
    pub fn with_channels(guild_id: Id, rows: Vec<ChannelRow>) -> Self {
        let channels = rows
            .into_iter()
            .map(|r| {
                (
                    r.id,
                    ChannelState {
                        name: r.name,
                        kind: r.kind,
                        parent_id: r.parent_id,
                    },
                )
            })
            .collect();
        GuildState { guild_id, channels }
    }

    pub fn guild_id(&self) -> Id {
        self.guild_id
    }

    /// The ops for one event of this guild, in the order they must be applied.
    pub fn handle(&mut self, event: &Event) -> Vec<Op> {
        match event {
            Event::GuildCreate(g) => {
                for c in g.channels.iter().chain(&g.threads) {
                    self.remember(c);
                }
                let mut ops = vec![Op::EnsureGuild(self.guild_id)];
                ops.extend(
                    g.channels
                        .iter()
                        .chain(&g.threads)
                        .map(|c| self.upsert_op(c)),
                );
                ops
            }
            Event::ChannelUpsert(c) => {
                self.remember(c);
                vec![
                    self.upsert_op(c),
                    Op::RenameParent {
                        guild_id: self.guild_id,
                        parent_id: c.id,
                        name: c.name.clone(),
                    },
                ]
            }
            Event::ChannelDelete { id } => {
                self.channels.remove(id);
                vec![Op::DeleteChannel {
                    guild_id: self.guild_id,
                    id: *id,
                }]
            }
            Event::MessageCreate(m) => self.message_created(m),
            Event::MessageUpdate(m) => match &m.content {
                Some(content) => {
                    let mut ops = Vec::with_capacity(2);
                    if !content.is_empty() {
                        ops.push(Op::UpdateMessageStats {
                            guild_id: self.guild_id,
                            message_id: m.id,
                            stats: message_stats(content),
                        });
                    }
                    ops.push(Op::UpdateCache {
                        guild_id: self.guild_id,
                        message_id: m.id,
                        content: content.clone(),
                    });
                    ops
                }
                // A partial update (embeds resolved, pins...) changes nothing we store.
                None => Vec::new(),
            },
            Event::MessageDelete { ids } => ids
                .iter()
                .map(|id| Op::DeleteMessage {
                    guild_id: self.guild_id,
                    id: *id,
                })
                .collect(),
            Event::Reaction(r) => vec![Op::Reaction {
                guild_id: self.guild_id,
                message_id: r.message_id,
                user_id: r.user_id,
                emoji: r.emoji.key(),
                added: r.added,
            }],
            // Moderation events are the moderation log's; the rest store nothing.
            Event::Ready { .. }
            | Event::Ban { .. }
            | Event::MemberRemove { .. }
            | Event::MemberUpdate { .. }
            | Event::AuditEntry(_)
            | Event::Other => Vec::new(),
        }
    }

    fn remember(&mut self, c: &Channel) {
        self.channels.insert(
            c.id,
            ChannelState {
                name: c.name.clone(),
                kind: Some(c.kind),
                parent_id: c.parent_id,
            },
        );
    }

    fn parent_name(&self, channel_id: Id) -> Option<String> {
        let parent = self.channels.get(&channel_id)?.parent_id?;
        self.channels.get(&parent)?.name.clone()
    }

    fn upsert_op(&self, c: &Channel) -> Op {
        Op::UpsertChannel {
            id: c.id,
            guild_id: self.guild_id,
            name: c.name.clone(),
            category: self.parent_name(c.id),
            kind: c.kind,
            parent_id: c.parent_id,
        }
    }

    fn message_created(&self, m: &MessageCreate) -> Vec<Op> {
        if m.author.bot || m.author.system {
            return Vec::new();
        }
        let mut ops = Vec::with_capacity(2);
        ops.push(Op::UpsertCache {
            message_id: m.id,
            guild_id: self.guild_id,
            channel_id: m.channel_id,
            user_id: m.author.id,
            content: m.content.clone(),
        });
        // A channel we have never seen (no GUILD_CREATE yet) is counted, with no category:
        // dropping a human's message would lose more than a missing category does.
        let counted = self
            .channels
            .get(&m.channel_id)
            .and_then(|c| c.kind)
            .is_none_or(|kind| COUNTED_CHANNEL_TYPES.contains(&kind));
        if m.webhook_id.is_none() && counted && !m.content.is_empty() {
            ops.push(Op::InsertMessage(Box::new(MessageRow {
                message_id: m.id,
                author_id: m.author.id,
                guild_id: self.guild_id,
                channel_id: m.channel_id,
                channel_category: self.parent_name(m.channel_id),
                recipient_id: m.referenced_message.as_ref().map(|r| r.author.id),
                react_count: m.reactions as i64,
                sent_at: m.id.timestamp_ms(),
                stats: message_stats(&m.content),
            })));
        }
        ops
    }
}
