//! `guild-gateway shard-of`: which pod owns each guild id, for operators and other services.

use crate::config::{parse_number, parse_strategy};
use anyhow::Context as _;
use clap::Args;
use gateway_actors::shard::owner_of_str;
use std::io::{BufRead, Write};

#[derive(Debug, Args)]
pub struct ShardOfArgs {
    /// Number of pods [default: NUM_GATEWAY_PODS, else 1]
    #[arg(long)]
    pub pods: Option<String>,
    /// md5 or discord [default: SHARD_STRATEGY, else md5]
    #[arg(long)]
    pub strategy: Option<String>,
    /// Guild ids; with none, ids are read from standard input, one per line
    #[arg(allow_hyphen_values = true)]
    pub guild_ids: Vec<String>,
}

/// Prints `GUILD_ID ORDINAL` per id, in input order. `pods`/`strategy` fall back to the pod's
/// NUM_GATEWAY_PODS and SHARD_STRATEGY.
pub fn run(args: ShardOfArgs, env_pods: &str, env_strategy: &str) -> anyhow::Result<()> {
    let (pods_var, pods) = match &args.pods {
        Some(p) => ("--pods", p.as_str()),
        None => ("NUM_GATEWAY_PODS", env_pods),
    };
    let pods = parse_number(pods_var, pods, 1, u64::from(u32::MAX))? as u32;
    let (strategy_var, strategy) = match &args.strategy {
        Some(s) => ("--strategy", s.as_str()),
        None => ("SHARD_STRATEGY", env_strategy),
    };
    let strategy = parse_strategy(strategy_var, strategy)?;

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut print = |id: &str| -> anyhow::Result<()> {
        let owner = owner_of_str(strategy, id, pods)?;
        writeln!(out, "{id} {owner}").context("writing to stdout")
    };
    if args.guild_ids.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("reading guild ids from stdin")?;
            let id = line.trim();
            if !id.is_empty() {
                print(id)?;
            }
        }
    } else {
        for id in &args.guild_ids {
            print(id)?;
        }
    }
    out.flush().context("writing to stdout")
}
