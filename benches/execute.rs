//! The bot's writes through the data API: `POST /v1/guilds/{id}/execute` on one pod (a
//! release `guild-gateway replay --linger` of the sample), over HTTP with keep-alive, as the
//! bot's Kysely dialect sends them. Not criterion: two measurements, printed.
//! - the most writes per second: `BENCH_CLIENTS` (default 16) clients each sending its next
//!   write as soon as the last is answered, for `BENCH_SECS` (default 10) seconds;
//! - latency at half that rate: writes offered at a fixed rate, each timed from its send to
//!   its answer (after the commit); p50 and p99.
//!
//! Each write is the bot's `recordReport` insert, as Kysely compiles it, with a new id.
//! Run: `cargo bench --bench execute`.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "bench-api-token-0123456789";
const INSERT: &str = r#"insert into "reported_messages" ("id", "reported_message_id", "reported_channel_id", "reported_user_id", "guild_id", "log_message_id", "log_channel_id", "reason", "staff_id", "staff_username", "extra", "created_at") values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"#;

/// The pod, killed (by its PID) when the bench ends.
struct Pod(Child);

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn main() {
    let clients: usize = env_or("BENCH_CLIENTS", 16);
    let secs: u64 = env_or("BENCH_SECS", 10);
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/events.sample.ndjson");
    let _pod = Pod(Command::new(env!("CARGO_BIN_EXE_guild-gateway"))
        .args(["replay", "--linger"])
        .arg(&sample)
        .env("DATABASE_URL", dir.path().join("pod.sqlite3"))
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("API_TOKEN", TOKEN)
        .env("NUM_GATEWAY_PODS", "1")
        .env("POD_ORDINAL", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the release pod"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(clients * 2)
            .build()
            .expect("an HTTP client");
        let base = format!("http://127.0.0.1:{port}");
        let guild = wait_for_guild(&client, &base).await;
        let url = Arc::new(format!("{base}/v1/guilds/{guild}/execute"));
        let next_id = Arc::new(AtomicU64::new(0));

        // The most writes per second, closed loop.
        let started = Instant::now();
        let until = started + Duration::from_secs(secs);
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (client, url, next_id, guild) =
                    (client.clone(), url.clone(), next_id.clone(), guild.clone());
                tokio::spawn(async move {
                    let mut done = 0u64;
                    while Instant::now() < until {
                        write(&client, &url, &guild, next_id.fetch_add(1, Ordering::Relaxed)).await;
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("a client task");
        }
        let max_rate = total as f64 / started.elapsed().as_secs_f64();
        println!("execute/max: {total} writes in {secs} s with {clients} clients: {max_rate:.0} writes/s");

        // Latency at half that rate, open loop.
        let rate = (max_rate / 2.0).max(1.0);
        let count = (rate * secs as f64) as u64;
        let started = Instant::now();
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let (client, url, next_id, guild) =
                    (client.clone(), url.clone(), next_id.clone(), guild.clone());
                let due = started + Duration::from_secs_f64(i as f64 / rate);
                tokio::spawn(async move {
                    tokio::time::sleep_until(due.into()).await;
                    let sent = Instant::now();
                    write(&client, &url, &guild, next_id.fetch_add(1, Ordering::Relaxed)).await;
                    sent.elapsed()
                })
            })
            .collect();
        let mut latencies = Vec::with_capacity(tasks.len());
        for t in tasks {
            latencies.push(t.await.expect("a write task"));
        }
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
        println!(
            "execute/half-rate: {count} writes at {rate:.0}/s: p50 {:.2} ms, p99 {:.2} ms",
            at(0.50).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3
        );
    });
}

/// The pod's first guild once the replay is done.
async fn wait_for_guild(client: &reqwest::Client, base: &str) -> String {
    let limit = Instant::now() + Duration::from_secs(60);
    while Instant::now() < limit {
        let status = client.get(format!("{base}/status")).send().await;
        if let Ok(status) = status {
            let text = status.text().await.unwrap_or_default();
            let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if body["in_flight"] == 0 && body["events_done"].as_u64().unwrap_or(0) > 0 {
                if let Some(guild) = first_guild(base, client).await {
                    return guild;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the pod did not replay the sample within 60 s");
}

async fn first_guild(base: &str, client: &reqwest::Client) -> Option<String> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/fixtures/events.sample.expected.json"),
    )
    .ok()?;
    let expected: serde_json::Value = serde_json::from_str(&text).ok()?;
    let guild = expected["guilds"][0].as_str()?.to_owned();
    let owner = client
        .get(format!("{base}/v1/guilds/{guild}/owner"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .ok()?;
    owner.status().is_success().then_some(guild)
}

async fn write(client: &reqwest::Client, url: &str, guild: &str, n: u64) {
    let id = format!("bench-{n}");
    let body = serde_json::json!({
        "sql": INSERT,
        "parameters": [id, id, "1", "2", guild, "3", "4", "spam", null, null, null, "2026-12-01T00:00:00.000Z"],
    });
    let answer = client
        .post(url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("the pod answers");
    let status = answer.status();
    assert!(status.is_success(), "{status}: {:?}", answer.text().await);
}
