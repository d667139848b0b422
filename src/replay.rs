//! `guild-gateway replay [FILE|-]`: a recorded gateway stream through the live pipeline.
//!
//! Lines are read on their own thread, decoded on a runtime worker and submitted in order; the
//! pipeline's backpressure paces the reader. Malformed lines (bad JSON, invalid UTF-8) are
//! reported (`line N: reason`) and skipped. A read error or SIGTERM/SIGINT stops the reading;
//! everything accepted is still committed before exit. If the storage cannot take writes for
//! `--give-up-after` seconds, the replay stops and says how many events were not committed.
//! The exit status is 0 only when every line was read, decoded and committed.

use crate::config::PodConfig;
use crate::http;
use crate::signals::shutdown_signal;
use anyhow::Context as _;
use clap::Args;
use gateway_actors::event::decode_frame;
use gateway_actors::metrics::Metrics;
use gateway_actors::Pipeline;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub pod: crate::config::PodArgs,
    /// NDJSON gateway stream, one {"op":0,"t":...,"s":...,"d":...} per line; - for stdin
    #[arg(default_value = "-")]
    pub file: PathBuf,
    /// Keep the HTTP server up after the replay, until SIGTERM or SIGINT
    #[arg(long)]
    pub linger: bool,
    /// Seconds a storage fault (full disk, read-only file) may last before the replay stops
    /// and exits with the count of events not committed
    #[arg(long, default_value = "30", value_name = "SECS",
        value_parser = crate::config::seconds(0, 86_400))]
    pub give_up_after: Duration,
}

#[derive(Debug, Default)]
struct ReadOutcome {
    lines: u64,
    malformed: u64,
    /// Why reading stopped before the end of the input.
    stopped: Option<String>,
}

/// One line of input, as the reader thread hands it on.
enum Line {
    Text(String),
    /// Not UTF-8: reported and skipped like any malformed line.
    Invalid(std::str::Utf8Error),
    /// The input could not be read further.
    Failed(std::io::Error),
}

pub async fn run(config: PodConfig, args: ReplayArgs) -> anyhow::Result<ExitCode> {
    // A standby ordinal is for `serve` only (a pod that waits for a rescale): a replay with
    // one would store nothing and look like success.
    let sharding = config.sharding;
    if sharding.ordinal >= sharding.pods {
        anyhow::bail!(
            "POD_ORDINAL={} is at or past NUM_GATEWAY_PODS={}: this pod would own no guild and replay would store nothing (ordinals run from 0 to NUM_GATEWAY_PODS - 1)",
            sharding.ordinal,
            sharding.pods
        );
    }
    let signal = shutdown_signal()?;
    let input = open_input(&args.file)?;
    let metrics =
        Arc::new(Metrics::new(sharding.ordinal, sharding.pods).context("registering metrics")?);
    let pipeline = Arc::new(
        Pipeline::start(config.pipeline.clone(), metrics)
            .with_context(|| format!("opening the pod's database {}", config.database.display()))?,
    );
    let server = http::start_pod(&config, pipeline.clone(), None, None)?;
    tracing::info!(pod = sharding.ordinal, pods = sharding.pods, strategy = %sharding.strategy,
        database = %config.database.display(), "replaying {}", args.file.display());

    let started = Instant::now();
    let give_up = args.give_up_after;
    tokio::pin!(signal);
    let (outcome, gave_up) = read_and_drain(input, &pipeline, signal.as_mut(), give_up).await?;
    let failed = pipeline.metrics().handler_errors.get();
    let shed = pipeline.metrics().shed.get();
    print_summary(&args, &outcome, &pipeline, started);
    if gave_up {
        // The writer still holds what it could not commit; nothing more can be done here.
        eprintln!(
            "error: {} events were accepted and not committed",
            pipeline.status().in_flight
        );
        return Ok(ExitCode::FAILURE);
    }

    if args.linger && outcome.stopped.is_none() {
        tracing::info!("replay done; lingering until SIGTERM or SIGINT");
        signal.await;
    }
    server.stop(true).await;
    if let Ok(pipeline) = Arc::try_unwrap(pipeline) {
        pipeline.shutdown();
    }
    let complete = outcome.malformed == 0 && outcome.stopped.is_none() && failed == 0 && shed == 0;
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The stream: a file, or standard input for `-`.
fn open_input(file: &std::path::Path) -> anyhow::Result<Box<dyn Read + Send>> {
    if file.as_os_str() == "-" {
        return Ok(Box::new(std::io::stdin()));
    }
    let file = std::fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    Ok(Box::new(file))
}

/// Reads the whole stream into the pipeline and commits it, unless a signal stops the
/// reading or the database takes no writes for `give_up`; whether it gave up.
async fn read_and_drain(
    input: Box<dyn Read + Send>,
    pipeline: &Arc<Pipeline>,
    mut signal: std::pin::Pin<&mut impl std::future::Future<Output = &'static str>>,
    give_up: Duration,
) -> anyhow::Result<(ReadOutcome, bool)> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let reader = tokio::spawn(read_stream(input, pipeline.clone(), stop_rx));
    tokio::pin!(reader);
    let mut gave_up = None;
    let mut outcome = tokio::select! {
        result = &mut reader => result.context("the reader task failed")?,
        name = signal.as_mut() => {
            tracing::info!("{name}: no more events will be taken; draining");
            let _ = stop_tx.send(true);
            let mut outcome = reader.await.context("the reader task failed")?;
            outcome.stopped = Some(format!("interrupted by {name}"));
            outcome
        }
        fault = pipeline.storage_failing_for(give_up) => {
            let _ = stop_tx.send(true);
            gave_up = Some(fault);
            ReadOutcome::default()
        }
    };
    if gave_up.is_none() {
        tokio::select! {
            () = pipeline.drain() => {}
            fault = pipeline.storage_failing_for(give_up) => gave_up = Some(fault),
        }
    }
    if let Some(fault) = &gave_up {
        outcome.stopped = Some(format!(
            "the database has not taken writes for {give_up:?}: {fault}"
        ));
    }
    Ok((outcome, gave_up.is_some()))
}

/// The one line a replay prints: what it read, accepted, committed, and how fast.
fn print_summary(args: &ReplayArgs, outcome: &ReadOutcome, pipeline: &Pipeline, started: Instant) {
    let status = pipeline.status();
    let elapsed = started.elapsed().as_secs_f64();
    let failed = pipeline.metrics().handler_errors.get();
    let shed = pipeline.metrics().shed.get();
    println!(
        "replay {}: {} lines, {} malformed, {} events accepted, {} committed or skipped, {} not committed, {} failed (rolled back), {} shed, last seq {}, {:.2} s ({:.0} events/s){}",
        args.file.display(),
        outcome.lines,
        outcome.malformed,
        status.events_accepted,
        status.events_done,
        status.in_flight,
        failed,
        shed,
        status.last_seq_committed.map_or("-".to_string(), |s| s.to_string()),
        elapsed,
        status.events_done as f64 / elapsed.max(1e-9),
        outcome.stopped.as_deref().map(|why| format!(" (stopped early: {why})")).unwrap_or_default(),
    );
}

/// Reads lines on a plain thread: a blocked read of an open stdin must not keep the runtime
/// from shutting down (tokio's stdin would). Lines reach the decoder through a bounded channel.
/// A UTF-8 byte order mark at the start is not part of the first line.
fn spawn_line_reader(input: Box<dyn Read + Send>) -> mpsc::Receiver<Line> {
    let (tx, rx) = mpsc::channel(1024);
    std::thread::spawn(move || {
        let mut input = BufReader::with_capacity(1 << 16, input);
        let mut first = true;
        loop {
            let mut bytes = Vec::new();
            let line = match input.read_until(b'\n', &mut bytes) {
                Ok(0) => break,
                Ok(_) => {
                    let mut text: &[u8] = &bytes;
                    if first {
                        text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
                        first = false;
                    }
                    let text = text.strip_suffix(b"\n").unwrap_or(text);
                    let text = text.strip_suffix(b"\r").unwrap_or(text);
                    match std::str::from_utf8(text) {
                        Ok(text) => Line::Text(text.to_owned()),
                        Err(e) => Line::Invalid(e),
                    }
                }
                Err(e) => Line::Failed(e),
            };
            let failed = matches!(line, Line::Failed(_));
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
) -> ReadOutcome {
    let mut lines = spawn_line_reader(input);
    let mut outcome = ReadOutcome::default();
    loop {
        let line = tokio::select! {
            biased;
            _ = stop.changed() => break,
            line = lines.recv() => line,
        };
        let Some(line) = line else { break };
        outcome.lines += 1;
        let text = match line {
            Line::Text(text) => text,
            Line::Invalid(e) => {
                outcome.malformed += 1;
                eprintln!("line {}: not UTF-8: {e}", outcome.lines);
                continue;
            }
            Line::Failed(e) => {
                outcome.stopped = Some(format!("reading line {}: {e}", outcome.lines));
                eprintln!("error: reading line {}: {e}", outcome.lines);
                break;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        match decode_frame(&text) {
            Ok(dispatch) => pipeline.submit(dispatch).await,
            Err(e) => {
                outcome.malformed += 1;
                eprintln!(
                    "line {}: {}",
                    outcome.lines,
                    gateway_actors::errors::chain(&e)
                );
            }
        }
    }
    outcome
}
