//! `guild-gateway shard-of`: which pod owns each guild id, for operators and other services.

use crate::config::{number, strategy};
use crate::pod_client::{Call, PodClient};
use crate::routing::{Owner, UrlTemplate};
use anyhow::Context as _;
use clap::Args;
use gateway_actors::partition::Partition;
use std::io::{BufRead, Write};
use std::time::Duration;

#[derive(Debug, Args)]
pub struct ShardOfArgs {
    /// Number of pods
    #[arg(long, env = "NUM_GATEWAY_PODS", default_value = "1",
        value_parser = number(1, u64::from(u32::MAX)))]
    pub pods: u64,
    /// md5 or discord
    #[arg(long, env = "SHARD_STRATEGY", default_value = "md5",
        value_parser = strategy())]
    pub strategy: gateway_actors::partition::Strategy,
    /// The bot's Discord shard count (matters with discord) [default: 1 with md5, --pods with discord]
    #[arg(long, env = "DISCORD_SHARDS", value_parser = crate::config::shard_count())]
    pub shards: Option<crate::config::ShardCount>,
    /// Print each owner as the JSON object of GET /v1/guilds/{id}/owner, one a line
    #[arg(long)]
    pub json: bool,
    /// Take the pod count, strategy and shard count from this pod's committed ownership (its
    /// /status, e.g. http://gateway-0.gateway:3000) instead of the settings; --json then
    /// carries its epoch
    #[arg(long, value_name = "URL")]
    pub from_pod: Option<String>,
    /// Base URL of pod {ordinal}, for --json
    #[arg(long, env = "POD_URL_TEMPLATE", default_value = crate::config::DEFAULT_POD_URL_TEMPLATE,
        value_parser = crate::config::pod_url_template())]
    pub pod_url_template: UrlTemplate,
    /// Hash any string as the TypeScript function does (parity checks); without it, an id
    /// that is not a Discord snowflake is an error
    #[arg(long)]
    pub any_string: bool,
    /// Guild ids; with none, ids are read from standard input, one per line
    #[arg(allow_hyphen_values = true)]
    pub guild_ids: Vec<String>,
}

/// Prints `GUILD_ID ORDINAL` per id (or the owner endpoint's JSON), in input order. A reader that stops early (`| head`)
/// ends the output quietly, as ripgrep does.
pub fn run(args: ShardOfArgs) -> anyhow::Result<()> {
    match print_owners(args) {
        Err(e) if is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn print_owners(args: ShardOfArgs) -> anyhow::Result<()> {
    let (sharding, epoch) = match &args.from_pod {
        Some(url) => committed_layout(url)?,
        None => {
            // Only the pod count and the strategy matter for an owner; the ordinal is anyone's.
            let pods = args.pods as u32;
            let shards = crate::config::checked_shards(args.strategy, pods, args.shards)?;
            let sharding = Partition {
                strategy: args.strategy,
                ordinal: 0,
                pods,
                // `auto` is md5 only, where the shard count moves no guild.
                shards: shards.unwrap_or(1),
            };
            (sharding, None)
        }
    };

    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut print = |id: &str| -> anyhow::Result<()> {
        if !args.any_string {
            gateway_actors::partition::parse_snowflake(id)?;
        }
        let mut owner = Owner::of(id, &sharding, &args.pod_url_template)?;
        if let Some(epoch) = epoch {
            owner = owner.at_epoch(epoch);
        }
        if args.json {
            serde_json::to_writer(&mut out, &owner).context("writing to stdout")?;
            writeln!(out).context("writing to stdout")
        } else {
            writeln!(out, "{id} {}", owner.ordinal).context("writing to stdout")
        }
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

/// The committed layout (and its epoch) a pod's `/status` reports.
fn committed_layout(url: &str) -> anyhow::Result<(Partition, Option<u64>)> {
    #[derive(serde::Deserialize)]
    struct Status {
        ownership: crate::rescale::endpoints::RescaleState,
    }
    let pod = UrlTemplate::single(url).map_err(|e| anyhow::anyhow!("--from-pod {url}: {e}"))?;
    let client = PodClient::new(pod, None)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let status: Status = runtime
        .block_on(client.json(0, Call::get("/status", Duration::from_secs(10))))
        .context("asking for the committed layout")?;
    let layout = status.ownership.layout;
    let sharding = Partition {
        strategy: layout
            .strategy
            .parse()
            .map_err(|e| anyhow::anyhow!("{url}: {e}"))?,
        ordinal: 0,
        pods: layout.pods,
        shards: layout.shards,
    };
    Ok((sharding, Some(status.ownership.epoch)))
}
