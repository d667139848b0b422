//! `simulate --rescale` ends by proving that nothing was lost: the pods' databases hold, between
//! them, exactly the rows of the same stream replayed into one pod, each guild only in the
//! database of its final owner.

use anyhow::{bail, Context as _};
use gateway_actors::rescale::ownership::Layout;
use rusqlite::{Connection, OpenFlags};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

/// Each table's rows as text, with the guild each belongs to; timestamps of processing (not
/// of the events) are left out.
const TABLES: [(&str, &str); 8] = [
    ("guilds", "SELECT id, id, settings FROM guilds"),
    ("channel_info", "SELECT g.guild_id, c.id, c.name, c.category FROM channel_info c JOIN guild_channels g ON g.channel_id = c.id"),
    ("guild_channels", "SELECT guild_id, channel_id, channel_type, parent_id FROM guild_channels"),
    ("message_stats", "SELECT guild_id, message_id, author_id, channel_id, channel_category, recipient_id, char_count, word_count, react_count, sent_at, code_stats, link_stats FROM message_stats"),
    ("message_cache", "SELECT guild_id, message_id, channel_id, user_id, content FROM message_cache"),
    ("message_reactions", "SELECT s.guild_id, r.message_id, r.user_id, r.emoji, r.present FROM message_reactions r JOIN message_stats s ON s.message_id = r.message_id"),
    ("mod_actions", "SELECT guild_id, user_id, action_type, executor_id, reason, duration FROM mod_actions"),
    ("member_timeouts", "SELECT guild_id, user_id, until_ms FROM member_timeouts"),
];

type Rows = BTreeMap<&'static str, Vec<(String, String)>>;

fn rows_of(db: &Path) -> anyhow::Result<Rows> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .with_context(|| format!("opening {}", db.display()))?;
    let mut all = Rows::new();
    for (table, sql) in TABLES {
        let mut stmt = conn
            .prepare(sql)
            .with_context(|| format!("{table} in {}", db.display()))?;
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let guild: String = r.get(0)?;
                let mut text = Vec::with_capacity(columns);
                for i in 1..columns {
                    text.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok((guild, text.join("|")))
            })?
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("reading {table} of {}", db.display()))?;
        all.insert(table, rows);
    }
    Ok(all)
}

/// Replays `events` into one pod's database at `reference` with the pod binary `exe`.
pub fn replay_reference(exe: &Path, events: &Path, reference: &Path) -> anyhow::Result<()> {
    super::remove_database(reference)?;
    let status = Command::new(exe)
        .arg("replay")
        .arg(events)
        .env("DATABASE_URL", reference)
        .env("NUM_GATEWAY_PODS", "1")
        .env("POD_ORDINAL", "0")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .status()
        .context("running guild-gateway replay for the reference")?;
    if !status.success() {
        bail!("the reference replay exited with {status}");
    }
    Ok(())
}

/// The differences between the reference and the pods' databases (`dbs[k]` is pod k's), each
/// guild expected only under `layout`'s owner; empty when every row is where it belongs.
pub fn differences(reference: &Path, dbs: &[&Path], layout: Layout) -> anyhow::Result<Vec<String>> {
    let want = rows_of(reference)?;
    let mut got: Rows = Rows::new();
    let mut problems = Vec::new();
    for (k, db) in dbs.iter().enumerate() {
        for (table, rows) in rows_of(db)? {
            for (guild, row) in rows {
                let owner = guild.parse::<u64>().map(|g| layout.owner(g));
                if owner != Ok(k as u32) && problems.len() < 20 {
                    problems.push(format!(
                        "pod {k} holds a {table} row of guild {guild}, whose owner is {owner:?}"
                    ));
                }
                got.entry(table).or_default().push((guild, row));
            }
        }
    }
    for (table, mut rows) in want {
        let mut have = got.remove(table).unwrap_or_default();
        rows.sort();
        have.sort();
        if rows != have {
            let missing = rows
                .iter()
                .filter(|r| have.binary_search(r).is_err())
                .count();
            let extra = have
                .iter()
                .filter(|r| rows.binary_search(r).is_err())
                .count();
            problems.push(format!(
                "{table}: {} rows, the one-pod replay has {}: {missing} missing, {extra} not in it",
                have.len(),
                rows.len()
            ));
        }
    }
    Ok(problems)
}
