//! A guild as a relay client must first see it: the GUILD_CREATE Discord sent the pod, with
//! every change since applied, so that the `GUILD_CREATE` the relay sends a client that
//! connects later builds the same cache in discord.js as the live stream would have.
//!
//! What it keeps, and what that costs:
//! - the guild's own fields (name, owner, features, ...) as Discord sent them;
//! - channels, threads, roles, emojis, stickers, stage instances and scheduled events, keyed by
//!   id, as their create and update events leave them (a delete removes, an archived thread
//!   leaves the active list, as Discord's own GUILD_CREATE lists active threads only);
//! - the members Discord sent in its GUILD_CREATE (without the presences intent: the bot, and
//!   members in voice), updated by member updates, at most [`MAX_MEMBERS`] of them (joins add
//!   while below the bound); `member_count` follows joins and leaves;
//! - voice states and presences are not kept (the bot's intents have neither); they go out
//!   empty.
//!
//! A typical guild's document is the size of its GUILD_CREATE without members: about 15 to
//! 25 KB for 30 channels and 25 roles; [`GuildDoc::approx_bytes`] estimates it for the metric.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Members kept beyond the bot's own: Discord itself sends all members of a guild only below
/// its large threshold (250 for the pod's sessions).
pub const MAX_MEMBERS: usize = 250;

/// The collections a document keeps by id, with the key of each in a GUILD_CREATE.
const COLLECTIONS: [&str; 7] = [
    "channels",
    "threads",
    "roles",
    "emojis",
    "stickers",
    "stage_instances",
    "guild_scheduled_events",
];

/// Fields of a GUILD_CREATE that are not kept: sent empty (or as the document knows them).
const NOT_KEPT: [&str; 4] = ["members", "voice_states", "presences", "unavailable"];

#[derive(Debug, Clone, PartialEq)]
pub struct GuildDoc {
    id: String,
    /// Every top-level field but the collections and what is not kept.
    fields: Map<String, Value>,
    /// Per collection of [`COLLECTIONS`]: its items by id, in id order.
    collections: BTreeMap<&'static str, BTreeMap<String, Value>>,
    /// Members by user id.
    members: BTreeMap<String, Value>,
    member_count: i64,
}

impl GuildDoc {
    /// The document of a guild from its GUILD_CREATE's `d`; None for an unavailable guild (an
    /// outage: Discord sends its state again later) or one without an id.
    pub fn from_guild_create(d: &Value) -> Option<GuildDoc> {
        let object = d.as_object()?;
        if object.get("unavailable") == Some(&Value::Bool(true)) {
            return None;
        }
        let id = object.get("id")?.as_str()?.to_owned();
        let mut doc = GuildDoc {
            id,
            fields: Map::new(),
            collections: COLLECTIONS.iter().map(|c| (*c, BTreeMap::new())).collect(),
            members: BTreeMap::new(),
            member_count: object
                .get("member_count")
                .and_then(Value::as_i64)
                .unwrap_or(0),
        };
        for (key, value) in object {
            if let Some(collection) = COLLECTIONS.iter().find(|c| **c == key) {
                doc.collections.insert(collection, by_id(value));
            } else if key == "members" {
                for member in value.as_array().into_iter().flatten() {
                    if let Some(user) = member_user_id(member) {
                        if doc.members.len() < MAX_MEMBERS {
                            doc.members.insert(user, member.clone());
                        }
                    }
                }
            } else if key != "member_count" && !NOT_KEPT.contains(&key.as_str()) {
                doc.fields.insert(key.clone(), value.clone());
            }
        }
        Some(doc)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Applies one dispatch of this guild (`t` and its `d`); kinds that change no state are
    /// ignored. Returns whether the document changed.
    pub fn apply(&mut self, kind: &str, d: &Value) -> bool {
        match kind {
            "GUILD_CREATE" => match GuildDoc::from_guild_create(d) {
                Some(fresh) => {
                    *self = fresh;
                    true
                }
                None => false,
            },
            "GUILD_UPDATE" => {
                let Some(object) = d.as_object() else {
                    return false;
                };
                for (key, value) in object {
                    if !COLLECTIONS.contains(&key.as_str())
                        && !NOT_KEPT.contains(&key.as_str())
                        && key != "member_count"
                    {
                        self.fields.insert(key.clone(), value.clone());
                    }
                }
                // GUILD_UPDATE carries the guild's roles and emojis too.
                for collection in ["roles", "emojis"] {
                    if let Some(items) = object.get(collection) {
                        self.collections.insert(collection, by_id(items));
                    }
                }
                true
            }
            "CHANNEL_CREATE" | "CHANNEL_UPDATE" => self.put("channels", d),
            "CHANNEL_DELETE" => self.remove("channels", d.get("id")),
            "THREAD_CREATE" | "THREAD_UPDATE" => {
                let archived = d
                    .pointer("/thread_metadata/archived")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if archived {
                    self.remove("threads", d.get("id"))
                } else {
                    self.put("threads", d)
                }
            }
            "THREAD_DELETE" => self.remove("threads", d.get("id")),
            "THREAD_LIST_SYNC" => self.sync_threads(d),
            "GUILD_ROLE_CREATE" | "GUILD_ROLE_UPDATE" => match d.get("role") {
                Some(role) => self.put("roles", role),
                None => false,
            },
            "GUILD_ROLE_DELETE" => self.remove("roles", d.get("role_id")),
            "GUILD_EMOJIS_UPDATE" => self.replace("emojis", d.get("emojis")),
            "GUILD_STICKERS_UPDATE" => self.replace("stickers", d.get("stickers")),
            "STAGE_INSTANCE_CREATE" | "STAGE_INSTANCE_UPDATE" => self.put("stage_instances", d),
            "STAGE_INSTANCE_DELETE" => self.remove("stage_instances", d.get("id")),
            "GUILD_SCHEDULED_EVENT_CREATE" | "GUILD_SCHEDULED_EVENT_UPDATE" => {
                self.put("guild_scheduled_events", d)
            }
            "GUILD_SCHEDULED_EVENT_DELETE" => self.remove("guild_scheduled_events", d.get("id")),
            "GUILD_MEMBER_ADD" => {
                self.member_count += 1;
                if let Some(user) = member_user_id(d) {
                    if self.members.len() < MAX_MEMBERS {
                        self.members.insert(user, without_guild_id(d));
                    }
                }
                true
            }
            "GUILD_MEMBER_REMOVE" => {
                self.member_count = (self.member_count - 1).max(0);
                if let Some(user) = d.pointer("/user/id").and_then(Value::as_str) {
                    self.members.remove(user);
                }
                true
            }
            "GUILD_MEMBER_UPDATE" => match member_user_id(d) {
                Some(user) if self.members.contains_key(&user) => {
                    self.members.insert(user, without_guild_id(d));
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }

    /// The GUILD_CREATE `d` a client is sent: the kept state, with the collections as arrays
    /// (`channels` always present: without it discord.js keeps the guild unavailable).
    pub fn to_guild_create(&self) -> Value {
        let mut d = self.fields.clone();
        d.insert("id".into(), Value::String(self.id.clone()));
        for (name, items) in &self.collections {
            d.insert(
                (*name).into(),
                Value::Array(items.values().cloned().collect()),
            );
        }
        d.insert(
            "members".into(),
            Value::Array(self.members.values().cloned().collect()),
        );
        d.insert("member_count".into(), Value::from(self.member_count));
        d.insert("voice_states".into(), Value::Array(Vec::new()));
        d.insert("presences".into(), Value::Array(Vec::new()));
        d.insert("unavailable".into(), Value::Bool(false));
        Value::Object(d)
    }

    /// About the bytes the document holds (its GUILD_CREATE's JSON length).
    pub fn approx_bytes(&self) -> usize {
        self.to_guild_create().to_string().len()
    }

    /// Adds or replaces `item` in `collection`, by its id.
    fn put(&mut self, collection: &'static str, item: &Value) -> bool {
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            return false;
        };
        self.collections
            .entry(collection)
            .or_default()
            .insert(id.to_owned(), item.clone());
        true
    }

    fn remove(&mut self, collection: &'static str, id: Option<&Value>) -> bool {
        let Some(id) = id.and_then(Value::as_str) else {
            return false;
        };
        self.collections
            .get_mut(collection)
            .is_some_and(|items| items.remove(id).is_some())
    }

    fn replace(&mut self, collection: &'static str, items: Option<&Value>) -> bool {
        match items {
            Some(items) => {
                self.collections.insert(collection, by_id(items));
                true
            }
            None => false,
        }
    }

    /// THREAD_LIST_SYNC: the active threads of the listed channels (all channels without a
    /// list) are exactly the ones it names.
    fn sync_threads(&mut self, d: &Value) -> bool {
        let channels: Option<Vec<&str>> = d
            .get("channel_ids")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_str).collect());
        let threads = self.collections.entry("threads").or_default();
        threads.retain(|_, thread| {
            let parent = thread.get("parent_id").and_then(Value::as_str);
            match (&channels, parent) {
                (Some(synced), Some(parent)) => !synced.contains(&parent),
                (Some(_), None) => true,
                (None, _) => false,
            }
        });
        for thread in d
            .get("threads")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(id) = thread.get("id").and_then(Value::as_str) {
                threads.insert(id.to_owned(), thread.clone());
            }
        }
        true
    }
}

/// A JSON array of objects with ids, by id (items without one are dropped).
fn by_id(items: &Value) -> BTreeMap<String, Value> {
    items
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let id = item.get("id")?.as_str()?;
            Some((id.to_owned(), item.clone()))
        })
        .collect()
}

fn member_user_id(member: &Value) -> Option<String> {
    Some(member.pointer("/user/id")?.as_str()?.to_owned())
}

/// A member event's member as a GUILD_CREATE lists it (member events add `guild_id`).
fn without_guild_id(member: &Value) -> Value {
    let mut member = member.clone();
    if let Some(object) = member.as_object_mut() {
        object.remove("guild_id");
    }
    member
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn created() -> GuildDoc {
        GuildDoc::from_guild_create(&json!({
            "id": "1", "name": "Guild", "features": [], "owner_id": "9",
            "member_count": 2, "large": false, "unavailable": false,
            "roles": [{"id": "1", "name": "@everyone", "permissions": "0"}],
            "channels": [{"id": "10", "type": 4, "name": "cat"}, {"id": "11", "type": 0, "name": "general", "parent_id": "10"}],
            "threads": [{"id": "20", "type": 11, "parent_id": "11", "thread_metadata": {"archived": false}}],
            "emojis": [], "stickers": [],
            "members": [{"user": {"id": "100"}, "roles": []}],
            "voice_states": [{"user_id": "100"}], "presences": [{"user": {"id": "100"}}]
        }))
        .unwrap()
    }

    #[test]
    fn a_guild_create_round_trips_without_what_is_not_kept() {
        let d = created().to_guild_create();
        assert_eq!(d["id"], "1");
        assert_eq!(d["name"], "Guild");
        assert_eq!(d["channels"].as_array().unwrap().len(), 2);
        assert_eq!(d["threads"][0]["id"], "20");
        assert_eq!(d["members"], json!([{"user": {"id": "100"}, "roles": []}]));
        assert_eq!(d["voice_states"], json!([]));
        assert_eq!(d["presences"], json!([]));
        assert_eq!(d["unavailable"], false);
        assert_eq!(d["member_count"], 2);
        // The document of its own GUILD_CREATE is the same document.
        assert_eq!(GuildDoc::from_guild_create(&d).unwrap(), created());
    }

    #[test]
    fn an_unavailable_guild_has_no_document() {
        assert!(GuildDoc::from_guild_create(&json!({"id": "1", "unavailable": true})).is_none());
    }

    #[test]
    fn changes_apply_as_discord_js_would_see_them() {
        let mut doc = created();
        doc.apply(
            "CHANNEL_CREATE",
            &json!({"id": "12", "type": 0, "name": "new"}),
        );
        doc.apply(
            "CHANNEL_UPDATE",
            &json!({"id": "11", "type": 0, "name": "renamed"}),
        );
        doc.apply("CHANNEL_DELETE", &json!({"id": "10", "type": 4}));
        doc.apply(
            "GUILD_ROLE_CREATE",
            &json!({"guild_id": "1", "role": {"id": "2", "name": "mod", "permissions": "8"}}),
        );
        doc.apply(
            "GUILD_ROLE_DELETE",
            &json!({"guild_id": "1", "role_id": "1"}),
        );
        doc.apply("GUILD_UPDATE", &json!({"id": "1", "name": "Renamed", "roles": [{"id": "3", "name": "x", "permissions": "0"}]}));
        doc.apply(
            "THREAD_UPDATE",
            &json!({"id": "20", "parent_id": "11", "thread_metadata": {"archived": true}}),
        );
        doc.apply(
            "GUILD_MEMBER_ADD",
            &json!({"guild_id": "1", "user": {"id": "101"}, "roles": []}),
        );
        doc.apply(
            "GUILD_MEMBER_UPDATE",
            &json!({"guild_id": "1", "user": {"id": "100"}, "roles": ["3"], "nick": "n"}),
        );
        doc.apply(
            "GUILD_MEMBER_REMOVE",
            &json!({"guild_id": "1", "user": {"id": "101"}}),
        );
        let d = doc.to_guild_create();
        let names: Vec<&str> = d["channels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["renamed", "new"]);
        assert_eq!(d["name"], "Renamed");
        // GUILD_UPDATE's role list is the whole list.
        assert_eq!(
            d["roles"],
            json!([{"id": "3", "name": "x", "permissions": "0"}])
        );
        assert_eq!(d["threads"], json!([]));
        assert_eq!(
            d["members"],
            json!([{"user": {"id": "100"}, "roles": ["3"], "nick": "n"}])
        );
        assert_eq!(d["member_count"], 2);
    }

    #[test]
    fn a_thread_list_sync_replaces_the_synced_channels_threads() {
        let mut doc = created();
        doc.apply("THREAD_CREATE", &json!({"id": "21", "parent_id": "12"}));
        doc.apply("THREAD_LIST_SYNC", &json!({"guild_id": "1", "channel_ids": ["11"], "threads": [{"id": "22", "parent_id": "11"}]}));
        let d = doc.to_guild_create();
        let ids: Vec<&str> = d["threads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["21", "22"]);
    }

    #[test]
    fn members_are_bounded_and_the_count_is_not() {
        let mut doc = created();
        for m in 0..(MAX_MEMBERS as u64 * 2) {
            doc.apply(
                "GUILD_MEMBER_ADD",
                &json!({"guild_id": "1", "user": {"id": (1000 + m).to_string()}}),
            );
        }
        let d = doc.to_guild_create();
        assert_eq!(d["members"].as_array().unwrap().len(), MAX_MEMBERS);
        assert_eq!(d["member_count"], 2 + MAX_MEMBERS as i64 * 2);
    }
}
