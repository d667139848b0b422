//! `guild-gateway replay [FILE|-]`: a recorded gateway stream through the live pipeline.
//!
//! Lines are read on their own thread, decoded on a runtime worker and submitted in order; the pipeline's
//! backpressure paces the reader. Malformed lines are reported (`line N: reason`) and skipped.
//! SIGTERM/SIGINT stop the reading; everything accepted is still committed before exit.

use crate::config::PodConfig;
use crate::http::{self, HttpState};
use crate::signals::shutdown_signal;
use anyhow::Context as _;
use clap::Args;
use gateway_actors::event::decode_frame;
use gateway_actors::metrics::Metrics;
use gateway_actors::pipeline::Overflow;
use gateway_actors::{Pipeline, PipelineConfig};
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, watch};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// NDJSON gateway stream, one {"op":0,"t":...,"s":...,"d":...} per line; - for stdin
    #[arg(default_value = "-")]
    pub file: PathBuf,
    /// Keep the HTTP server up after the replay, until SIGTERM or SIGINT
    #[arg(long)]
    pub linger: bool,
}

#[derive(Debug, Default)]
struct ReadOutcome {
    lines: u64,
    malformed: u64,
    interrupted: bool,
}

pub async fn run(config: PodConfig, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let signal = shutdown_signal()?;
    let input: Box<dyn Read + Send> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .with_context(|| format!("opening {}", args.file.display()))?,
        )
    };
    let sharding = config.sharding;
    let metrics =
        Arc::new(Metrics::new(sharding.ordinal, sharding.pods).context("registering metrics")?);
    // An archive must load completely: a busy guild's mailbox grows (within MAX_IN_FLIGHT)
    // instead of shedding.
    let pipeline_config = PipelineConfig {
        overflow: Overflow::Queue,
        ..config.pipeline.clone()
    };
    let pipeline =
        Arc::new(Pipeline::start(pipeline_config, metrics).with_context(|| {
            format!("opening the pod's database {}", config.database.display())
        })?);
    let server = http::start(
        config.http_addr,
        HttpState {
            pipeline: pipeline.clone(),
            sharding,
            gateway: None,
        },
    )?;
    tracing::info!(pod = sharding.ordinal, pods = sharding.pods, strategy = %sharding.strategy,
        database = %config.database.display(), "replaying {}", args.file.display());

    let started = Instant::now();
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader = tokio::spawn(read_stream(input, pipeline.clone(), stop_rx));
    tokio::pin!(signal);
    tokio::pin!(reader);
    let outcome = tokio::select! {
        result = &mut reader => result,
        name = &mut signal => {
            tracing::info!("{name}: no more events will be taken; draining");
            let _ = stop_tx.send(true);
            reader.await
        }
    }
    .context("the reader task failed")??;

    pipeline.drain().await;
    let status = pipeline.status();
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "replay {}: {} lines, {} malformed, {} events committed or skipped, {} shed, last seq {}, {:.2} s ({:.0} events/s){}",
        args.file.display(),
        outcome.lines,
        outcome.malformed,
        status.events_done,
        pipeline.metrics().shed.get(),
        status.last_seq_committed.map_or("-".to_string(), |s| s.to_string()),
        elapsed,
        status.events_done as f64 / elapsed.max(1e-9),
        if outcome.interrupted { " (interrupted by a signal)" } else { "" },
    );

    if args.linger && !outcome.interrupted {
        tracing::info!("replay done; lingering until SIGTERM or SIGINT");
        signal.await;
    }
    server.stop(true).await;
    if let Ok(pipeline) = Arc::try_unwrap(pipeline) {
        pipeline.shutdown();
    }
    Ok(if outcome.malformed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Reads lines on a plain thread: a blocked read of an open stdin must not keep the runtime
/// from shutting down (tokio's stdin would). Lines reach the decoder through a bounded channel.
fn spawn_line_reader(input: Box<dyn Read + Send>) -> mpsc::Receiver<std::io::Result<String>> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        for line in BufReader::with_capacity(1 << 16, input).lines() {
            let failed = line.is_err();
            if tx.blocking_send(line).is_err() || failed {
                break;
            }
        }
    });
    rx
}

async fn read_stream(
    input: Box<dyn Read + Send>,
    pipeline: Arc<Pipeline>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<ReadOutcome> {
    let mut lines = spawn_line_reader(input);
    let mut outcome = ReadOutcome::default();
    loop {
        let line = tokio::select! {
            biased;
            _ = stop.changed() => {
                outcome.interrupted = true;
                break;
            }
            line = lines.recv() => line,
        };
        let Some(line) = line else { break };
        let line = line.with_context(|| format!("reading line {}", outcome.lines + 1))?;
        outcome.lines += 1;
        if line.trim().is_empty() {
            continue;
        }
        match decode_frame(&line) {
            Ok(dispatch) => pipeline.submit(dispatch).await,
            Err(e) => {
                outcome.malformed += 1;
                eprintln!("line {}: {e}", outcome.lines);
            }
        }
    }
    Ok(outcome)
}
