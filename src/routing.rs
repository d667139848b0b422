//! Which pod owns a guild, and where that pod answers: what `shard-of`, the owner endpoint and
//! every 421 answer say, computed in one place.

use gateway_actors::partition::{Partition, PartitionError};
use serde::{Deserialize, Serialize};

/// The base URL of pod `k`: `POD_URL_TEMPLATE` with `{ordinal}` replaced by k, or
/// `{ordinal+N}` by k + N (local runs give each pod a port of its own that way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    before: String,
    /// N of `{ordinal+N}`; None for one pod's URL, the same for every ordinal.
    offset: Option<u32>,
    after: String,
}

impl UrlTemplate {
    pub fn parse(template: &str) -> Result<UrlTemplate, String> {
        let start = template
            .find("{ordinal")
            .ok_or("must contain {ordinal} (or {ordinal+N})")?;
        let len = template[start..]
            .find('}')
            .ok_or("an unclosed {ordinal placeholder")?;
        let offset = match &template[start + "{ordinal".len()..start + len] {
            "" => 0,
            plus => plus
                .strip_prefix('+')
                .and_then(|n| n.parse().ok())
                .ok_or("the placeholder is {ordinal} or {ordinal+N} with a whole number N")?,
        };
        let (before, after) = (&template[..start], &template[start + len + 1..]);
        if !(before.starts_with("http://") || before.starts_with("https://")) {
            return Err("must start with http:// or https://".into());
        }
        if after.contains("{ordinal") {
            return Err("only one {ordinal} placeholder".into());
        }
        Ok(UrlTemplate {
            before: before.to_owned(),
            offset: Some(offset),
            after: after.trim_end_matches('/').to_owned(),
        })
    }

    /// One pod's base URL (`shard-of --from-pod`), whatever its ordinal.
    pub fn single(url: &str) -> Result<UrlTemplate, String> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err("must start with http:// or https://".into());
        }
        Ok(UrlTemplate {
            before: url.trim_end_matches('/').to_owned(),
            offset: None,
            after: String::new(),
        })
    }

    /// Whether the URLs differ by ordinal (a template, not one pod's URL).
    pub fn has_ordinal(&self) -> bool {
        self.offset.is_some()
    }

    pub fn url(&self, ordinal: u32) -> String {
        match self.offset {
            Some(offset) => format!(
                "{}{}{}",
                self.before,
                u64::from(ordinal) + u64::from(offset),
                self.after
            ),
            None => self.before.clone(),
        }
    }
}

/// A guild's owner: the body of `GET /v1/guilds/{id}/owner`, of `shard-of --json` lines, and
/// of 421 answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub guild_id: String,
    pub ordinal: u32,
    pub pods: u32,
    pub strategy: String,
    /// The bot's Discord shard count (ownership depends on it with `discord`).
    pub shards: u32,
    pub url: String,
    /// The committed ownership epoch this answer is from (absent from `shard-of`, which
    /// computes owners from its arguments alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl Owner {
    pub fn of(
        guild_id: &str,
        sharding: &Partition,
        urls: &UrlTemplate,
    ) -> Result<Owner, PartitionError> {
        let ordinal = sharding.owner_of_str(guild_id)?;
        Ok(Owner {
            guild_id: guild_id.to_owned(),
            ordinal,
            pods: sharding.pods,
            strategy: sharding.strategy.as_str().to_owned(),
            shards: sharding.shards,
            url: urls.url(ordinal),
            epoch: None,
        })
    }

    pub fn at_epoch(self, epoch: u64) -> Owner {
        Owner {
            epoch: Some(epoch),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let t = UrlTemplate::parse("http://gateway-{ordinal}.gateway:3000").unwrap();
        assert_eq!(t.url(2), "http://gateway-2.gateway:3000");
        let t = UrlTemplate::parse("http://127.0.0.1:{ordinal+27500}/").unwrap();
        assert_eq!(t.url(0), "http://127.0.0.1:27500");
        assert_eq!(t.url(11), "http://127.0.0.1:27511");
        for bad in [
            "http://gateway:3000",
            "gateway-{ordinal}:3000",
            "http://x-{ordinal-1}",
            "http://x-{ordinal",
            "http://{ordinal}-{ordinal}",
        ] {
            assert!(UrlTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
