//! Pod failure recovery with the real parts on 127.0.0.1: a local S3 (moto), the real
//! `litestream` binary with the configuration deploy/ ships (rendered for the test),
//! fake-discord under load, and guild-gateway pods.

use guild_gateway_dev::testing::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "recovery-token";
const RATE: u32 = 2000;

struct Rig {
    dir: tempfile::TempDir,
    _s3: Proc,
    s3_port: u16,
    _fake: Proc,
    fake_port: u16,
    config: PathBuf,
    litestream_metrics: u16,
}

impl Rig {
    fn db(&self) -> PathBuf {
        self.dir.path().join("data/gateway.sqlite3")
    }

    fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        // S3: moto, with the bucket the manifests name.
        let s3_port = free_port();
        let s3 = Proc(
            Command::new(tool("moto_server"))
                .args(["-H", "127.0.0.1", "-p", &s3_port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server is installed (scripts/test installs it)"),
        );
        wait_for(Duration::from_secs(30), || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", s3_port)).ok()?;
            use std::io::{Read, Write};
            write!(
                s,
                "PUT /guild-gateway HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
            )
            .ok()?;
            let mut r = String::new();
            s.read_to_string(&mut r).ok()?;
            r.starts_with("HTTP/1.1 200").then_some(())
        })
        .expect("moto starts and creates the bucket");

        // Load: a paced synthetic stream.
        let events = dir.path().join("events.ndjson");
        guild_gateway_dev::synthetic::write_file(&events, 50, 40_000).unwrap();
        let fake_port = free_port();
        let fake = Proc(
            dev()
                .args([
                    "fake-discord",
                    "--listen",
                    &format!("127.0.0.1:{fake_port}"),
                    "--token",
                    TOKEN,
                    "--rate",
                    &RATE.to_string(),
                    "--events",
                ])
                .arg(&events)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_for(Duration::from_secs(20), || {
            http_get(fake_port, "/fake/sessions").ok()
        })
        .expect("fake-discord starts");

        // deploy/'s Litestream configuration, with this test's database path and metrics port.
        let shipped = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/base/litestream.yml"),
        )
        .unwrap();
        let litestream_metrics = free_port();
        let db = dir.path().join("data/gateway.sqlite3");
        assert!(
            shipped.contains("/data/gateway.sqlite3") && shipped.contains("addr: \":9090\""),
            "the shipped config changed shape"
        );
        let rendered = shipped
            .replace("/data/gateway.sqlite3", db.to_str().unwrap())
            .replace(
                "addr: \":9090\"",
                &format!("addr: \"127.0.0.1:{litestream_metrics}\""),
            );
        let config = dir.path().join("litestream.yml");
        std::fs::write(&config, rendered).unwrap();
        Rig {
            dir,
            _s3: s3,
            s3_port,
            _fake: fake,
            fake_port,
            config,
            litestream_metrics,
        }
    }

    /// `litestream` with the environment the StatefulSet gives its containers.
    fn litestream(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(tool("litestream"));
        cmd.args(args)
            .env_remove("AWS_CA_BUNDLE") // litestream refuses to start with it set
            .env("LITESTREAM_BUCKET", "guild-gateway")
            .env(
                "LITESTREAM_ENDPOINT",
                format!("http://127.0.0.1:{}", self.s3_port),
            )
            .env("LITESTREAM_REGION", "us-east-1")
            .env("LITESTREAM_FORCE_PATH_STYLE", "true")
            .env("POD_NAME", "gateway-0")
            .env("LITESTREAM_ACCESS_KEY_ID", "test")
            .env("LITESTREAM_SECRET_ACCESS_KEY", "test")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd
    }

    fn replicate(&self) -> Proc {
        Proc(
            self.litestream(&["replicate", "-config", self.config.to_str().unwrap()])
                .spawn()
                .expect("litestream is installed"),
        )
    }

    /// What the init container runs.
    fn restore(&self) -> Duration {
        let started = Instant::now();
        let status = self
            .litestream(&[
                "restore",
                "-if-db-not-exists",
                "-if-replica-exists",
                "-config",
                self.config.to_str().unwrap(),
                self.db().to_str().unwrap(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "litestream restore: {status}");
        started.elapsed()
    }

    fn pod(&self) -> (Proc, u16) {
        let port = free_port();
        let proc = Proc(
            serving_pod(&self.db(), port, self.fake_port, TOKEN)
                .env("SQLITE_WAL_AUTOCHECKPOINT", "0")
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        (proc, port)
    }
}

fn status(port: u16) -> Option<Value> {
    let (code, body) = http_get(port, "/status").ok()?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn wait_events_done(port: u16, at_least: u64) {
    wait_for(Duration::from_secs(60), || {
        status(port).filter(|s| s["events_done"].as_u64() >= Some(at_least))
    })
    .unwrap_or_else(|| panic!("the pod did not reach {at_least} events"));
}

fn wait_ready(port: u16) -> Duration {
    let started = Instant::now();
    wait_for(Duration::from_secs(60), || {
        http_get(port, "/readyz").ok().filter(|(c, _)| *c == 200)
    })
    .expect("the pod becomes ready");
    started.elapsed()
}

/// The message ids in a database (opened from a copy, so a crashed file is left as it was).
fn message_ids(db: &Path) -> BTreeSet<String> {
    let copy = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        if from.exists() {
            std::fs::copy(&from, copy.path().join(format!("db{suffix}"))).unwrap();
        }
    }
    let conn = rusqlite::Connection::open(copy.path().join("db")).unwrap();
    let mut stmt = conn
        .prepare("SELECT message_id FROM message_cache")
        .unwrap();
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    ids
}

fn litestream_metric_names(port: u16) -> BTreeSet<String> {
    let (_, page) = http_get(port, "/metrics").expect("litestream serves metrics");
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_killed_pod_with_a_lost_volume_comes_back_from_its_replica() {
    let rig = Rig::start();
    let (mut pod, port) = rig.pod();
    wait_events_done(port, 1);
    let mut litestream = rig.replicate();
    wait_events_done(port, 6000);

    // The alerts use Litestream's own metrics: they must exist.
    let alerts = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring/alerts.yaml"),
    )
    .unwrap();
    let used: BTreeSet<String> = alerts
        .match_indices("litestream_")
        .map(|(i, _)| {
            alerts[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    // A labelled counter appears once its first operation has happened: give it time.
    let exported = wait_for(Duration::from_secs(20), || {
        let exported = litestream_metric_names(rig.litestream_metrics);
        used.is_subset(&exported).then_some(exported)
    })
    .unwrap_or_else(|| litestream_metric_names(rig.litestream_metrics));
    for name in used {
        assert!(
            exported.contains(&name),
            "the alerts use {name}, which litestream does not export: {exported:?}"
        );
    }

    // The node is lost: pod and sidecar die at once, then the volume is gone.
    let killed_at = status(port).unwrap();
    let _ = pod.0.kill();
    let _ = litestream.0.kill();
    pod.0.wait().unwrap();
    litestream.0.wait().unwrap();
    let committed = message_ids(&rig.db());
    std::fs::remove_dir_all(rig.db().parent().unwrap()).unwrap();

    // As the init container on the new volume, then the pod.
    let restore_time = rig.restore();
    let restored = message_ids(&rig.db());
    assert!(!restored.is_empty(), "nothing was replicated");
    assert!(
        restored.is_subset(&committed),
        "the restore holds rows that were never committed"
    );
    let lost = committed.len() - restored.len();
    let (mut pod, port) = rig.pod();
    let _litestream = rig.replicate();
    let ready_after = wait_ready(port);
    println!(
        "SIGKILL + lost volume: {} messages committed at the kill (events_done {}), {} restored, {lost} lost \
         (~{:.0} ms of traffic at {RATE} events/s); restore {:.2} s + ready {:.2} s = RTO {:.2} s",
        committed.len(),
        killed_at["events_done"],
        restored.len(),
        lost as f64 / RATE as f64 * 1000.0,
        restore_time.as_secs_f64(),
        ready_after.as_secs_f64(),
        (restore_time + ready_after).as_secs_f64()
    );

    // It reconnects and catches up: the new session's events flow and are committed.
    let before = status(port).unwrap()["events_done"].as_u64().unwrap();
    wait_events_done(port, before + 2000);
    // Ready: its probe writes through the writer within 2 s, which a loaded machine can miss
    // once while the pod catches up; it must pass within a bound.
    let ready = wait_for(Duration::from_secs(30), || {
        (http_get(port, "/readyz").ok()?.0 == 200).then_some(())
    });
    assert!(
        ready.is_some(),
        "the restored pod is ready: {:?}",
        http_get(port, "/readyz")
    );
    sigterm(&pod.0);
    assert!(wait_exit(&mut pod.0, Duration::from_secs(30)).success());
    assert!(message_ids(&rig.db()).is_superset(&restored));
}

#[test]
fn sigterm_under_load_loses_nothing_committed() {
    let rig = Rig::start();
    let (mut pod, port) = rig.pod();
    wait_events_done(port, 1);
    let mut litestream = rig.replicate();
    wait_events_done(port, 6000);

    sigterm(&pod.0);
    let exit = wait_exit(&mut pod.0, Duration::from_secs(30));
    assert!(
        exit.success(),
        "the pod drains and exits 0 on SIGTERM: {exit}"
    );
    // Let the sidecar ship the last frames (sync-interval 1s), then stop it as Kubernetes would.
    let synced = wait_for(Duration::from_secs(30), || {
        let (_, page) = http_get(rig.litestream_metrics, "/metrics").ok()?;
        // Uploads (PUTs) happen only for new data: none for 3 s means it has shipped it all.
        let puts = |page: &str| {
            metric(
                page,
                "litestream_replica_operation_total{operation=\"PUT\",replica_type=\"s3\"}",
            )
        };
        let before = puts(&page);
        std::thread::sleep(Duration::from_secs(3));
        let (_, page) = http_get(rig.litestream_metrics, "/metrics").ok()?;
        (puts(&page) == before && before > 0.0).then_some(())
    });
    assert!(synced.is_some(), "litestream settles after the pod stops");
    sigterm(&litestream.0);
    wait_exit(&mut litestream.0, Duration::from_secs(30));
    let committed = all_rows(&rig.db());
    let committed_ids = message_ids(&rig.db());

    std::fs::remove_dir_all(rig.db().parent().unwrap()).unwrap();
    rig.restore();
    assert_eq!(
        all_rows(&rig.db()),
        committed,
        "the restore differs from what the pod committed"
    );
    println!(
        "SIGTERM under load: {} messages committed, all restored",
        committed_ids.len()
    );

    // And it comes back and carries on.
    let (mut pod, port) = rig.pod();
    let _litestream = rig.replicate();
    wait_ready(port);
    let before = status(port).unwrap()["events_done"].as_u64().unwrap();
    wait_events_done(port, before + 1000);
    sigterm(&pod.0);
    assert!(wait_exit(&mut pod.0, Duration::from_secs(30)).success());
}

#[test]
fn a_corrupt_database_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("gateway.sqlite3");
    // A page of garbage where the database was.
    std::fs::write(&db, vec![0x5Au8; 4096 * 4]).unwrap();
    let out = gateway()
        .arg("serve")
        .env("DATABASE_URL", &db)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("DISCORD_TOKEN", TOKEN)
        .env("DISCORD_API_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("failed its integrity check") && stderr.contains("RUNBOOK"),
        "{stderr}"
    );
    // The file is left as it was, for inspection.
    assert_eq!(std::fs::read(&db).unwrap(), vec![0x5Au8; 4096 * 4]);
}
