//! `guild-gateway-dev simulate`: a whole deployment on one machine. A fake Discord (in this
//! process) and N pods (`guild-gateway serve` child processes, each with its own database and
//! HTTP port) share a bot's traffic; the run ends when every pod has committed everything it
//! was sent, with a per-pod summary. A pod that dies fails the run, naming the pod.
//! The pods serve the data API on consecutive ports (`POD_URL_TEMPLATE` says which), with the
//! token [`API_TOKEN`], while the run lasts.
//!
//! With `--rescale M[,M2...]` the fake plays the stream as live traffic (one clock, each event
//! sent once, [`crate::fake_discord`]'s live timeline) and the pod count changes at evenly
//! spaced points of it, each time by the real `guild-gateway rescale` ([`schedule`]): standby
//! pods start first when it grows, emptied pods stop after its commit when it shrinks. The run
//! then proves that nothing was lost against a one-pod replay of the same stream ([`verify`]).

mod schedule;
mod verify;

use crate::fake_discord::{self, FakeOptions, Recording};
use crate::probe::http_get;
use anyhow::{bail, Context as _};
use clap::Args;
use gateway_actors::partition::Strategy;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Number of pods
    #[arg(long, default_value = "3")]
    pub pods: u32,
    /// md5 or discord
    #[arg(long, default_value = "md5")]
    pub strategy: String,
    /// The bot's Discord shard count (the pods' DISCORD_SHARDS) [default: the pods' default]
    #[arg(long)]
    pub shards: Option<u32>,
    /// A recorded stream (NDJSON) instead of a synthetic one
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Synthetic stream: number of guilds
    #[arg(long, default_value = "300")]
    pub guilds: u32,
    /// Synthetic stream: number of messages
    #[arg(long, default_value = "100000")]
    pub messages: u64,
    /// Where the pods' databases and logs go (their previous files there are replaced)
    #[arg(long, default_value = "./data/simulate")]
    pub data_dir: PathBuf,
    /// Dispatches per second per session (default: as fast as the pods read)
    #[arg(long)]
    pub rate: Option<u32>,
    /// Give up after this many seconds
    #[arg(long, default_value = "900")]
    pub timeout_secs: u64,
    /// Change the pod count under live traffic, at evenly spaced points of the stream: `M`,
    /// `M:STRATEGY` or `M:STRATEGY:SHARDS`, comma-separated (e.g. 3,5,2 or 3:discord)
    #[arg(long)]
    pub rescale: Option<String>,
    /// Live traffic (implied by --rescale): the stream's pace, dispatches per second for the
    /// whole bot [default with --rescale: 1000]
    #[arg(long)]
    pub live_rate: Option<u32>,
    /// With --rescale: the rescale command's --margin-ms
    #[arg(long, default_value = "1000")]
    pub margin_ms: u64,
    /// Discord's identify rate-limit window in the fake, in milliseconds; the pods' identify
    /// slot (IDENTIFY_SLOT_MS) follows it. Shorter than Discord's 5000 only to save time
    #[arg(long, default_value = "5000")]
    pub identify_window_ms: u64,
    /// Exit 0 even if a pod dropped (shed) events of a stuck guild
    #[arg(long)]
    pub allow_shed: bool,
    /// Machine-readable output: one JSON object a line on stdout, a `pod` line per started pod
    /// and a `summary` line at the end (progress stays on stderr)
    #[arg(long)]
    pub json: bool,
    /// The pod binary the pods run [default: guild-gateway beside this program]
    #[arg(long, env = "GUILD_GATEWAY_BIN")]
    pub pod_binary: Option<PathBuf>,
}

struct Pod {
    ordinal: u32,
    child: Child,
    /// Stopped after a rescale emptied it.
    stopped: bool,
    http: SocketAddr,
    database: PathBuf,
    log: PathBuf,
}

/// What one pod reported when it finished.
#[derive(Default, Clone)]
struct PodStatus {
    /// Each Discord session: its id and the seq of its last event submitted.
    sessions: Vec<(Option<String>, u64)>,
    pod_shards: Vec<u32>,
    identifies: u64,
    events_accepted: u64,
    events_done: u64,
    in_flight: u64,
    events_shed: u64,
    events_overflowed: u64,
    events_failed: u64,
    /// /status `gateway_ready`.
    ready: bool,
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Only our own children, by PID: a pod still running when we leave is stopped.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let mut strategy: Strategy = args
        .strategy
        .parse()
        .map_err(|e| anyhow::anyhow!("--strategy: {e}"))?;
    if args.pods == 0 {
        bail!("--pods must be at least 1");
    }
    let steps = match &args.rescale {
        Some(list) => schedule::parse(list)?,
        None => Vec::new(),
    };
    // Before generating anything: a missing pod binary is the likeliest mistake.
    let exe = pod_binary(args.pod_binary.as_deref())?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let events = match &args.events {
        Some(path) => path.clone(),
        None => {
            let path = args.data_dir.join(format!(
                "synthetic-{}g-{}m.ndjson",
                args.guilds, args.messages
            ));
            eprintln!(
                "generating a synthetic stream: {} guilds, {} messages -> {}",
                args.guilds,
                args.messages,
                path.display()
            );
            let n = crate::synthetic::write_file(&path, args.guilds, args.messages)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("  {n} events");
            path
        }
    };
    let recording = Recording::load(&events)?;
    let total_frames = recording.frames.len();
    let token = "simulate-token".to_string();
    let live = !steps.is_empty() || args.live_rate.is_some();
    let live_rate = args.live_rate.unwrap_or(1000);
    let options = FakeOptions {
        token: token.clone(),
        rate: args.rate,
        live_rate: live.then_some(live_rate),
        identify_window: Duration::from_millis(args.identify_window_ms),
        // Discord's own interval: a pod that stalls briefly under load is not a zombie.
        heartbeat_interval: Duration::from_millis(41_250),
        ..FakeOptions::default()
    };
    let fake = fake_discord::start("127.0.0.1:0".parse()?, recording, options).await?;
    eprintln!(
        "fake Discord on http://{} ({total_frames} events{})",
        fake.addr,
        if live {
            format!(" of live traffic at {live_rate} a second")
        } else {
            " per full session".into()
        }
    );

    // Pod k serves HTTP (and the data API) on base + k, which POD_URL_TEMPLATE says.
    let most_pods = steps.iter().map(|s| s.pods).fold(args.pods, u32::max);
    let base_port = crate::testing::free_port_block(most_pods as u16);
    let launcher = Launcher {
        exe: exe.clone(),
        data_dir: args.data_dir.clone(),
        base_port,
        pod_urls: format!("http://127.0.0.1:{{ordinal+{base_port}}}"),
        discord_token: token,
        discord_url: format!("http://{}", fake.addr),
        // The pods' slot is Discord's window plus the same 30% margin as against Discord.
        identify_slot_ms: args.identify_window_ms * 13 / 10,
        json: args.json,
    };
    let mut shards = args.shards;
    let mut pods = Vec::new();
    for ordinal in 0..args.pods {
        pods.push(launcher.start(ordinal, args.pods, strategy, shards)?);
    }

    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_secs);
    let tty = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    let mut current_pods = args.pods;
    let mut next_step = 0;
    let mut rescaling: Option<(Child, PathBuf)> = None;
    // The pods' CPU time and database sizes, sampled each round, to tell what a rescale costs.
    let mut usage = Usage::default();
    let mut window: Option<Window> = None;
    let mut rescales: Vec<schedule::Summary> = Vec::new();
    let statuses = loop {
        for pod in pods.iter_mut().filter(|p| !p.stopped) {
            if let Some(status) = pod.child.try_wait().context("checking a pod")? {
                bail!(
                    "pod {} (pid {}) died with {status} before committing everything it was sent; see {}",
                    pod.ordinal,
                    pod.child.id(),
                    pod.log.display()
                );
            }
        }
        let statuses: Vec<Option<PodStatus>> =
            futures_util::future::join_all(pods.iter().map(|p| pod_status(p.http))).await;
        usage.sample(&pods);
        if let Some(w) = &mut window {
            w.disk_peak = w.disk_peak.max(usage.disk);
        }
        // Live traffic starts once every first pod has all its sessions.
        if live && !fake.clock_view().running && all_connected(&statuses) {
            eprintln!("every pod is connected: the live stream starts");
            let _ = fake.clock_start();
        }
        let rescale_ended = match &mut rescaling {
            Some((child, _)) => child.try_wait().context("checking rescale")?.is_some(),
            None => false,
        };
        if rescale_ended {
            if let Some((child, log)) = rescaling.take() {
                let summary = schedule::finish(child, &log)?;
                let cost = window.take().map(|w| w.cost(&usage));
                print_rescale(rescales.len(), &summary, cost, args.json);
                schedule::coverage(&exe, &launcher.pod_urls)?;
                // Pods past the new count own nothing now: stopped, as the StatefulSet would.
                for pod in pods
                    .iter_mut()
                    .filter(|p| p.ordinal >= summary.to.pods && !p.stopped)
                {
                    stop(pod, false)?;
                    pod.stopped = true;
                }
                current_pods = summary.to.pods;
                strategy = summary.to.strategy.parse().unwrap_or(strategy);
                shards = Some(summary.to.shards);
                rescales.push(summary);
            }
        }
        let clock = fake.clock_view();
        if rescaling.is_none() && next_step < steps.len() && clock.running {
            let due = clock.total * (next_step as u64 + 1) / (steps.len() as u64 + 1);
            if clock.position >= due {
                let step = &steps[next_step];
                // A larger count: its standby pods first (they own nothing yet).
                for ordinal in current_pods..step.pods {
                    match pods.iter_mut().find(|p| p.ordinal == ordinal) {
                        Some(pod) if !pod.stopped => {}
                        Some(pod) => {
                            *pod = launcher.start(ordinal, current_pods, strategy, shards)?
                        }
                        None => {
                            pods.push(launcher.start(ordinal, current_pods, strategy, shards)?)
                        }
                    }
                    wait_answering(&pods[pods.len() - 1]).await?;
                }
                eprintln!(
                    "rescale {}: {current_pods} -> {} pods at event {} of {}",
                    next_step + 1,
                    step.pods,
                    clock.position,
                    clock.total
                );
                let log = args.data_dir.join(format!("rescale-{}.log", next_step + 1));
                let child = schedule::start(
                    &exe,
                    step,
                    &launcher.pod_urls,
                    API_TOKEN,
                    args.margin_ms,
                    &log,
                )?;
                rescaling = Some((child, log));
                window = Some(Window::open(&usage));
                next_step += 1;
            }
        }
        let sessions = fake.session_views();
        // Finished: every session of every pod was sent everything, and the pod submitted it
        // all and has nothing in flight (and, live, the stream and every rescale are over).
        let finished = rescaling.is_none()
            && next_step == steps.len()
            && fake.timeline_ended()
            && pods.iter().zip(&statuses).all(|(pod, status)| {
                if pod.stopped {
                    return true;
                }
                let Some(status) = status else { return false };
                status.sessions.len() == status.pod_shards.len()
                    && status.in_flight == 0
                    && status.sessions.iter().all(|(id, submitted)| {
                        sessions.iter().any(|s| {
                            Some(&s.session_id) == id.as_ref()
                                && s.done
                                && *submitted == s.last_seq_sent
                        })
                    })
            });
        if last_progress.elapsed() >= Duration::from_secs(1) || finished {
            last_progress = Instant::now();
            let line: Vec<String> = pods
                .iter()
                .zip(&statuses)
                .map(|(p, s)| match s {
                    _ if p.stopped => format!("pod {}: stopped", p.ordinal),
                    Some(s) => format!("pod {}: {} events", p.ordinal, s.events_done),
                    None => format!("pod {}: starting", p.ordinal),
                })
                .collect();
            let elapsed = started.elapsed().as_secs_f64();
            if tty {
                eprint!("\r{:>6.1}s  {}   ", elapsed, line.join("  |  "));
            } else {
                eprintln!("{:>6.1}s  {}", elapsed, line.join("  |  "));
            }
        }
        if finished {
            if tty {
                eprintln!();
            }
            break statuses
                .into_iter()
                .map(Option::unwrap_or_default)
                .collect::<Vec<_>>();
        }
        if Instant::now() > deadline {
            bail!("the pods did not finish within {} s", args.timeout_secs);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    // Scrape before stopping, then stop every pod with SIGTERM (they drain and exit 0).
    let mut metrics = Vec::new();
    let mut cpu = Vec::new();
    for pod in &pods {
        if pod.stopped {
            metrics.push(String::new());
            cpu.push(0.0);
            continue;
        }
        metrics.push(
            http_get(pod.http, "/metrics")
                .await
                .map(|(_, body)| body)
                .unwrap_or_default(),
        );
        cpu.push(cpu_seconds(pod.child.id()));
    }
    for (pod, status) in pods.iter_mut().zip(&statuses).filter(|(p, _)| !p.stopped) {
        // A pod that dropped or rolled back events says so in its exit status too; the summary
        // below reports those.
        let lost_events = status.events_shed + status.events_failed > 0;
        stop(pod, lost_events)?;
    }

    let mut rows = Vec::new();
    for (((pod, status), page), cpu) in pods.iter().zip(&statuses).zip(&metrics).zip(&cpu) {
        let counts = row_counts(&pod.database)?;
        rows.push(PodSummary {
            pod: pod.ordinal,
            sessions: status.sessions.len(),
            shards: status.pod_shards.clone(),
            identifies: status.identifies,
            guilds: counts[0],
            received: status.events_accepted,
            owned: metric_sum(page, "guild_gateway_events_owned_total"),
            foreign: metric_sum(page, "guild_gateway_events_foreign_total"),
            committed: status.events_done,
            overflowed: status.events_overflowed,
            shed: status.events_shed,
            failed: status.events_failed,
            message_stats: counts[1],
            message_cache: counts[2],
            channels: counts[3],
            mod_actions: counts[4],
            events_per_sec: status.events_done as f64 / elapsed.max(1e-9),
            cpu_seconds: *cpu,
        });
    }
    if args.json {
        let summary = serde_json::json!({"summary": {
            "strategy": strategy.as_str(), "elapsed_seconds": elapsed, "pods": rows,
        }});
        println!("{summary}");
    } else {
        print_table(&rows);
    }
    if live {
        // Nothing lost: the same stream replayed into one pod, row for row.
        let reference = args.data_dir.join("reference.sqlite3");
        verify::replay_reference(&exe, &events, &reference)?;
        let last = rescales.last().map(|r| r.to.clone());
        let layout = gateway_actors::rescale::ownership::Layout {
            pods: current_pods,
            strategy,
            shards: last.map_or_else(
                || {
                    shards.unwrap_or_else(|| {
                        gateway_actors::partition::default_shards(strategy, current_pods)
                    })
                },
                |l| l.shards,
            ),
        };
        let dbs: Vec<&Path> = pods.iter().map(|p| p.database.as_path()).collect();
        let problems = verify::differences(&reference, &dbs, layout)?;
        if !problems.is_empty() {
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!("error: the pods' rows differ from the one-pod replay of the same stream");
            return Ok(ExitCode::FAILURE);
        }
        eprintln!(
            "after {} rescales the pods hold exactly the one-pod replay's rows, each guild on its owner ({layout})",
            rescales.len()
        );
    }
    let shed: u64 = statuses.iter().map(|s| s.events_shed).sum();
    let failed: u64 = statuses.iter().map(|s| s.events_failed).sum();
    if shed > 0 || failed > 0 {
        eprintln!(
            "\n{shed} events were dropped (shed) and {failed} failed (rolled back) in {elapsed:.1} s ({strategy} strategy): they are NOT in the databases"
        );
        if failed > 0 || !args.allow_shed {
            eprintln!(
                "error: events were lost ({shed} shed, {failed} failed); see the pods' logs{}",
                if failed == 0 {
                    " (--allow-shed accepts shedding)"
                } else {
                    ""
                }
            );
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "\nall {} pods committed everything they were sent in {elapsed:.1} s ({} strategy)",
        pods.len(),
        strategy
    );
    Ok(ExitCode::SUCCESS)
}

/// Starts pods: each with its own database, log and port, as the StatefulSet would.
struct Launcher {
    exe: PathBuf,
    data_dir: PathBuf,
    base_port: u16,
    pod_urls: String,
    discord_token: String,
    discord_url: String,
    identify_slot_ms: u64,
    json: bool,
}

impl Launcher {
    /// Pod `ordinal`, told the deployment has `pods` pods (a standby pod when it is past them).
    fn start(
        &self,
        ordinal: u32,
        pods: u32,
        strategy: Strategy,
        shards: Option<u32>,
    ) -> anyhow::Result<Pod> {
        let database = self.data_dir.join(format!("gateway-{ordinal}.sqlite3"));
        remove_database(&database)?;
        let log = self.data_dir.join(format!("gateway-{ordinal}.log"));
        let http = SocketAddr::from(([127, 0, 0, 1], self.base_port + ordinal as u16));
        let child = Command::new(&self.exe)
            .arg("serve")
            .env("POD_ORDINAL", ordinal.to_string())
            .env("NUM_GATEWAY_PODS", pods.to_string())
            .env("SHARD_STRATEGY", strategy.as_str())
            .envs(shards.map(|s| ("DISCORD_SHARDS", s.to_string())))
            .env("DATABASE_URL", &database)
            .env("HTTP_ADDR", http.to_string())
            .env("POD_URL_TEMPLATE", &self.pod_urls)
            .env("API_TOKEN", API_TOKEN)
            .env("DISCORD_TOKEN", &self.discord_token)
            .env("DISCORD_API_URL", &self.discord_url)
            .env("IDENTIFY_SLOT_MS", self.identify_slot_ms.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(&log)
                    .with_context(|| format!("creating {}", log.display()))?,
            )
            .spawn()
            .with_context(|| format!("starting pod {ordinal} ({})", self.exe.display()))?;
        if self.json {
            let line = serde_json::json!({"pod": {
                "ordinal": ordinal, "pid": child.id(), "http": http.to_string(),
                "database": database, "log": log,
            }});
            println!("{line}");
        } else {
            println!(
                "pod {ordinal}: pid {}, http://{http}, database {}, log {}",
                child.id(),
                database.display(),
                log.display()
            );
        }
        Ok(Pod {
            ordinal,
            child,
            stopped: false,
            http,
            database,
            log,
        })
    }
}

/// Every pod answers and all its sessions are up.
fn all_connected(statuses: &[Option<PodStatus>]) -> bool {
    statuses.iter().all(|s| {
        s.as_ref()
            .is_some_and(|s| s.sessions.len() == s.pod_shards.len() && s.ready)
    })
}

/// Waits until a pod answers /status (30 s at most).
async fn wait_answering(pod: &Pod) -> anyhow::Result<()> {
    for _ in 0..300 {
        if pod_status(pod.http).await.is_some() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "pod {} did not answer within 30 s; see {}",
        pod.ordinal,
        pod.log.display()
    )
}

/// Every pod's CPU seconds and database bytes (with WAL and working files), summed, as of
/// the last sample; pods stopped keep their last figures.
#[derive(Default)]
struct Usage {
    at: Option<Instant>,
    cpu: f64,
    disk: u64,
    per_pod: std::collections::BTreeMap<u32, (f64, u64)>,
    /// (when, total CPU seconds, total bytes), the last 10 s: the steady rates before a rescale.
    history: std::collections::VecDeque<(Instant, f64, u64)>,
}

impl Usage {
    fn sample(&mut self, pods: &[Pod]) {
        let now = Instant::now();
        for pod in pods.iter().filter(|p| !p.stopped) {
            let dir = pod.database.parent().unwrap_or(Path::new("."));
            let prefix = pod
                .database
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // The database, its WAL, and a rescale's export and import files beside it.
            let disk = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum();
            self.per_pod
                .insert(pod.ordinal, (cpu_seconds(pod.child.id()), disk));
        }
        self.cpu = self.per_pod.values().map(|(c, _)| c).sum();
        self.disk = self.per_pod.values().map(|(_, d)| d).sum();
        self.at = Some(now);
        self.history.push_back((now, self.cpu, self.disk));
        while self
            .history
            .front()
            .is_some_and(|(t, _, _)| now.duration_since(*t) > Duration::from_secs(10))
        {
            self.history.pop_front();
        }
    }

    /// CPU seconds and bytes per second over the sampled history.
    fn rates(&self) -> (f64, f64) {
        match (self.history.front(), self.history.back()) {
            (Some((t0, c0, d0)), Some((t1, c1, d1))) if t1 > t0 => {
                let secs = (*t1 - *t0).as_secs_f64();
                ((c1 - c0) / secs, (*d1 as f64 - *d0 as f64) / secs)
            }
            _ => (0.0, 0.0),
        }
    }
}

/// The pods' usage while one rescale runs.
struct Window {
    started: Instant,
    cpu: f64,
    rate_before: f64,
    disk_rate_before: f64,
    disk_before: u64,
    disk_peak: u64,
}

/// What a rescale cost the pods, from its start to its commit.
#[derive(serde::Serialize, Clone, Copy)]
struct Cost {
    cpu_seconds: f64,
    /// The CPU the pods would have used meanwhile at their rate of the 10 s before.
    cpu_seconds_at_rate_before: f64,
    disk_bytes_before: u64,
    disk_bytes_peak: u64,
    disk_bytes_after: u64,
    /// What the files would have grown by meanwhile at their rate of the 10 s before.
    disk_bytes_growth_at_rate_before: u64,
}

impl Window {
    fn open(usage: &Usage) -> Window {
        let (rate_before, disk_rate_before) = usage.rates();
        Window {
            started: usage.at.unwrap_or_else(Instant::now),
            cpu: usage.cpu,
            rate_before,
            disk_rate_before,
            disk_before: usage.disk,
            disk_peak: usage.disk,
        }
    }

    fn cost(&self, usage: &Usage) -> Cost {
        let elapsed = usage.at.map_or(0.0, |at| {
            at.saturating_duration_since(self.started).as_secs_f64()
        });
        Cost {
            cpu_seconds: usage.cpu - self.cpu,
            cpu_seconds_at_rate_before: self.rate_before * elapsed,
            disk_bytes_before: self.disk_before,
            disk_bytes_peak: self.disk_peak.max(usage.disk),
            disk_bytes_after: usage.disk,
            disk_bytes_growth_at_rate_before: (self.disk_rate_before.max(0.0) * elapsed) as u64,
        }
    }
}

/// One line per rescale: what moved, how long it took, and what it cost the pods.
fn print_rescale(index: usize, r: &schedule::Summary, cost: Option<Cost>, json: bool) {
    if json {
        let line = serde_json::json!({"rescale": {
            "index": index + 1, "epoch": r.epoch, "from": r.from, "to": r.to,
            "guilds_moved": r.guilds_moved,
            // Every event the new owners captured: re-applied, or skipped because the old
            // owner applied it before its freeze point.
            "events_captured": r.events_replayed + r.events_skipped,
            "events_replayed": r.events_replayed,
            "longest_pause_ms": r.longest_pause_ms, "duration_ms": r.duration_ms,
            "cost": cost,
        }});
        println!("{line}");
    } else {
        println!(
            "rescale {}: {} -> {} pods ({}, {} shards), epoch {}: {} guilds moved, longest pause {} ms, {:.1} s, {} captured events re-applied, {} skipped",
            index + 1,
            r.from.pods,
            r.to.pods,
            r.to.strategy,
            r.to.shards,
            r.epoch,
            r.guilds_moved,
            r.longest_pause_ms,
            r.duration_ms as f64 / 1000.0,
            r.events_replayed,
            r.events_skipped
        );
        if let Some(c) = cost {
            let mb = |b: u64| b as f64 / 1_048_576.0;
            println!(
                "  pods' CPU meanwhile {:.2} s ({:.2} s at their rate before); files {:.1} MB before, {:.1} MB at most, {:.1} MB after ({:.1} MB of growth at their rate before)",
                c.cpu_seconds,
                c.cpu_seconds_at_rate_before,
                mb(c.disk_bytes_before),
                mb(c.disk_bytes_peak),
                mb(c.disk_bytes_after),
                mb(c.disk_bytes_growth_at_rate_before)
            );
        }
    }
}

/// One pod's line of the summary.
#[derive(serde::Serialize)]
struct PodSummary {
    pod: u32,
    /// Discord sessions the pod ran, the shards they were, and the identifies they took.
    sessions: usize,
    shards: Vec<u32>,
    identifies: u64,
    guilds: i64,
    received: u64,
    owned: u64,
    foreign: u64,
    committed: u64,
    overflowed: u64,
    shed: u64,
    failed: u64,
    message_stats: i64,
    message_cache: i64,
    channels: i64,
    mod_actions: i64,
    events_per_sec: f64,
    cpu_seconds: f64,
}

fn print_table(rows: &[PodSummary]) {
    println!();
    println!(
        "{:>4} {:>8} {:>16} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6} {:>6} {:>13} {:>13} {:>11} {:>11} {:>10} {:>7}",
        "pod", "sessions", "shards", "identifies", "guilds", "received", "owned", "foreign", "committed", "overflowed", "shed",
        "failed", "message_stats", "message_cache", "channels", "mod_actions", "events/s", "cpu s"
    );
    for r in rows {
        let shards = format!("{:?}", r.shards);
        println!(
            "{:>4} {:>8} {:>16} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10} {:>6} {:>6} {:>13} {:>13} {:>11} {:>11} {:>10.0} {:>7.2}",
            r.pod, r.sessions, shards, r.identifies, r.guilds, r.received, r.owned, r.foreign, r.committed, r.overflowed, r.shed,
            r.failed, r.message_stats, r.message_cache, r.channels, r.mod_actions,
            r.events_per_sec, r.cpu_seconds,
        );
    }
}

/// `given`, or the pod binary beside this program; an error says how to get one.
fn pod_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (path, how) = match given {
        Some(path) => (
            path.to_owned(),
            "given by --pod-binary or GUILD_GATEWAY_BIN",
        ),
        None => (
            crate::beside_current_exe(&crate::pod_binary_name())
                .context("locating this program, to find the pod binary beside it")?,
            "its default place, beside guild-gateway-dev",
        ),
    };
    if !path.is_file() {
        bail!(
            "the pod binary {} ({how}) does not exist: `cargo build --workspace` builds it \
             beside guild-gateway-dev (add --release for target/release), or pass \
             --pod-binary PATH (env GUILD_GATEWAY_BIN)",
            path.display()
        );
    }
    Ok(path)
}

async fn pod_status(addr: SocketAddr) -> Option<PodStatus> {
    let (code, body) = http_get(addr, "/status").await.ok()?;
    if code != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let sessions = v["sessions"].as_array().cloned().unwrap_or_default();
    Some(PodStatus {
        sessions: sessions
            .iter()
            .map(|s| {
                (
                    s["session_id"].as_str().map(str::to_owned),
                    s["last_seq_submitted"].as_u64().unwrap_or(0),
                )
            })
            .collect(),
        identifies: sessions
            .iter()
            .filter_map(|s| s["identifies"].as_u64())
            .sum(),
        pod_shards: v["pod_shards"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_u64())
                    .map(|s| s as u32)
                    .collect()
            })
            .unwrap_or_default(),
        events_accepted: v["events_accepted"].as_u64().unwrap_or(0),
        events_done: v["events_done"].as_u64().unwrap_or(0),
        in_flight: v["in_flight"].as_u64().unwrap_or(u64::MAX),
        events_shed: v["events_shed"].as_u64().unwrap_or(0),
        events_overflowed: v["events_overflowed"].as_u64().unwrap_or(0),
        events_failed: v["events_failed"].as_u64().unwrap_or(0),
        ready: v["gateway_ready"].as_bool().unwrap_or(false),
    })
}

/// SIGTERM, then waits for a clean exit (or exit 1 when `lost_events`, which the pod reports).
fn stop(pod: &mut Pod, lost_events: bool) -> anyhow::Result<()> {
    let pid = pod.child.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    for _ in 0..300 {
        if let Some(status) = pod.child.try_wait()? {
            let expected = status.success() || (lost_events && status.code() == Some(1));
            if !expected {
                bail!(
                    "pod {} exited with {status} on SIGTERM; see {}",
                    pod.ordinal,
                    pod.log.display()
                );
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("pod {} did not stop within 30 s of SIGTERM", pod.ordinal)
}

/// User + system CPU time of a process so far (Linux /proc; clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

pub(crate) fn remove_database(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        match std::fs::remove_file(&file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", file.display())),
        }
    }
    Ok(())
}

fn row_counts(db: &Path) -> anyhow::Result<[i64; 5]> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {}", db.display()))?;
    let mut counts = [0; 5];
    for (i, table) in [
        "guilds",
        "message_stats",
        "message_cache",
        "channel_info",
        "mod_actions",
    ]
    .iter()
    .enumerate()
    {
        counts[i] = gateway_actors::count_rows(&conn, table)
            .with_context(|| format!("counting {table}"))?;
    }
    Ok(counts)
}

/// The sum of a labelled counter's series in a Prometheus text page.
fn metric_sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The data API's token of a simulated deployment (local, loopback only).
pub const API_TOKEN: &str = "simulate-data-api-token";
