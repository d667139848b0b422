//! A synthetic gateway stream with a realistic shape: a few hundred guilds of skewed
//! activity (a few busy, many quiet), human and bot messages with markdown, code and links,
//! replies, reactions, edits, deletes, slash commands, DMs, and dense moderation: incidents of one to four
//! bans, unbans, kicks and timeouts in one guild within a few events, their audit log entries
//! early, in order, late (up to 40 messages after, interleaved with other incidents) or
//! missing. Deterministic for given sizes, so runs compare. Used by `simulate`, the tests and
//! the benches.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;
const START_MS: u64 = 1_736_000_000_000;

/// Message texts used when the caller has none (the benches use the TypeScript bot's).
pub const DEFAULT_TEXTS: &[&str] = &[
    "hello everyone, how is the deploy going?",
    "I think the reducer is wrong here, can someone check",
    "merci beaucoup, ça marche très bien maintenant",
    "check this out https://github.com/facebook/react/issues/123",
    "`npm install` fixed it for me",
    "```rust\nfn main() {\n    println!(\"hi\");\n}\n```",
    "see [the docs](https://docs.rs/serenity) for the details",
    "สวัสดีครับ ทุกคน",
    "日本語のテキストも少しあります",
    "lol 😂 that's great 👍🏽",
    "can we talk about the release tomorrow? 1️⃣ 2️⃣",
    "> quoted text\nand my answer below",
];

/// A tiny deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn snowflake(ms: u64, low: u64) -> u64 {
    ((ms - DISCORD_EPOCH_MS) << 22) | (low & 0x3F_FFFF)
}

struct Guild {
    id: u64,
    channels: Vec<u64>,
    members: Vec<u64>,
}

/// Writes `messages` messages (plus the other events) over `guilds` guilds to `path`;
/// returns the number of events.
pub fn write_file(path: &Path, guilds: u32, messages: u64) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let n = generate(&mut out, guilds, messages, DEFAULT_TEXTS)?;
    out.flush()?;
    Ok(n)
}

/// Writes the stream as NDJSON to `out`, message contents drawn from `texts`; returns the
/// number of events.
pub fn generate<W: Write, S: AsRef<str>>(
    out: W,
    guilds: u32,
    messages: u64,
    texts: &[S],
) -> std::io::Result<u64> {
    let guilds = guilds.max(1);
    let texts: Vec<&str> = if texts.is_empty() {
        DEFAULT_TEXTS.to_vec()
    } else {
        texts.iter().map(AsRef::as_ref).collect()
    };
    // Every draw below comes from this one generator, in a fixed order: that order is what
    // makes a stream the same for the same sizes.
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (u64::from(guilds) << 32) ^ messages);
    let mut out = Emitter::new(out);
    let mut all = Vec::new();
    for g in 0..u64::from(guilds) {
        let (guild, d) = guild_create(&mut rng, g);
        out.emit("GUILD_CREATE", &d)?;
        all.push(guild);
    }
    let mut traffic = Traffic::new(&all, &texts);
    for n in 0..messages {
        traffic.message(&mut out, &mut rng, n)?;
    }
    traffic.remaining_entries(&mut out)?;
    Ok(out.seq)
}

/// Numbers the dispatches and writes them, one NDJSON line each.
struct Emitter<W> {
    out: W,
    seq: u64,
    line: String,
}

impl<W: Write> Emitter<W> {
    fn new(out: W) -> Self {
        Emitter {
            out,
            seq: 0,
            line: String::with_capacity(1024),
        }
    }

    fn emit(&mut self, t: &str, d: &str) -> std::io::Result<()> {
        self.seq += 1;
        self.line.clear();
        let _ = write!(
            self.line,
            r#"{{"op":0,"t":"{t}","s":{},"d":{d}}}"#,
            self.seq
        );
        self.out.write_all(self.line.as_bytes())?;
        self.out.write_all(b"\n")
    }
}

/// An application command from `user` in `channel`, the `n`th of the stream.
fn interaction(guild: u64, channel: u64, user: u64, n: u64) -> String {
    let id = snowflake(START_MS, n);
    format!(
        r#"{{"id":"{id}","application_id":"1000000000000000001","type":2,"data":{{"id":"1000000000000000002","name":"report","type":1,"options":[]}},"guild_id":"{guild}","channel":{{"id":"{channel}","type":0,"name":"chan"}},"channel_id":"{channel}","member":{{"user":{{"id":"{user}","username":"u{user}","discriminator":"0","global_name":null,"avatar":null}},"roles":[],"joined_at":"2025-01-05T00:43:47.557+00:00","deaf":false,"mute":false,"flags":0,"permissions":"0"}},"token":"interaction-{n}","version":1,"app_permissions":"0","locale":"en-US","guild_locale":"en-US","entitlements":[],"authorizing_integration_owners":{{"0":"{guild}"}},"context":0,"attachment_size_limit":8388608}}"#
    )
}

/// Guild `g`: its ids, and its GUILD_CREATE (a category, four channels and a thread).
fn guild_create(rng: &mut Rng, g: u64) -> (Guild, String) {
    // Guild ids minted over a year, so both shard functions spread them.
    let id = snowflake(START_MS - 365 * 86_400_000 + rng.below(365 * 86_400_000), g);
    let category = id + 1;
    let channels: Vec<u64> = (2..6).map(|c| id + c).collect();
    let members: Vec<u64> = (0..20)
        .map(|m| 1_000_000_000_000_000 + g * 100 + m)
        .collect();
    let thread = id + 9;
    let channel_json = |cid: u64, kind: u8, name: String, parent: Option<u64>| {
        serde_json::json!({
            "id": cid.to_string(), "type": kind, "guild_id": id.to_string(), "name": name, "position": 0,
            "permission_overwrites": [], "nsfw": false, "parent_id": parent.map(|p| p.to_string()),
            "topic": null, "last_message_id": null, "rate_limit_per_user": 0
        })
    };
    let mut chans = vec![channel_json(category, 4, "General".into(), None)];
    for (i, c) in channels.iter().enumerate() {
        chans.push(channel_json(
            *c,
            [0, 0, 2, 5][i],
            format!("chan-{g}-{i}"),
            Some(category),
        ));
    }
    // What Discord sends of a small guild's members (below its large threshold: all of them).
    let member_json: Vec<serde_json::Value> = members
        .iter()
        .map(|m| serde_json::json!({"user": {"id": m.to_string(), "username": format!("u{m}"), "discriminator": "0",
            "global_name": null, "avatar": null}, "roles": [], "joined_at": "2025-01-05T00:43:47.557+00:00",
            "deaf": false, "mute": false, "flags": 0, "pending": false}))
        .collect();
    let d = serde_json::json!({
        "id": id.to_string(), "name": format!("Guild {g}"), "icon": null, "splash": null, "discovery_splash": null,
        "owner_id": members[0].to_string(), "afk_channel_id": null, "afk_timeout": 300, "verification_level": 0,
        "default_message_notifications": 0, "explicit_content_filter": 0,
        "roles": [{"id": id.to_string(), "name": "@everyone", "color": 0, "hoist": false, "icon": null,
            "unicode_emoji": null, "position": 0, "permissions": "0", "managed": false, "mentionable": false, "flags": 0},
            {"id": (id + 10).to_string(), "name": "Moderator", "color": 3447003, "hoist": true, "icon": null,
            "unicode_emoji": null, "position": 1, "permissions": "1099511627775", "managed": false, "mentionable": true, "flags": 0}],
        "emojis": [], "features": [], "mfa_level": 0, "application_id": null, "system_channel_id": null,
        "system_channel_flags": 0, "rules_channel_id": null, "max_members": 500000, "vanity_url_code": null,
        "description": null, "banner": null, "premium_tier": 0, "premium_subscription_count": 0,
        "preferred_locale": "en-US", "public_updates_channel_id": null, "max_video_channel_users": 25,
        "nsfw_level": 0, "stickers": [], "premium_progress_bar_enabled": false, "safety_alerts_channel_id": null,
        "joined_at": "2025-01-05T00:43:47.557+00:00", "large": false, "unavailable": false, "member_count": 20,
        "voice_states": [], "members": member_json, "channels": chans,
        "threads": [{"id": thread.to_string(), "type": 11, "guild_id": id.to_string(), "name": format!("thread-{g}"),
            "nsfw": false, "parent_id": channels[0].to_string(), "owner_id": members[0].to_string(),
            "message_count": 0, "member_count": 1, "rate_limit_per_user": 0, "flags": 0, "last_message_id": null,
            "thread_metadata": {"archived": false, "auto_archive_duration": 1440,
                "archive_timestamp": "2025-01-05T00:44:23.910+00:00", "locked": false}}],
        "presences": [], "stage_instances": [], "guild_scheduled_events": []
    })
    .to_string();
    let mut all_channels = channels;
    all_channels.push(thread);
    let guild = Guild {
        id,
        channels: all_channels,
        members,
    };
    (guild, d)
}

/// The traffic after the GUILD_CREATEs: messages in skewed guilds, and what follows them.
struct Traffic<'a> {
    guilds: &'a [Guild],
    texts: &'a [&'a str],
    /// Skewed activity: guild i is picked with weight ~ 1/(i+1); these are the cumulative
    /// shares.
    cumulative: Vec<f64>,
    /// The last 64 guild messages (guild index, message id): reply, react, edit, delete targets.
    recent: Vec<(usize, u64)>,
    /// Audit log entries that come late: (the message after which, the entry).
    late: Vec<(u64, String)>,
    /// (guild, member, action) whose event once came without its entry.
    burned: std::collections::HashSet<(u64, u64, u8)>,
    clock: u64,
}

impl<'a> Traffic<'a> {
    fn new(guilds: &'a [Guild], texts: &'a [&'a str]) -> Self {
        let weights: Vec<f64> = (0..guilds.len()).map(|i| 1.0 / (i as f64 + 1.0)).collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cumulative.push(acc);
        }
        Traffic {
            guilds,
            texts,
            cumulative,
            recent: Vec::new(),
            late: Vec::new(),
            burned: std::collections::HashSet::new(),
            clock: START_MS,
        }
    }

    /// Message `n` (a DM one time in 200), then what may follow it in a recent message's
    /// guild, then the late audit entries due by now.
    fn message<W: Write>(
        &mut self,
        out: &mut Emitter<W>,
        rng: &mut Rng,
        n: u64,
    ) -> std::io::Result<()> {
        self.clock += 1 + rng.below(20);
        let r = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        let gi = self
            .cumulative
            .partition_point(|&c| c < r)
            .min(self.guilds.len() - 1);
        let guild = &self.guilds[gi];
        let channel = guild.channels[rng.below(guild.channels.len() as u64) as usize];
        let author = guild.members[rng.below(guild.members.len() as u64) as usize];
        let id = snowflake(self.clock, n);
        let content =
            serde_json::to_string(self.texts[rng.below(self.texts.len() as u64) as usize])?;
        let bot = rng.below(20) == 0;
        let timestamp = gateway_actors::time::iso8601(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.clock),
        );
        let common = format!(
            r#""timestamp":"{timestamp}","edited_timestamp":null,"tts":false,"mention_everyone":false,"mentions":[],"mention_roles":[],"attachments":[],"embeds":[],"pinned":false,"type":0"#
        );
        let reply = match self.recent.last() {
            Some(&(_, prev)) if rng.below(10) == 0 => format!(
                r#","message_reference":{{"message_id":"{prev}","channel_id":"{channel}"}},"referenced_message":{{"id":"{prev}","channel_id":"{channel}","author":{{"id":"{author}","username":"u","discriminator":"0","global_name":null,"avatar":null}},"content":"earlier","timestamp":"{timestamp}","edited_timestamp":null,"tts":false,"mention_everyone":false,"mentions":[],"mention_roles":[],"attachments":[],"embeds":[],"pinned":false,"type":0}}"#
            ),
            _ => String::new(),
        };
        if rng.below(200) == 0 {
            // A DM: no guild.
            return out.emit(
                "MESSAGE_CREATE",
                &format!(
                    r#"{{"id":"{id}","channel_id":"{}","author":{{"id":"{author}","username":"u{author}","discriminator":"0","global_name":null,"avatar":null}},"content":{content},{common}}}"#,
                    id + 7
                ),
            );
        }
        out.emit(
            "MESSAGE_CREATE",
            &format!(
                r#"{{"id":"{id}","channel_id":"{channel}","guild_id":"{}","author":{{"id":"{author}","username":"u{author}","discriminator":"0","global_name":null,"avatar":null,"bot":{bot}}},"content":{content},{common}{reply}}}"#,
                guild.id
            ),
        )?;
        self.recent.push((gi, id));
        if self.recent.len() > 64 {
            self.recent.remove(0);
        }
        self.follow_up(out, rng, n)?;
        self.due_entries(out, n)
    }

    /// On a recent message: 10% reaction adds, 2% removes, 3% edits, 2% deletes, 1% a
    /// moderation incident in its guild, and 2% a slash command there.
    fn follow_up<W: Write>(
        &mut self,
        out: &mut Emitter<W>,
        rng: &mut Rng,
        n: u64,
    ) -> std::io::Result<()> {
        let roll = rng.below(100);
        let (rgi, target) = self.recent[rng.below(self.recent.len() as u64) as usize];
        let rg = &self.guilds[rgi];
        let user = rg.members[rng.below(rg.members.len() as u64) as usize];
        let (channel, guild) = (rg.channels[0], rg.id);
        match roll {
            0..=11 => {
                let t = if roll < 10 {
                    "MESSAGE_REACTION_ADD"
                } else {
                    "MESSAGE_REACTION_REMOVE"
                };
                out.emit(
                    t,
                    &format!(
                        r#"{{"user_id":"{user}","channel_id":"{channel}","message_id":"{target}","guild_id":"{guild}","emoji":{{"id":null,"name":"👍"}},"burst":false,"type":0}}"#
                    ),
                )
            }
            12..=14 => out.emit(
                "MESSAGE_UPDATE",
                &format!(
                    r#"{{"id":"{target}","channel_id":"{channel}","guild_id":"{guild}","content":"edited: {n}"}}"#
                ),
            ),
            15..=16 => out.emit(
                "MESSAGE_DELETE",
                &format!(r#"{{"id":"{target}","channel_id":"{channel}","guild_id":"{guild}"}}"#),
            ),
            17 => self.incident(out, rng, rgi, n),
            // A slash command (the bot's /report, /track, ...): what its handlers answer.
            18..=19 => out.emit("INTERACTION_CREATE", &interaction(guild, channel, user, n)),
            _ => Ok(()),
        }
    }

    /// A moderation incident: one to four actions in one guild within a few events, so
    /// several wait in one audit window; their entries early, in order, late or missing.
    fn incident<W: Write>(
        &mut self,
        out: &mut Emitter<W>,
        rng: &mut Rng,
        gi: usize,
        n: u64,
    ) -> std::io::Result<()> {
        let rg = &self.guilds[gi];
        for k in 0..1 + rng.below(4) {
            let action = moderation_action(rng);
            let Some(user) = self.unburned_member(rng, rg, &action) else {
                continue;
            };
            // Unique: one incident per message, whose clock only grows.
            let entry_id = snowflake(self.clock, 0x20_0000 | k);
            let (event_type, event, entry) = moderation_frames(&action, rg, user, entry_id);
            match rng.below(20) {
                // Early: the audit entry before its event.
                0..=3 => {
                    out.emit("GUILD_AUDIT_LOG_ENTRY_CREATE", &entry)?;
                    out.emit(event_type, &event)?;
                }
                // Late: the entry some messages later (possibly after other actions).
                4..=8 => {
                    out.emit(event_type, &event)?;
                    self.late.push((n + 2 + rng.below(40), entry));
                }
                // Missing: no entry at all.
                9..=11 => {
                    out.emit(event_type, &event)?;
                    self.burned.insert((rg.id, user, action.key()));
                }
                _ => {
                    out.emit(event_type, &event)?;
                    out.emit("GUILD_AUDIT_LOG_ENTRY_CREATE", &entry)?;
                }
            }
        }
        Ok(())
    }

    /// A member (not the owner, who moderates) for `action`, from a random start. One whose
    /// event of this kind once came without an entry gets no more of that kind: which event
    /// a later entry pairs with would depend on timing (whether the first still waits), and
    /// runs would not compare.
    fn unburned_member(&self, rng: &mut Rng, rg: &Guild, action: &ModAction) -> Option<u64> {
        let others = rg.members.len() - 1;
        let first = 1 + rng.below(others as u64) as usize;
        (0..others)
            .map(|i| rg.members[1 + (first - 1 + i) % others])
            .find(|u| !self.burned.contains(&(rg.id, *u, action.key())))
    }

    /// Entries that come late, in the order they fall due.
    fn due_entries<W: Write>(&mut self, out: &mut Emitter<W>, n: u64) -> std::io::Result<()> {
        let mut i = 0;
        while i < self.late.len() {
            if self.late[i].0 <= n {
                let (_, entry) = self.late.remove(i);
                out.emit("GUILD_AUDIT_LOG_ENTRY_CREATE", &entry)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// The late entries still waiting when the stream ends.
    fn remaining_entries<W: Write>(&mut self, out: &mut Emitter<W>) -> std::io::Result<()> {
        for (_, entry) in self.late.drain(..) {
            out.emit("GUILD_AUDIT_LOG_ENTRY_CREATE", &entry)?;
        }
        Ok(())
    }
}

enum ModAction {
    Ban,
    Unban,
    Kick,
    /// A timeout ending this many days after 2099-01-01 (always in the future).
    Timeout(u64),
    TimeoutRemoved,
}

impl ModAction {
    /// What an audit entry is paired by, besides the member.
    fn key(&self) -> u8 {
        match self {
            ModAction::Ban => 0,
            ModAction::Unban => 1,
            ModAction::Kick => 2,
            ModAction::Timeout(_) => 3,
            ModAction::TimeoutRemoved => 4,
        }
    }
}

fn moderation_action(rng: &mut Rng) -> ModAction {
    match rng.below(100) {
        0..=29 => ModAction::Ban,
        30..=44 => ModAction::Unban,
        45..=64 => ModAction::Kick,
        65..=89 => ModAction::Timeout(rng.below(300)),
        _ => ModAction::TimeoutRemoved,
    }
}

/// The dispatch of a moderation action (its type and payload) and its audit log entry.
fn moderation_frames(
    action: &ModAction,
    guild: &Guild,
    user: u64,
    entry_id: u64,
) -> (&'static str, String, String) {
    let g = guild.id;
    let executor = guild.members[0];
    let user_json = format!(
        r#"{{"id":"{user}","username":"u{user}","discriminator":"0","global_name":null,"avatar":null}}"#
    );
    let scoped = format!(r#"{{"guild_id":"{g}","user":{user_json}}}"#);
    // Noon UTC: a duration in days rounds the same all day long (it flips at midnight).
    let until = |days: u64| {
        let ms = 4_070_952_000_000 + days * 86_400_000;
        gateway_actors::time::iso8601(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
    };
    let member = |until: Option<String>| {
        let until = until.map_or("null".to_owned(), |u| format!("\"{u}\""));
        format!(
            r#"{{"guild_id":"{g}","user":{user_json},"roles":[],"joined_at":"2024-01-01T00:00:00.000000+00:00","communication_disabled_until":{until}}}"#
        )
    };
    let entry = |action_type: u16, changes: &str| {
        format!(
            r#"{{"guild_id":"{g}","id":"{entry_id}","action_type":{action_type},"target_id":"{user}","user_id":"{executor}","reason":"spam","changes":{changes}}}"#
        )
    };
    match action {
        ModAction::Ban => ("GUILD_BAN_ADD", scoped, entry(22, "null")),
        ModAction::Unban => ("GUILD_BAN_REMOVE", scoped, entry(23, "null")),
        ModAction::Kick => ("GUILD_MEMBER_REMOVE", scoped, entry(20, "null")),
        ModAction::Timeout(days) => {
            let until = until(*days);
            (
                "GUILD_MEMBER_UPDATE",
                member(Some(until.clone())),
                entry(
                    24,
                    &format!(r#"[{{"key":"communication_disabled_until","new_value":"{until}"}}]"#),
                ),
            )
        }
        ModAction::TimeoutRemoved => (
            "GUILD_MEMBER_UPDATE",
            member(None),
            entry(
                24,
                r#"[{"key":"communication_disabled_until","old_value":"2099-01-01T12:00:00.000000+00:00"}]"#,
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FNV-1a: a stable digest of a generated stream (std's hashers may change).
    fn digest(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    }

    /// Runs compare only if a stream is the same for the same sizes, byte for byte.
    #[test]
    fn the_stream_is_the_same_for_the_same_sizes() {
        let mut out = Vec::new();
        let n = generate(&mut out, 40, 20_000, DEFAULT_TEXTS).unwrap();
        // Pinned when slash commands (2% of follow-ups, no extra draw) and the guilds' members
        // joined the stream; the draws are those pinned before `generate` was split into steps.
        assert_eq!(
            (n, out.len(), digest(&out)),
            (24_858, 12_929_186, 0x3850_e446_b3ce_d802)
        );
    }
}
