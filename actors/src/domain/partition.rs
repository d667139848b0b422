//! Which pod owns a guild.
//!
//! Two strategies, both pure functions of (guild id, pod count N, Discord shard count S):
//! - `md5`: the TypeScript services' function, so that HTTP routing and gateway ownership agree
//!   bit for bit: `md5(utf8(guild_id))[0..4]` as a big-endian u32, modulo N. S does not matter:
//!   every pod connects all S shards and keeps its 1/N.
//! - `discord`: Discord's own shard routing. A guild is on shard `(guild_id >> 22) % S`, and
//!   shard s runs on pod `s % N` (round robin, so adding shards spreads them over every pod),
//!   so a pod receives only its own guilds' traffic. With S = N (the default) that is
//!   `(guild_id >> 22) % N`.

use crate::domain::decimal::Decimal;
use md5::{Digest, Md5};
use std::fmt;
use std::str::FromStr;

/// How guilds are assigned to pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    Md5,
    Discord,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Md5 => "md5",
            Strategy::Discord => "discord",
        }
    }
}

impl serde::Serialize for Strategy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = PartitionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "md5" => Ok(Strategy::Md5),
            "discord" => Ok(Strategy::Discord),
            other => Err(PartitionError::UnknownStrategy(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PartitionError {
    #[error("unknown shard strategy {0:?} (expected md5 or discord)")]
    UnknownStrategy(String),
    #[error("guild id {0:?} is not a numeric snowflake (the discord strategy needs one)")]
    NotNumeric(String),
    #[error("the number of pods must be at least 1")]
    NoPods,
    #[error("guild id {0:?} is not a Discord snowflake (a decimal number from 1 to 18446744073709551615, without leading zeros)")]
    NotSnowflake(String),
}

/// A guild id as Discord writes one: decimal digits, no sign, no leading zero, at least 1 and
/// at most u64::MAX. Everything the pod accepts from outside (the API, fan-out lists,
/// `shard-of`) goes through this, so no row is ever keyed by an id no pod would route alike.
pub fn parse_snowflake(guild_id: &str) -> Result<u64, PartitionError> {
    let bad = || PartitionError::NotSnowflake(guild_id.chars().take(40).collect());
    if guild_id.is_empty()
        || guild_id.starts_with('0')
        || !guild_id.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    guild_id.parse().map_err(|_| bad())
}

/// The first four bytes of md5(id) as a big-endian u32: the value the TypeScript services use.
pub fn md5_u32(guild_id: &str) -> u32 {
    let digest = Md5::digest(guild_id.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The owner of a guild id given as the string the TypeScript services hash, with the default
/// shard count (S = N for `discord`); [`Partition::owner_of_str`] takes any S.
pub fn owner_of_str(strategy: Strategy, guild_id: &str, pods: u32) -> Result<u32, PartitionError> {
    if pods == 0 {
        return Err(PartitionError::NoPods);
    }
    match strategy {
        Strategy::Md5 => Ok(md5_u32(guild_id) % pods),
        Strategy::Discord => {
            let id: u64 = guild_id
                .parse()
                .map_err(|_| PartitionError::NotNumeric(guild_id.to_owned()))?;
            Ok(discord_shard(id, pods))
        }
    }
}

/// Discord's routing of a guild to one of `shards` gateway shards.
pub(crate) fn discord_shard(guild_id: u64, shards: u32) -> u32 {
    ((guild_id >> 22) % u64::from(shards)) as u32
}

/// The shard count when none is set: one unsharded session per pod for `md5`, one shard per
/// pod for `discord`.
pub fn default_shards(strategy: Strategy, pods: u32) -> u32 {
    match strategy {
        Strategy::Md5 => 1,
        Strategy::Discord => pods,
    }
}

/// Ownership of numeric guild ids for one pod; the hot-path form used by the shard filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    pub strategy: Strategy,
    pub ordinal: u32,
    pub pods: u32,
    /// The bot's Discord shard count S (at least 1; for `discord` at least `pods`).
    pub shards: u32,
}

impl Partition {
    /// Pod `ordinal` of `pods`, with the default shard count.
    pub fn new(strategy: Strategy, ordinal: u32, pods: u32) -> Partition {
        Partition {
            strategy,
            ordinal,
            pods,
            shards: default_shards(strategy, pods),
        }
    }

    /// The pod that owns `guild_id`.
    pub fn owner(&self, guild_id: u64) -> u32 {
        match self.strategy {
            // A snowflake's canonical decimal form is the string the TypeScript side hashes.
            Strategy::Md5 => md5_u32(&Decimal::new(guild_id)) % self.pods,
            Strategy::Discord => self.pod_of_shard(discord_shard(guild_id, self.shards)),
        }
    }

    /// The owner of a guild id as text (what the HTTP services send).
    pub fn owner_of_str(&self, guild_id: &str) -> Result<u32, PartitionError> {
        match self.strategy {
            Strategy::Md5 => owner_of_str(Strategy::Md5, guild_id, self.pods),
            Strategy::Discord => {
                let id: u64 = guild_id
                    .parse()
                    .map_err(|_| PartitionError::NotNumeric(guild_id.to_owned()))?;
                Ok(self.owner(id))
            }
        }
    }

    /// The pod that runs Discord shard `shard` (`discord`; with `md5` every pod runs them all).
    pub fn pod_of_shard(&self, shard: u32) -> u32 {
        shard % self.pods
    }

    /// The Discord shards this pod connects, in order.
    pub fn pod_shards(&self) -> Vec<u32> {
        match self.strategy {
            Strategy::Md5 => (0..self.shards).collect(),
            Strategy::Discord => (0..self.shards)
                .filter(|&s| self.pod_of_shard(s) == self.ordinal)
                .collect(),
        }
    }

    /// Does this pod own `guild_id`? Guild-less events (`None`) belong to pod 0, as on Discord.
    pub fn owns(&self, guild_id: Option<u64>) -> bool {
        match guild_id {
            Some(id) => self.owner(id) == self.ordinal,
            None => self.ordinal == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_string_forms_agree() {
        for id in [0u64, 7, 1325263406417087088, u64::MAX] {
            for pods in 1..8 {
                let s = Partition::new(Strategy::Md5, 0, pods);
                assert_eq!(
                    s.owner(id),
                    owner_of_str(Strategy::Md5, &id.to_string(), pods).unwrap()
                );
                let d = Partition::new(Strategy::Discord, 0, pods);
                assert_eq!(
                    d.owner(id),
                    owner_of_str(Strategy::Discord, &id.to_string(), pods).unwrap()
                );
            }
        }
    }

    #[test]
    fn discord_strategy_rejects_non_numeric_ids() {
        assert_eq!(
            owner_of_str(Strategy::Discord, "abc", 3),
            Err(PartitionError::NotNumeric("abc".into()))
        );
        assert_eq!(
            owner_of_str(Strategy::Md5, "1", 0),
            Err(PartitionError::NoPods)
        );
    }

    #[test]
    fn guildless_events_belong_to_pod_zero() {
        let s = |ordinal| Partition::new(Strategy::Md5, ordinal, 3);
        assert!(s(0).owns(None));
        assert!(!s(1).owns(None));
    }

    #[test]
    fn discord_shards_are_dealt_round_robin_and_owners_follow_them() {
        let pod = |ordinal| Partition {
            shards: 8,
            ..Partition::new(Strategy::Discord, ordinal, 3)
        };
        assert_eq!(pod(0).pod_shards(), [0, 3, 6]);
        assert_eq!(pod(1).pod_shards(), [1, 4, 7]);
        assert_eq!(pod(2).pod_shards(), [2, 5]);
        for id in [
            0u64,
            1 << 22,
            5 << 22,
            7 << 22,
            1325263406417087088,
            u64::MAX,
        ] {
            let shard = discord_shard(id, 8);
            assert_eq!(pod(0).owner(id), shard % 3);
            assert!(pod(shard % 3).pod_shards().contains(&shard));
            assert_eq!(pod(0).owner_of_str(&id.to_string()), Ok(shard % 3));
        }
        // md5 pods run every shard, and S does not move a guild.
        let md5 = Partition {
            shards: 4,
            ..Partition::new(Strategy::Md5, 2, 3)
        };
        assert_eq!(md5.pod_shards(), [0, 1, 2, 3]);
        assert_eq!(
            md5.owner(1325263406417087088),
            Partition::new(Strategy::Md5, 2, 3).owner(1325263406417087088)
        );
    }
}
