//! `relay`: what the relay costs the pod and how soon the bot gets its events, with the real
//! binaries (`cargo build --release --workspace` first, as for `live`): fake-discord ->
//! `guild-gateway serve` -> relay -> WebSocket clients on threads of this process, which
//! identify as discord.js would and record each dispatch's arrival.
//!
//! 1. Throughput and CPU, as fast as the pod goes, alternating runs with 0, 1 and 2 relay
//!    clients (0: the relay off, the pod's own path): events/s from the first accepted event
//!    until the pod committed everything and every client received every released event, and
//!    the pod's CPU seconds per 100k events. Their differences are the relay's cost per event
//!    and per client. AUDIT_WINDOW_SECS=0 here: a ban without its audit entry would otherwise
//!    hold the pod's last commit 5 s (its relay does not wait: the lag run keeps the default).
//! 2. Lag at half the pod's capacity: the fake plays the stream on its live clock at half the
//!    median rate of the relay-off runs (then of the 1-client runs), one client. An event's lag is its arrival at the client
//!    less when the fake's clock made it happen (frame i at start + (i+1)/rate): everything the
//!    bot waits for, from Discord's send through serenity, the pipeline, the commit and the
//!    relay. p50/p99 of all events and of INTERACTION_CREATE alone (Discord's answer window is
//!    3 s; the aim is p99 under 50 ms), with the pod's own `relay_lag_seconds` p99 bucket.
//!
//! `RELAY_BENCH_RUNS` (default 3) and `RELAY_BENCH_MESSAGES` (default 100000) tune it. Not a
//! criterion bench: each sample is a whole process lifetime.

mod process;

use guild_gateway_dev::testing::*;
use process::{committed_all_sent, env_or, filtered_out, measure, median, Sample};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::{self, Message};

const TOKEN: &str = "relay-bench-token";
const GUILDS: u32 = 300;

/// A dispatch as a client received it.
struct Arrival {
    kind: String,
    key: String,
    at: Instant,
}

/// One relay client on its own thread.
struct Client {
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Arrival>>,
}

/// What tells a stream's dispatches apart: the same fields the discord.js tests use.
fn key(kind: &str, d: &Value) -> String {
    let user = [
        &d["user"]["id"],
        &d["user_id"],
        &d["member"]["user"]["id"],
        &d["author"]["id"],
    ]
    .into_iter()
    .find_map(Value::as_str)
    .unwrap_or("");
    let field = |name: &str| d[name].as_str().unwrap_or("").to_owned();
    format!(
        "{kind}|{}|{}|{user}|{}|{}|{}",
        field("id"),
        field("message_id"),
        field("target_id"),
        d["action_type"],
        d["emoji"]["name"].as_str().unwrap_or("")
    )
}

impl Client {
    /// Connects (the relay may still be binding), identifies, and records dispatches on a
    /// thread until told to stop; [`Client::ready`] waits for READY. The relay holds an
    /// IDENTIFY until the pod's own session is ready.
    fn connect(port: u16) -> (Client, std::sync::mpsc::Receiver<()>) {
        let stream = wait_for(Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("the relay accepts connections");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let url = format!("ws://127.0.0.1:{port}/?v=10&encoding=json");
        let (mut ws, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
        let identify = json!({"op": 2, "d": {"token": TOKEN, "intents": 3276799,
            "properties": {"os": "linux", "browser": "bench", "device": "bench"}}});
        ws.send(Message::Text(identify.to_string()))
            .expect("IDENTIFY");
        let (received, stop) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let (count, stopping) = (received.clone(), stop.clone());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let mut arrivals = Vec::new();
            let mut ready = Some(ready_tx);
            while !stopping.load(Ordering::Relaxed) {
                let text = match ws.read() {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(_)) => break,
                    Ok(_) => continue,
                    Err(tungstenite::Error::Io(e))
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        continue
                    }
                    Err(_) => break,
                };
                let at = Instant::now();
                let Ok(frame) = serde_json::from_str::<Value>(&text) else {
                    continue;
                };
                let Some(kind) = frame["t"].as_str() else {
                    continue;
                };
                if kind == "READY" {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(());
                    }
                    continue;
                }
                arrivals.push(Arrival {
                    kind: kind.to_owned(),
                    key: key(kind, &frame["d"]),
                    at,
                });
                count.fetch_add(1, Ordering::Relaxed);
            }
            arrivals
        });
        let client = Client {
            received,
            stop,
            thread,
        };
        (client, ready_rx)
    }

    /// Waits until the count of received dispatches stood still for 300 ms (60 s at most).
    fn quiet(clients: &[Client]) {
        let counts = || -> Vec<u64> {
            clients
                .iter()
                .map(|c| c.received.load(Ordering::Relaxed))
                .collect()
        };
        let mut last = counts();
        let mut still_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(60);
        while still_since.elapsed() < Duration::from_millis(300) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let now = counts();
            if now != last {
                last = now;
                still_since = Instant::now();
            }
        }
    }

    fn finish(self) -> Vec<Arrival> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the client thread")
    }
}

fn scrape(port: u16) -> String {
    http_get(port, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// What one run measured.
struct Run {
    /// The pod: from its first accepted event until it committed the stream and the clients
    /// received the last dispatch.
    sample: Sample,
    /// Per client, its dispatches after READY.
    arrivals: Vec<Vec<Arrival>>,
    /// When the fake's live clock started (live runs).
    clock_started: Instant,
    metrics: String,
}

/// A fake Discord (on its live clock at `live_rate`, held until everyone is connected; else
/// as fast as the pod reads), one pod (with a relay when `clients` > 0) and its clients,
/// connected before the pod's session identifies.
fn run(stream: &Path, dir: &Path, live_rate: Option<u64>, clients: usize) -> Run {
    let live_args = live_rate.map(|r| {
        [
            "--live-rate".to_owned(),
            r.to_string(),
            "--live-hold".to_owned(),
        ]
    });
    let live_args: Vec<&str> = live_args.iter().flatten().map(String::as_str).collect();
    let (_fake, fake_port) = start_fake_discord_on(TOKEN, stream, &live_args);
    let (port, relay) = (free_port(), free_port());
    let mut command = gateway();
    command
        .arg("serve")
        .env("DATABASE_URL", dir.join("pod.sqlite3"))
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DISCORD_TOKEN", TOKEN)
        .env("DISCORD_API_URL", format!("http://127.0.0.1:{fake_port}"))
        // The longest allowed: the bench's clients do not heartbeat.
        .env("RELAY_HEARTBEAT_MS", "120000")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null());
    if live_rate.is_none() {
        // The stream's bans without audit entries would each hold the pod's last commit for
        // the audit window: throughput runs end when the work does.
        command.env("AUDIT_WINDOW_SECS", "0");
    }
    if clients > 0 {
        command.env("RELAY_ADDR", format!("127.0.0.1:{relay}"));
    }
    let mut pod = Proc(command.spawn().expect("starting serve"));
    let (connected, ready): (Vec<Client>, Vec<_>) =
        (0..clients).map(|_| Client::connect(relay)).unzip();
    for ready in ready {
        ready
            .recv_timeout(Duration::from_secs(60))
            .expect("READY from the relay");
    }
    if live_rate.is_some() {
        wait_for(Duration::from_secs(60), || {
            process::status(port).filter(|s| s["session_id"].is_string())
        })
        .expect("the pod's session is identified");
        let (code, _) =
            http_request(fake_port, "POST", "/fake/clock/start", &[], "").expect("the clock");
        assert!(code < 300, "the fake's clock starts: {code}");
    }
    let clock_started = Instant::now();
    let mut sample = measure(&pod, port, |s| committed_all_sent(fake_port, s));
    let committed = Instant::now();
    Client::quiet(&connected);
    let metrics = scrape(port);
    sigterm(&pod.0);
    wait_exit(&mut pod.0, Duration::from_secs(30));
    let arrivals: Vec<Vec<Arrival>> = connected.into_iter().map(Client::finish).collect();
    // The clients' last dispatch may come after the pod's last commit.
    let last = arrivals.iter().filter_map(|a| a.last()).map(|a| a.at).max();
    if let Some(late) = last.and_then(|at| at.checked_duration_since(committed)) {
        sample.seconds += late.as_secs_f64();
    }
    Run {
        sample,
        arrivals,
        clock_started,
        metrics,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The upper bound of the histogram bucket holding quantile `q` of `name` on a metrics page.
fn bucket_quantile(page: &str, name: &str, q: f64) -> Option<f64> {
    let buckets: Vec<(f64, f64)> = page
        .lines()
        .filter_map(|line| line.strip_prefix(&format!("{name}_bucket{{le=\"")))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.parse().ok()?, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, count)| *count >= q * total)
        .map(|(le, _)| *le)
}

fn main() {
    if filtered_out("relay") {
        return;
    }
    let runs = env_or("RELAY_BENCH_RUNS", 3).max(1);
    let messages = env_or("RELAY_BENCH_MESSAGES", 100_000);
    let dir = tempfile::tempdir().expect("a scratch directory");
    let stream = dir.path().join("stream.ndjson");
    let lines =
        guild_gateway_dev::synthetic::write_file(&stream, GUILDS, messages).expect("the stream");
    println!("relay: {lines} events ({GUILDS} guilds, {messages} messages), {runs} runs each");

    let run_dir = |name: &str| {
        let path = dir.path().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("a run directory");
        path
    };
    let mut samples: [Vec<Sample>; 3] = Default::default();
    for run_index in 0..runs {
        for (clients, samples) in samples.iter_mut().enumerate() {
            let Run {
                sample,
                arrivals,
                metrics,
                ..
            } = run(&stream, &run_dir(&format!("c{clients}")), None, clients);
            let relayed: Vec<usize> = arrivals.iter().map(Vec::len).collect();
            let released = metric(&metrics, "guild_gateway_relay_events_released_total");
            println!(
                "  run {run_index} clients {clients}: {} events in {:.2} s = {:.0} events/s, {:.2} CPU s, relayed {relayed:?} of {released} released",
                sample.events,
                sample.seconds,
                sample.rate(),
                sample.cpu_seconds
            );
            samples.push(sample);
        }
    }
    let rate = |s: &[Sample]| median(s.iter().map(Sample::rate).collect());
    let cpu = |s: &[Sample]| median(s.iter().map(Sample::cpu_per_100k).collect());
    for (clients, s) in samples.iter().enumerate() {
        println!(
            "clients {clients}: {:.0} events/s ({:.2} of the relay off), {:.2} CPU s per 100k events ({:.2} of the relay off)",
            rate(s),
            rate(s) / rate(&samples[0]),
            cpu(s),
            cpu(s) / cpu(&samples[0])
        );
    }
    let per_event_us = |s: &[Sample]| (cpu(s) - cpu(&samples[0])) * 10.0;
    println!(
        "the relay's CPU per event: {:.1} us with 1 client, {:.1} us with 2 (each client beyond the first: {:.1} us)",
        per_event_us(&samples[1]),
        per_event_us(&samples[2]),
        per_event_us(&samples[2]) - per_event_us(&samples[1])
    );

    // Lag at half the capacity of the pod's own path, and of the pod with one client.
    let due = due_times(&stream);
    for (what, of) in [("relay-off", &samples[0]), ("1-client", &samples[1])] {
        let half = (rate(of) / 2.0).round() as u64;
        let lag_run = run(&stream, &run_dir("lag"), Some(half), 1);
        report_lag(
            &format!("half the {what} median"),
            half,
            lag_run,
            due.clone(),
        );
    }
}

/// Each dispatch key of the stream -> its frame indexes, in order.
fn due_times(stream: &Path) -> HashMap<String, VecDeque<usize>> {
    let mut due: HashMap<String, VecDeque<usize>> = HashMap::new();
    for (index, line) in std::fs::read_to_string(stream)
        .expect("the stream")
        .lines()
        .enumerate()
    {
        let Ok(frame) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let kind = frame["t"].as_str().unwrap_or("");
        due.entry(key(kind, &frame["d"]))
            .or_default()
            .push_back(index);
    }
    due
}

fn report_lag(what: &str, rate: u64, lag_run: Run, mut due: HashMap<String, VecDeque<usize>>) {
    let Run {
        sample,
        mut arrivals,
        clock_started,
        metrics,
    } = lag_run;
    let arrivals = arrivals.pop().unwrap_or_default();
    let (mut all, mut interactions) = (Vec::new(), Vec::new());
    let mut unmatched = 0;
    for arrival in &arrivals {
        let Some(index) = due.get_mut(&arrival.key).and_then(VecDeque::pop_front) else {
            unmatched += 1;
            continue;
        };
        let happened = clock_started + Duration::from_secs_f64((index + 1) as f64 / rate as f64);
        let lag = arrival.at.saturating_duration_since(happened).as_secs_f64() * 1000.0;
        all.push(lag);
        if arrival.kind == "INTERACTION_CREATE" {
            interactions.push(lag);
        }
    }
    all.sort_by(f64::total_cmp);
    interactions.sort_by(f64::total_cmp);
    println!(
        "lag at {rate} events/s ({what}), {} events relayed ({unmatched} unmatched), pod CPU {:.2} s:",
        arrivals.len(),
        sample.cpu_seconds
    );
    println!(
        "  all events: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  INTERACTION_CREATE ({}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        interactions.len(),
        percentile(&interactions, 0.5),
        percentile(&interactions, 0.99),
        interactions.last().copied().unwrap_or(f64::NAN)
    );
    match bucket_quantile(&metrics, "guild_gateway_relay_lag_seconds", 0.99) {
        Some(le) => println!(
            "  the pod's relay_lag_seconds p99 bucket: <= {:.1} ms",
            le * 1000.0
        ),
        None => println!("  the pod's relay_lag_seconds: no samples"),
    }
    println!(
        "  guild documents held: {}, ring {:.1} MiB",
        metric(&metrics, "guild_gateway_relay_guilds"),
        metric(&metrics, "guild_gateway_relay_buffer_bytes") / (1024.0 * 1024.0)
    );
}
