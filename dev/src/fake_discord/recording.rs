//! The recorded stream the fake plays: its dispatches, the channels REST answers about, the
//! guilds the bot is in, and Discord's routing of a guild's events to a shard.

use anyhow::Context as _;
use gateway_actors::event::decode_frame;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::path::Path;

/// One dispatch of the recorded stream.
pub struct Frame {
    pub name: String,
    pub guild_id: Option<u64>,
    pub data: Box<RawValue>,
}

/// The recorded stream and what the REST API answers about it.
pub struct Recording {
    pub frames: Vec<Frame>,
    /// Channel objects by id, from GUILD_CREATE channels and threads.
    pub channels: HashMap<u64, Box<RawValue>>,
    /// Every guild of the stream (a guild id of any dispatch), sorted, once each: the guilds
    /// the bot is in.
    pub guilds: Vec<u64>,
}

#[derive(serde::Deserialize)]
struct WireFrame {
    t: String,
    d: Box<RawValue>,
}

#[derive(serde::Deserialize)]
struct ChannelsOf {
    #[serde(default)]
    channels: Vec<Box<RawValue>>,
    #[serde(default)]
    threads: Vec<Box<RawValue>>,
}

#[derive(serde::Deserialize)]
struct IdOf {
    id: gateway_actors::event::Id,
}

impl Recording {
    /// Reads an NDJSON stream in the `replay` format.
    pub fn load(path: &Path) -> anyhow::Result<Recording> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Recording> {
        let mut frames = Vec::new();
        let mut channels = HashMap::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let dispatch = decode_frame(line).with_context(|| format!("line {}", n + 1))?;
            let wire: WireFrame =
                serde_json::from_str(line).with_context(|| format!("line {}", n + 1))?;
            if wire.t == "GUILD_CREATE" {
                let of: ChannelsOf = serde_json::from_str(wire.d.get())
                    .with_context(|| format!("line {}", n + 1))?;
                for raw in of.channels.into_iter().chain(of.threads) {
                    let IdOf { id } = serde_json::from_str(raw.get())
                        .with_context(|| format!("line {}: channel id", n + 1))?;
                    channels.insert(id.0, raw);
                }
            }
            frames.push(Frame {
                name: wire.t,
                guild_id: dispatch.guild_id.map(|g| g.0),
                data: wire.d,
            });
        }
        let mut guilds: Vec<u64> = frames.iter().filter_map(|f| f.guild_id).collect();
        guilds.sort_unstable();
        guilds.dedup();
        Ok(Recording {
            frames,
            channels,
            guilds,
        })
    }

    /// How many of the stream's guilds shard `[id, total]` holds.
    pub fn guilds_on(&self, shard: [u32; 2]) -> u64 {
        let [id, total] = shard;
        if total <= 1 {
            return self.guilds.len() as u64;
        }
        self.guilds
            .iter()
            .filter(|&&g| (g >> 22) % u64::from(total) == u64::from(id))
            .count() as u64
    }

    /// The frames Discord would route to shard `[id, total]`.
    pub fn frames_for(&self, shard: [u32; 2]) -> Vec<usize> {
        let [id, total] = shard;
        (0..self.frames.len())
            .filter(|&i| match self.frames[i].guild_id {
                _ if total <= 1 => true,
                Some(guild) => (guild >> 22) % u64::from(total) == u64::from(id),
                None => id == 0,
            })
            .collect()
    }
}
