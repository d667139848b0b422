//! The pods of a simulated deployment: starting each as the StatefulSet would (its own
//! database, log and port), reading its `/status`, and stopping it with SIGTERM.

use super::API_TOKEN;
use crate::probe::http_get;
use anyhow::{bail, Context as _};
use gateway_actors::partition::Strategy;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(super) struct Pod {
    pub(super) ordinal: u32,
    pub(super) child: Child,
    /// Stopped after a rescale emptied it.
    pub(super) stopped: bool,
    pub(super) http: SocketAddr,
    /// Its relay, when it serves one.
    pub(super) relay: Option<SocketAddr>,
    pub(super) database: PathBuf,
    pub(super) log: PathBuf,
}

/// What one pod reported when it finished.
#[derive(Default, Clone)]
pub(super) struct PodStatus {
    /// Each Discord session: its id and the seq of its last event submitted.
    pub(super) sessions: Vec<(Option<String>, u64)>,
    pub(super) pod_shards: Vec<u32>,
    pub(super) identifies: u64,
    pub(super) events_accepted: u64,
    pub(super) events_done: u64,
    pub(super) in_flight: u64,
    pub(super) events_shed: u64,
    pub(super) events_overflowed: u64,
    pub(super) events_failed: u64,
    /// /status `gateway_ready`.
    pub(super) ready: bool,
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

/// Starts pods: each with its own database, log and port, as the StatefulSet would.
pub(super) struct Launcher {
    pub(super) exe: PathBuf,
    pub(super) data_dir: PathBuf,
    pub(super) base_port: u16,
    pub(super) pod_urls: String,
    pub(super) discord_token: String,
    pub(super) discord_url: String,
    pub(super) identify_slot_ms: u64,
    pub(super) json: bool,
    /// Pod k's relay listens on this + k (None: no relay).
    pub(super) relay_base_port: Option<u16>,
}

impl Launcher {
    /// Pod `ordinal`, told the deployment has `pods` pods (a standby pod when it is past them).
    pub(super) fn start(
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
        let relay = self
            .relay_base_port
            .map(|base| SocketAddr::from(([127, 0, 0, 1], base + ordinal as u16)));
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
            .envs(relay.map(|r| ("RELAY_ADDR", r.to_string())))
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
                "relay": relay.map(|r| format!("ws://{r}")),
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
            relay,
            database,
            log,
        })
    }
}

/// Every pod answers and all its sessions are up.
pub(super) fn all_connected(statuses: &[Option<PodStatus>]) -> bool {
    statuses.iter().all(|s| {
        s.as_ref()
            .is_some_and(|s| s.sessions.len() == s.pod_shards.len() && s.ready)
    })
}

/// Waits until a pod answers /status (30 s at most).
pub(super) async fn wait_answering(pod: &Pod) -> anyhow::Result<()> {
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

/// The clients connected to the pod's relay now (None: it does not answer).
pub(super) async fn relay_clients(pod: &Pod) -> Option<u64> {
    let (code, body) = http_get(pod.http, "/metrics").await.ok()?;
    if code != 200 {
        return None;
    }
    body.lines()
        .find_map(|line| line.strip_prefix("guild_gateway_relay_clients "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Waits until the pod's relay has `clients` clients (120 s at most: a person starts them).
pub(super) async fn wait_relay_clients(pod: &Pod, clients: u32) -> anyhow::Result<()> {
    if clients == 0 || pod.relay.is_none() {
        return Ok(());
    }
    for _ in 0..1200 {
        if relay_clients(pod).await.unwrap_or(0) >= u64::from(clients) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "pod {}'s relay did not get {clients} clients within 120 s",
        pod.ordinal
    )
}

/// Before a pod stops: says so (a JSON line `{"stopping": {"ordinal": k}}` with `--json`), then
/// waits up to 30 s for its relay's clients to leave. A client that saw its pod's last events
/// can leave first, instead of reconnecting to a pod that is gone.
pub(super) async fn release_relay_clients(pod: &Pod, json: bool) {
    if relay_clients(pod).await.unwrap_or(0) == 0 {
        return;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"stopping": {"ordinal": pod.ordinal}})
        );
    } else {
        eprintln!(
            "pod {} stops once its relay's clients leave (30 s at most)",
            pod.ordinal
        );
    }
    for _ in 0..300 {
        if relay_clients(pod).await.unwrap_or(0) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `given`, or the pod binary beside this program; an error says how to get one.
pub(super) fn pod_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
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

pub(super) async fn pod_status(addr: SocketAddr) -> Option<PodStatus> {
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
pub(super) fn stop(pod: &mut Pod, lost_events: bool) -> anyhow::Result<()> {
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
