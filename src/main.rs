//! guild-gateway: one pod of a horizontally sharded Discord gateway.
//!
//! `main` parses the command line, validates the configuration before touching anything, and
//! runs the chosen mode inside an actix System on a multi-threaded tokio runtime (actors on the
//! System's thread and their own threads, I/O on the runtime's workers).

mod api;
mod config;
mod coverage;
mod gateway;
mod http;
mod logging;
mod pod_client;
mod relay;
mod replay;
mod rescale;
mod reshard;
mod routing;
mod serve;
mod shard_of;
mod signals;

use clap::{Parser, Subcommand};

// Guild actors allocate write ops that the writer thread frees; mimalloc handles that
// cross-thread traffic without glibc's arena lock (measured in BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "guild-gateway",
    version,
    about = "A sharded Discord gateway pod: events -> actors -> SQLite"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a live gateway pod: the Discord connection through the pipeline into this pod's database
    Serve(serve::ServeArgs),
    /// Run a recorded gateway stream (NDJSON) through the pipeline into this pod's database
    Replay(replay::ReplayArgs),
    /// Split pod databases (or the TypeScript bot's file) into those of a new pod count
    Reshard(reshard::ReshardArgs),
    /// Print the pod that owns each guild id: `GUILD_ID ORDINAL` per line
    ShardOf(shard_of::ShardOfArgs),
    /// Ask every pod how it shards, and check that every guild has exactly one owner
    Coverage(coverage::CoverageArgs),
    /// Change the number of pods (or the strategy) under live traffic, moving every guild's history
    Rescale(rescale::RescaleArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    match cli.command {
        Command::ShardOf(args) => match shard_of::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Coverage(args) => match coverage::run(args) {
            Ok(code) => code,
            Err(e) => fail(e),
        },
        Command::Rescale(args) => match rescale::run(args) {
            Ok(code) => code,
            Err(e) => fail_with(e, ExitCode::FAILURE),
        },
        Command::Reshard(args) => match reshard::run(args) {
            Ok(code) => code,
            Err(e) => fail(e),
        },
        Command::Serve(args) => {
            let (config, discord) =
                match args.pod.validate().and_then(|c| Ok((c, args.validate()?))) {
                    Ok(settings) => settings,
                    Err(e) => return fail(e.into()),
                };
            logging::init(config.log_format);
            match run_in_system(serve::run(config, discord)) {
                Ok(code) => code,
                Err(e) => fail(e),
            }
        }
        Command::Replay(args) => {
            let config = match args.pod.validate() {
                Ok(config) => config,
                Err(e) => return fail(e.into()),
            };
            logging::init(config.log_format);
            match run_in_system(replay::run(config, args)) {
                Ok(code) => code,
                Err(e) => fail(e),
            }
        }
    }
}

/// A bad setting prints as our one line naming the variable and the value; other command-line
/// mistakes (and --help, --version) as clap prints them.
fn usage_error(e: clap::Error) -> ExitCode {
    let setting =
        std::error::Error::source(&e).and_then(|s| s.downcast_ref::<config::ConfigError>());
    match setting {
        Some(setting) => {
            eprintln!("error: {setting}");
            ExitCode::from(2)
        }
        None => e.exit(),
    }
}

/// One line on stderr with the whole chain of causes.
fn fail(error: anyhow::Error) -> ExitCode {
    fail_with(error, ExitCode::from(2))
}

fn fail_with(error: anyhow::Error, code: ExitCode) -> ExitCode {
    eprintln!("error: {error:#}");
    code
}

fn run_in_system<F: std::future::Future>(future: F) -> F::Output {
    actix_rt::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("the OS must let us create the runtime's threads")
    })
    .block_on(future)
}
