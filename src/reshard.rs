//! `guild-gateway reshard`: moves every guild's rows to its owner under a new pod count (or
//! strategy): N old pod databases, or the TypeScript bot's single file, in; M new ones out.
//! Run it with the pods stopped (deploy/RUNBOOK.md, "Scaling").

use anyhow::Context as _;
use clap::Args;
use gateway_actors::count_rows;
use gateway_actors::reshard::reshard;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct ReshardArgs {
    /// The new number of pods
    #[arg(long, value_parser = crate::config::number(1, 1 << 16))]
    pub pods: u64,
    /// The new strategy: md5 or discord
    #[arg(long, default_value = "md5", value_parser = crate::config::strategy())]
    pub strategy: gateway_actors::partition::Strategy,
    /// The bot's Discord shard count under the new layout (it moves guilds with discord) [default: 1 with md5, --pods with discord]
    #[arg(long, value_parser = crate::config::shard_count())]
    pub shards: Option<crate::config::ShardCount>,
    /// Where gateway-0.sqlite3 ... gateway-(N-1).sqlite3 are written (they must not exist)
    #[arg(long)]
    pub out: PathBuf,
    /// The databases to split: every old pod's file, or the TypeScript bot's one file
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
}

pub fn run(args: ReshardArgs) -> anyhow::Result<ExitCode> {
    let (pods, strategy) = (args.pods as u32, args.strategy);
    for source in &args.sources {
        anyhow::ensure!(
            source.is_file(),
            "source {} is not a file",
            source.display()
        );
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let shards = crate::config::checked_shards(strategy, pods, args.shards)?
        // `auto` (md5 only) cannot move a guild.
        .unwrap_or(1);
    let report = reshard(&args.sources, strategy, pods, shards, &args.out)?;

    let mut source_rows = std::collections::BTreeMap::new();
    for source in &args.sources {
        let conn = rusqlite::Connection::open_with_flags(
            source,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .with_context(|| format!("opening {}", source.display()))?;
        for table in report.rows.keys() {
            // A table the source lacks (the TypeScript file) counts 0; any other error is one.
            let rows = match count_rows(&conn, table) {
                Err(rusqlite::Error::SqliteFailure(_, Some(m)))
                    if m.starts_with("no such table") =>
                {
                    0
                }
                other => {
                    other.with_context(|| format!("counting {table} in {}", source.display()))?
                }
            };
            *source_rows.entry(*table).or_insert(0) += rows;
        }
    }
    println!(
        "{:<18} {:>10} {:>10}   per new pod",
        "table", "sources", "new"
    );
    let mut short = false;
    for (table, per_pod) in &report.rows {
        let total: i64 = per_pod.iter().sum();
        let before = source_rows.get(table).copied().unwrap_or(0);
        let unplaced = if *table == "channel_info" {
            report.unplaced_channels
        } else {
            0
        };
        short |= total < before - unplaced;
        println!("{table:<18} {before:>10} {total:>10}   {per_pod:?}");
    }
    for target in &report.targets {
        println!("wrote {}", target.display());
    }
    if report.unplaced_channels > 0 {
        println!(
            "note: {} channel_info rows were copied nowhere: no source records their guild (the \
             TypeScript bot's channel_info has none; these channels have no message). Each pod's \
             next GUILD_CREATE writes its guilds' channels.",
            report.unplaced_channels
        );
    }
    if short {
        // Rows are dropped only when sources overlap (the same row in two files).
        println!("note: fewer rows than the sources hold: some rows were in more than one source");
    }
    Ok(ExitCode::SUCCESS)
}
