//! guild-gateway-dev: the tools around the pod, as one command line. `fake-discord` serves a
//! local Discord; `simulate` runs a local deployment of `guild-gateway serve` pods against one.
//! Neither reads the pods' settings, so wrong pod variables in the environment stop neither.

use clap::{Parser, Subcommand};
use guild_gateway_dev::logging::{self, LogFormat};
use guild_gateway_dev::{fake_discord, simulate};
use std::process::ExitCode;

// The fake Discord feeds the pods in `simulate` and in the live bench: it keeps the allocator
// it had when it shipped inside the pod's binary, so those figures stay comparable.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "guild-gateway-dev",
    version,
    about = "Development and test tools for guild-gateway: a fake Discord and a local deployment"
)]
struct Cli {
    /// text or json [default: LOG_FORMAT if it names one, else text]
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve a local Discord-compatible API and gateway from a recorded stream (for tests and development)
    FakeDiscord(fake_discord::FakeDiscordArgs),
    /// Run a whole deployment locally: a fake Discord and N `guild-gateway serve` pods, until all is committed
    Simulate(simulate::SimulateArgs),
    /// Write a synthetic gateway stream (NDJSON, as `replay` and `fake-discord` read)
    Synthetic(SyntheticArgs),
}

#[derive(Debug, clap::Args)]
struct SyntheticArgs {
    /// Number of guilds
    #[arg(long, default_value = "300")]
    guilds: u32,
    /// Number of messages (the other events follow from them)
    #[arg(long, default_value = "100000")]
    messages: u64,
    /// The file to write
    #[arg(long)]
    out: std::path::PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.log_format.unwrap_or_else(LogFormat::from_env);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(anyhow::Error::new(e).context("starting the runtime")),
    };
    match cli.command {
        Command::FakeDiscord(args) => {
            logging::init(format, "info");
            match runtime.block_on(fake_discord::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Synthetic(args) => {
            match guild_gateway_dev::synthetic::write_file(&args.out, args.guilds, args.messages) {
                Ok(events) => {
                    println!("{events}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    fail(anyhow::Error::new(e).context(format!("writing {}", args.out.display())))
                }
            }
        }
        Command::Simulate(args) => {
            // The progress lines are the output; logs only for trouble.
            logging::init(format, "warn");
            match runtime.block_on(simulate::run(args)) {
                Ok(code) => code,
                Err(e) => fail(e),
            }
        }
    }
}

/// One line on stderr with the whole chain of causes.
fn fail(error: anyhow::Error) -> ExitCode {
    eprintln!("error: {error:#}");
    ExitCode::from(2)
}
