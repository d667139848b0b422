//! The registry of guild-scoped tables: every table whose rows belong to one guild, and what
//! ties a row to it. A guild's rows live on the pod that owns the guild, so everything that
//! moves, removes or guards rows by guild reads this one list:
//! - a live rescale's export, import and cleanup ([`crate::storage::rescale::handoff`]);
//! - `reshard` ([`crate::storage::reshard`]);
//! - the data API's guarded writes, which may touch only these tables, and only the path's
//!   guild's rows in them ([`crate::storage::execute`]);
//! - the tests that check each rule against the schema.
//!
//! Adding a guild-scoped table is its `CREATE TABLE` in schema.sql and one entry here.

/// What ties a table's rows to their guild.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuildOf {
    /// The row names its guild in this column.
    Column(&'static str),
    /// The row belongs to the guild of another table's row: the one whose `key` equals this
    /// row's `column`. The parent names its guild in a column of its own (one level only).
    Parent {
        column: &'static str,
        parent: &'static str,
        key: &'static str,
    },
}

/// One guild-scoped table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuildTable {
    pub name: &'static str,
    pub guild: GuildOf,
    /// The bot writes it through the data API (`POST /v1/guilds/{id}/execute`). The others are
    /// the gateway's own bookkeeping, written only from events.
    pub bot_writes: bool,
}

const fn column(name: &'static str, column: &'static str, bot_writes: bool) -> GuildTable {
    GuildTable {
        name,
        guild: GuildOf::Column(column),
        bot_writes,
    }
}

const fn parent(
    name: &'static str,
    column: &'static str,
    parent: &'static str,
    key: &'static str,
    bot_writes: bool,
) -> GuildTable {
    GuildTable {
        name,
        guild: GuildOf::Parent {
            column,
            parent,
            key,
        },
        bot_writes,
    }
}

/// Every guild-scoped table. Parents come before the tables that refer to them.
pub const GUILD_TABLES: &[GuildTable] = &[
    // The bot's tables that the gateway also fills from events.
    column("guilds", "id", true),
    column("message_stats", "guild_id", true),
    column("message_cache", "guild_id", true),
    column("mod_actions", "guild_id", true),
    // A channel is its guild's through the gateway's guild_channels (the bot's channel_info
    // has no guild column).
    column("guild_channels", "guild_id", false),
    parent("channel_info", "id", "guild_channels", "channel_id", true),
    // The bot's own tables, written only by the bot.
    column("guild_subscriptions", "guild_id", true),
    column("reported_messages", "guild_id", true),
    column("escalations", "guild_id", true),
    // A vote belongs to its escalation's guild.
    parent(
        "escalation_records",
        "escalation_id",
        "escalations",
        "id",
        true,
    ),
    column("honeypot_config", "guild_id", true),
    column("reactji_channeler_config", "guild_id", true),
    column("user_threads", "guild_id", true),
    column("deletion_log_threads", "guild_id", true),
    // A ticket button belongs to the guild of the channel it was posted in.
    parent(
        "tickets_config",
        "channel_id",
        "guild_channels",
        "channel_id",
        true,
    ),
    // The gateway's bookkeeping.
    parent(
        "message_reactions",
        "message_id",
        "message_stats",
        "message_id",
        false,
    ),
    column("mod_action_late_entries", "guild_id", false),
    column("member_timeouts", "guild_id", false),
    column("unpaired_member_removals", "guild_id", false),
    // The relay's state of a guild, carried by a rescale's export.
    column("relay_documents", "guild_id", false),
];

/// Tables of the schema that hold no guild's rows, and why; every other table must be in
/// [`GUILD_TABLES`] (a test checks).
pub const NOT_GUILD_DATA: &[(&str, &str)] = &[
    ("gateway_ownership", "the pod's own ownership record"),
    (
        "gateway_captured",
        "a rescale's capture log, moved by the rescale itself",
    ),
    (
        "gateway_handover",
        "a rescale's handed-over events, moved by the rescale itself",
    ),
    (
        "gateway_anchors",
        "a rescale's anchors, moved by the rescale itself",
    ),
];

/// The registered table `name` (case-insensitive, as SQL names are).
pub fn guild_table(name: &str) -> Option<&'static GuildTable> {
    GUILD_TABLES
        .iter()
        .find(|t| t.name.eq_ignore_ascii_case(name))
}

impl GuildTable {
    /// The column of the parent table that names the guild, for [`GuildOf::Parent`].
    pub fn parent_guild_column(&self) -> Option<&'static str> {
        match self.guild {
            GuildOf::Column(_) => None,
            GuildOf::Parent { parent, .. } => match guild_table(parent).map(|p| p.guild) {
                Some(GuildOf::Column(c)) => Some(c),
                _ => None,
            },
        }
    }

    /// SQL giving the guild id of this table's row `row` (an alias), looking parents up in
    /// schema `schema` (`main`, or an attached source).
    pub fn guild_sql(&self, row: &str, schema: &str) -> String {
        match self.guild {
            GuildOf::Column(c) => format!("{row}.\"{c}\""),
            GuildOf::Parent {
                column,
                parent,
                key,
            } => format!(
                "(SELECT p.\"{}\" FROM {schema}.\"{parent}\" p WHERE p.\"{key}\" = {row}.\"{column}\")",
                self.parent_guild_column().unwrap_or("guild_id")
            ),
        }
    }

    /// Deletes the rows of the guilds the SQL function `selected(guild_id)` picks.
    pub fn delete_sql(&self, selected: &str) -> String {
        match self.guild {
            GuildOf::Column(c) => format!("DELETE FROM \"{}\" WHERE {selected}(\"{c}\")", self.name),
            GuildOf::Parent {
                column,
                parent,
                key,
            } => format!(
                "DELETE FROM \"{}\" WHERE \"{column}\" IN (SELECT \"{key}\" FROM \"{parent}\" WHERE {selected}(\"{}\"))",
                self.name,
                self.parent_guild_column().unwrap_or("guild_id")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    fn schema() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(crate::storage::database::SCHEMA)
            .unwrap();
        conn
    }

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        conn.prepare("SELECT name FROM pragma_table_info(?1)")
            .unwrap()
            .query_map([table], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn every_table_of_the_schema_is_registered_or_declared_not_guild_data() {
        let conn = schema();
        let tables: Vec<String> = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
            )
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for table in &tables {
            let registered = guild_table(table).is_some();
            let declared = NOT_GUILD_DATA.iter().any(|(t, _)| t == table);
            assert!(
                registered != declared,
                "{table}: registered {registered}, declared not guild data {declared}"
            );
        }
        for t in GUILD_TABLES
            .iter()
            .map(|t| t.name)
            .chain(NOT_GUILD_DATA.iter().map(|t| t.0))
        {
            assert!(
                tables.iter().any(|have| have == t),
                "{t} is not in schema.sql"
            );
        }
    }

    #[test]
    fn each_rule_names_real_columns_and_a_parent_with_a_guild_column_listed_before() {
        let conn = schema();
        for (i, table) in GUILD_TABLES.iter().enumerate() {
            let have = columns(&conn, table.name);
            match table.guild {
                GuildOf::Column(c) => assert!(have.iter().any(|h| h == c), "{}.{c}", table.name),
                GuildOf::Parent {
                    column,
                    parent,
                    key,
                } => {
                    assert!(have.iter().any(|h| h == column), "{}.{column}", table.name);
                    assert!(
                        columns(&conn, parent).iter().any(|h| h == key),
                        "{parent}.{key}"
                    );
                    let position = GUILD_TABLES.iter().position(|p| p.name == parent);
                    assert!(
                        position.is_some_and(|p| p < i),
                        "{parent} before {}",
                        table.name
                    );
                    assert!(table.parent_guild_column().is_some(), "{}", table.name);
                }
            }
        }
    }

    /// Each rule, on one row per table for two guilds: the guild the SQL gives, and what the
    /// removal of one guild leaves.
    #[test]
    fn the_rules_find_each_rows_guild_and_remove_exactly_one_guilds_rows() {
        let conn = schema();
        conn.execute_batch(
            "INSERT INTO guild_channels (channel_id, guild_id) VALUES ('c1', '1'), ('c2', '2');
             INSERT INTO escalations (id, guild_id, thread_id, vote_message_id, reported_user_id,
               initiator_id, flags) VALUES ('e1', '1', 't', 'v', 'u', 'i', '{}'),
               ('e2', '2', 't', 'v', 'u', 'i', '{}');
             INSERT INTO escalation_records (id, escalation_id, voter_id, vote)
               VALUES ('r1', 'e1', 'v', 'ban'), ('r2', 'e2', 'v', 'ban');
             INSERT INTO tickets_config (message_id, channel_id, role_id)
               VALUES ('m1', 'c1', 'role'), ('m2', 'c2', 'role');
             INSERT INTO channel_info (id, name) VALUES ('c1', 'one'), ('c2', 'two');
             INSERT INTO message_stats (message_id, author_id, guild_id, channel_id, char_count,
               word_count, sent_at) VALUES ('m1', 'a', '1', 'c1', 1, 1, 0), ('m2', 'a', '2', 'c2', 1, 1, 0);
             INSERT INTO message_reactions (message_id, user_id, emoji, present)
               VALUES ('m1', 'u', 'x', 1), ('m2', 'u', 'x', 1);",
        )
        .unwrap();
        for table in GUILD_TABLES {
            if matches!(table.guild, GuildOf::Column(_)) {
                continue;
            }
            let guilds: Vec<String> = conn
                .prepare(&format!(
                    "SELECT {} FROM \"{}\" t ORDER BY 1",
                    table.guild_sql("t", "main"),
                    table.name
                ))
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert_eq!(guilds, ["1", "2"], "{}", table.name);
        }
        conn.create_scalar_function(
            "gone",
            1,
            rusqlite::functions::FunctionFlags::SQLITE_UTF8,
            |ctx| Ok(ctx.get::<Option<String>>(0)?.as_deref() == Some("1")),
        )
        .unwrap();
        // Children before parents, as the cleanup runs them.
        for table in GUILD_TABLES.iter().rev() {
            conn.execute(&table.delete_sql("gone"), []).unwrap();
        }
        for table in [
            "escalation_records",
            "tickets_config",
            "channel_info",
            "message_reactions",
        ] {
            let left: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(left, 1, "{table}");
        }
    }
}
