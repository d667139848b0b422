//! Live rescale: ownership is durable, and a change of pod count moves every guild's history
//! to its new owner while traffic flows, through crashes of any party at any step.
//!
//! The traffic comes from fake-discord's live timeline: one clock over the stream, each event
//! sent once to the sessions open when it happens. Crash tests pause that clock and let the
//! pods commit what they were sent before a pod is killed, and resume it once the pod is back:
//! Discord sends nothing again to a session that did not exist, so the events a pod had in
//! flight or missed while down are lost with or without a rescale (the README says so). What
//! these tests prove is that the rescale's own state (exports, capture logs, freezes,
//! ownership) survives any party's crash at any step.

use guild_gateway_dev::testing::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

const TOKEN: &str = "rescale-test-api-token";

/// A pod that replays the sample and stays up (`replay --linger`) with `pods` as its setting.
fn lingering_pod(db: &Path, port: u16, pods: u32) -> Proc {
    let mut cmd = lingering_replay(db, port);
    cmd.env("NUM_GATEWAY_PODS", pods.to_string())
        .env("POD_ORDINAL", "0")
        .env("API_TOKEN", TOKEN);
    start_replay_pod(cmd, port)
}

/// A pod restarted with another NUM_GATEWAY_PODS follows the ownership its database committed,
/// and says so in /status and a metric; the owner endpoint answers with that epoch.
#[test]
fn a_stale_pod_count_is_followed_not_obeyed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pod0.sqlite3");
    let port = free_port();
    let first = lingering_pod(&db, port, 3);
    sigterm(&first.0);
    drop(first);
    let _second = lingering_pod(&db, port, 4);
    let status = get_json(port, "/status").unwrap();
    assert_eq!(status["num_pods"], 3, "{status}");
    assert_eq!(status["ownership"]["epoch"], 1);
    let stale = status["ownership"]["config_stale"].as_str().unwrap_or("");
    assert!(
        stale.contains("4 pods") && stale.contains("3 pods"),
        "{status}"
    );
    let (_, page) = http_get(port, "/metrics").unwrap();
    assert_eq!(metric(&page, "guild_gateway_config_stale"), 1.0);
    assert_eq!(metric(&page, "guild_gateway_pods"), 3.0);
    assert_eq!(metric(&page, "guild_gateway_ownership_epoch"), 1.0);
    let (code, owner) = api_request(
        port,
        Some(TOKEN),
        "GET",
        "/v1/guilds/1325263406417087088/owner",
        "",
    )
    .unwrap();
    assert_eq!(code, 200, "{owner}");
    assert_eq!(
        (owner["pods"].clone(), owner["epoch"].clone()),
        (3.into(), 1.into())
    );
}

/// The heavy tests below run one at a time: each starts a fake Discord and several pods, and
/// together they would only compete for the machine's cores.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Fake Discord's identify window here, and the pods' slot: short, to save the tests' time.
const IDENTIFY_WINDOW_MS: &str = "300";
const IDENTIFY_SLOT_MS: &str = "400";

/// The rows of `stream` replayed into one pod, in the shape `assert_rows_with_shards` takes.
fn one_pod_rows(dir: &Path, stream: &Path) -> Value {
    let db = dir.join("one-pod.sqlite3");
    replay(&db, 0, 1, "md5", stream);
    expected_rows_of(&db)
}

/// Final pods `0..pods` hold exactly the one-pod rows, each guild on its owner; pods past them
/// hold no guild's rows.
fn assert_final_rows(
    dir: &Path,
    stream: &Path,
    dbs: &[PathBuf],
    pods: usize,
    strategy: &str,
    shards: Option<u32>,
) {
    let expected = one_pod_rows(dir, stream);
    assert_rows_with_shards(&dbs[..pods], strategy, shards, &expected);
    for db in &dbs[pods..] {
        for (table, rows) in comparable_rows(db) {
            assert!(rows.is_empty(), "{} still holds {table} rows", db.display());
        }
    }
}

/// A synthetic stream of `guilds` guilds and `messages` messages in `dir`.
fn synthetic_stream(dir: &Path, guilds: u32, messages: u64) -> PathBuf {
    let path = dir.join("stream.ndjson");
    guild_gateway_dev::synthetic::write_file(&path, guilds, messages).unwrap();
    path
}

/// `guild-gateway-dev simulate --json` of `stream` with `args`; its JSON lines, after
/// asserting exit 0 and simulate's own check against a one-pod replay.
fn simulate(dir: &Path, stream: &Path, args: &[&str]) -> Vec<Value> {
    let out = dev()
        .arg("simulate")
        .args(args)
        .arg("--events")
        .arg(stream)
        .args([
            "--identify-window-ms",
            IDENTIFY_WINDOW_MS,
            "--json",
            "--data-dir",
        ])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success(&format!("simulate {args:?}"), &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hold exactly the one-pod replay's rows"),
        "{stderr}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The `rescale` lines of simulate's output; each moved guilds, and none was lost or shed.
fn rescales(lines: &[Value], expected: &[u32]) -> Vec<Value> {
    let rescales: Vec<Value> = lines
        .iter()
        .filter_map(|l| l.get("rescale").cloned())
        .collect();
    let to: Vec<u64> = rescales
        .iter()
        .map(|r| r["to"]["pods"].as_u64().unwrap())
        .collect();
    assert_eq!(
        to,
        expected.iter().map(|&n| u64::from(n)).collect::<Vec<_>>()
    );
    for r in &rescales {
        assert!(r["guilds_moved"].as_u64().unwrap() > 0, "{r}");
        assert!(r["events_captured"].as_u64().unwrap() > 0, "{r}");
    }
    let summary = lines.iter().find_map(|l| l.get("summary")).unwrap();
    for pod in summary["pods"].as_array().unwrap() {
        assert_eq!(
            (pod["shed"].as_u64(), pod["failed"].as_u64()),
            (Some(0), Some(0)),
            "{pod}"
        );
    }
    rescales
}

fn pod_dbs(dir: &Path, pods: u32) -> Vec<PathBuf> {
    (0..pods)
        .map(|k| dir.join(format!("gateway-{k}.sqlite3")))
        .collect()
}

/// One simulate run of `args` over a 200-guild stream at 800 events/s: its rescale lines
/// (checked by [`rescales`] against `to`), after checking the final rows of the
/// `total_pods` databases (the last count of `to` owning guilds) under `strategy` and `shards`.
fn live_rescale(
    args: &[&str],
    to: &[u32],
    total_pods: u32,
    strategy: &str,
    shards: Option<u32>,
) -> Vec<Value> {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 200, 15_000);
    let mut all = args.to_vec();
    all.extend(["--live-rate", "800"]);
    let lines = simulate(dir.path(), &stream, &all);
    let rescales = rescales(&lines, to);
    let final_pods = *to.last().unwrap() as usize;
    let dbs = pod_dbs(dir.path(), total_pods);
    assert_final_rows(dir.path(), &stream, &dbs, final_pods, strategy, shards);
    rescales
}

#[test]
fn md5_one_to_three_to_five_to_two_under_live_traffic() {
    live_rescale(
        &["--pods", "1", "--rescale", "3,5,2"],
        &[3, 5, 2],
        5,
        "md5",
        None,
    );
}

#[test]
fn discord_three_to_five_under_live_traffic() {
    let args = ["--pods", "3", "--strategy", "discord", "--rescale", "5"];
    let r = &live_rescale(&args, &[5], 5, "discord", Some(5))[0];
    // S follows N with discord unless DISCORD_SHARDS says otherwise: 3 -> 5 shards.
    assert_eq!(
        (r["from"]["shards"].as_u64(), r["to"]["shards"].as_u64()),
        (Some(3), Some(5))
    );
}

#[test]
fn md5_to_discord_switch_under_live_traffic() {
    let args = ["--pods", "3", "--rescale", "3:discord"];
    let r = &live_rescale(&args, &[3], 3, "discord", Some(3))[0];
    assert_eq!(
        (r["from"]["strategy"].as_str(), r["to"]["strategy"].as_str()),
        (Some("md5"), Some("discord"))
    );
}

/// A deployment for the crash tests: fake-discord's live timeline (held until every first pod
/// is connected), and `guild-gateway serve` pods on consecutive ports.
struct Cluster {
    dir: PathBuf,
    stream: PathBuf,
    /// Kept for its lifetime: dropping it stops the fake (by PID).
    _fake: Proc,
    fake_port: u16,
    base: u16,
    template: String,
    /// Pod k's process, while it runs.
    pods: Vec<Option<Proc>>,
    /// Settings only some pods get (pod, name, value): a slowed pod, say.
    pod_env: Vec<(u32, &'static str, &'static str)>,
}

impl Cluster {
    /// `pods` pods of `setting` pods (more than `setting`: standby pods), the stream held.
    fn start(dir: &Path, stream: &Path, pods: u32, setting: u32, live_rate: u32) -> Cluster {
        Cluster::start_with(dir, stream, pods, setting, live_rate, Vec::new())
    }

    /// [`Cluster::start`], with settings for some pods only.
    fn start_with(
        dir: &Path,
        stream: &Path,
        pods: u32,
        setting: u32,
        live_rate: u32,
        pod_env: Vec<(u32, &'static str, &'static str)>,
    ) -> Cluster {
        let (fake, fake_port) = start_fake_discord_on(
            "tok",
            stream,
            &[
                "--live-rate",
                &live_rate.to_string(),
                "--live-hold",
                "--identify-window-ms",
                IDENTIFY_WINDOW_MS,
                "--heartbeat-ms",
                "41250",
            ],
        );
        let base = free_port_block(pods as u16);
        let mut cluster = Cluster {
            dir: dir.to_owned(),
            stream: stream.to_owned(),
            _fake: fake,
            fake_port,
            base,
            template: format!("http://127.0.0.1:{{ordinal+{base}}}"),
            pods: (0..pods).map(|_| None).collect(),
            pod_env,
        };
        for k in 0..pods {
            cluster.start_pod(k, setting);
        }
        cluster.clock("start");
        cluster
    }

    fn db(&self, k: u32) -> PathBuf {
        self.dir.join(format!("gateway-{k}.sqlite3"))
    }

    fn port(&self, k: u32) -> u16 {
        self.base + k as u16
    }

    /// Starts pod k (again, on its database) and waits until its sessions are READY.
    fn start_pod(&mut self, k: u32, setting: u32) {
        let log = std::fs::File::create(self.dir.join(format!("gateway-{k}.log"))).unwrap();
        let mut command = gateway();
        for (_, name, value) in self.pod_env.iter().filter(|(pod, _, _)| *pod == k) {
            command.env(name, value);
        }
        let pod = Proc(
            command
                .arg("serve")
                .env("POD_ORDINAL", k.to_string())
                .env("NUM_GATEWAY_PODS", setting.to_string())
                .env("DATABASE_URL", self.db(k))
                .env("HTTP_ADDR", format!("127.0.0.1:{}", self.port(k)))
                .env("POD_URL_TEMPLATE", &self.template)
                .env("API_TOKEN", TOKEN)
                .env("DISCORD_TOKEN", "tok")
                .env(
                    "DISCORD_API_URL",
                    format!("http://127.0.0.1:{}", self.fake_port),
                )
                .env("IDENTIFY_SLOT_MS", IDENTIFY_SLOT_MS)
                .env("IDENTIFY_BACKOFF_SECS", "1")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        self.pods[k as usize] = Some(pod);
        // Every session, a rescale's new ones too (readiness covers the committed layout's).
        let ready = wait_for(Duration::from_secs(60), || {
            get_json(self.port(k), "/status").filter(|s| {
                s["gateway_ready"] == true
                    && s["sessions"]
                        .as_array()
                        .is_some_and(|all| all.iter().all(|s| s["ready"] == true))
            })
        });
        assert!(ready.is_some(), "pod {k} did not become ready");
    }

    /// A /v1 call to pod k with the token; the status and the JSON answer.
    fn api(&self, k: u32, method: &str, path: &str, body: &str) -> (u16, Value) {
        api_request(self.port(k), Some(TOKEN), method, path, body).unwrap()
    }

    /// Reads `guild`'s messages as the HTTP services do: ask any pod (here pod 2) for the
    /// owner, then query it. The owner's ordinal and the count.
    fn read(&self, guild: &str) -> (u32, i64) {
        let (code, owner) = self.api(2, "GET", &format!("/v1/guilds/{guild}/owner"), "");
        assert_eq!(code, 200, "{owner}");
        let ordinal = owner["ordinal"].as_u64().unwrap() as u32;
        let sql = serde_json::json!({
            "sql": "SELECT COUNT(*) FROM message_stats WHERE guild_id = ?",
            "parameters": [guild],
        });
        let (code, rows) = self.api(
            ordinal,
            "POST",
            &format!("/v1/guilds/{guild}/query"),
            &sql.to_string(),
        );
        assert_eq!(code, 200, "pod {ordinal} reading {guild}: {rows}");
        (ordinal, rows["rows"][0][0].as_i64().unwrap())
    }

    /// SIGKILLs the pods `which` (by PID), then starts them again on their databases.
    fn kill_and_restart(&mut self, which: &[u32]) {
        for &k in which {
            self.kill(k);
        }
        for &k in which {
            self.start_pod(k, 2);
        }
    }

    /// SIGKILL, by the pod's PID.
    fn kill(&mut self, k: u32) {
        if let Some(mut pod) = self.pods[k as usize].take() {
            pod.0.kill().unwrap();
            pod.0.wait().unwrap();
        }
    }

    /// `POST /fake/clock/{action}`: start, pause or resume the live stream.
    fn clock(&self, action: &str) {
        let (code, body) = http_request(
            self.fake_port,
            "POST",
            &format!("/fake/clock/{action}"),
            &[],
            "",
        )
        .unwrap();
        assert!(code == 204 || code == 200, "{action}: {code} {body}");
    }

    fn position(&self) -> (u64, u64) {
        let clock = get_json(self.fake_port, "/fake/clock").unwrap();
        (
            clock["position"].as_u64().unwrap(),
            clock["total"].as_u64().unwrap(),
        )
    }

    /// Waits until the stream is `fraction` through.
    fn wait_position(&self, fraction: f64) {
        let reached = wait_for(Duration::from_secs(120), || {
            let (position, total) = self.position();
            (position as f64 >= fraction * total as f64).then_some(())
        });
        assert!(reached.is_some(), "the stream did not reach {fraction}");
    }

    /// `guild-gateway rescale ARGS`; its output, after asserting exit 0.
    fn rescale(&self, args: &[&str]) -> String {
        let out = self.rescale_command(args).output().unwrap();
        let stdout = assert_success(&format!("rescale {args:?}"), &out);
        format!("{stdout}{}", String::from_utf8_lossy(&out.stderr))
    }

    fn rescale_command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = gateway();
        cmd.arg("rescale")
            .args(args)
            .args(["--margin-ms", "500"])
            .env("API_TOKEN", TOKEN)
            .env("POD_URL_TEMPLATE", &self.template)
            .stdin(Stdio::null());
        cmd
    }

    /// Waits until the stream has ended and every running pod committed all it was sent.
    fn wait_settled(&self) {
        self.wait_quiet(true);
    }

    /// Waits until every running pod committed all it was sent (and, `ended`, the stream is
    /// over). With the clock paused, a crash then hits the protocol's state, not events in
    /// flight: those a SIGKILL loses whether or not a rescale runs (see the module's docs).
    fn wait_quiet(&self, ended: bool) {
        let mut last = None;
        let settled = wait_for(Duration::from_secs(180), || {
            let now = self.progress(ended)?;
            // The same for half a second: nothing more was sent meanwhile.
            let same = last.as_ref() == Some(&now);
            last = Some(now);
            std::thread::sleep(Duration::from_millis(500));
            same.then_some(())
        });
        assert!(
            settled.is_some(),
            "the pods did not commit what they were sent"
        );
    }

    /// Every running session's last seq sent, if each pod submitted and committed all of it.
    fn progress(&self, ended: bool) -> Option<Vec<Value>> {
        let (position, total) = self.position();
        if ended && position < total {
            return None;
        }
        let sessions = get_json(self.fake_port, "/fake/sessions")?;
        let sessions = sessions.as_array()?;
        let mut sent = Vec::new();
        for (k, pod) in self.pods.iter().enumerate() {
            if pod.is_none() {
                continue;
            }
            let status = get_json(self.port(k as u32), "/status")?;
            if status["in_flight"] != 0 {
                return None;
            }
            for session in status["sessions"].as_array()? {
                let fake = sessions
                    .iter()
                    .find(|s| s["session_id"] == session["session_id"])?;
                if fake["last_seq_sent"] != session["last_seq_submitted"]
                    || (ended && fake["done"] != true)
                {
                    return None;
                }
                sent.push(fake["last_seq_sent"].clone());
            }
        }
        Some(sent)
    }

    /// Every pod's state, as `rescale --status` prints it (exit 0: they agree).
    fn status(&self) -> String {
        self.rescale(&["--status"])
    }

    /// After the stream: exact rows on pods 0..pods, nothing shed, coverage passes.
    fn assert_done(&self, pods: u32) {
        self.wait_settled();
        for (k, _) in self.pods.iter().enumerate().filter(|(_, p)| p.is_some()) {
            let status = get_json(self.port(k as u32), "/status").unwrap();
            assert_eq!(status["events_shed"], 0, "pod {k}: {status}");
            assert_eq!(status["events_failed"], 0, "pod {k}: {status}");
        }
        let out = gateway()
            .args(["coverage", "--pod-url-template", &self.template])
            .env_remove("NUM_GATEWAY_PODS")
            .output()
            .unwrap();
        assert_success("coverage", &out);
        let dbs: Vec<PathBuf> = (0..self.pods.len() as u32).map(|k| self.db(k)).collect();
        assert_final_rows(&self.dir, &self.stream, &dbs, pods as usize, "md5", None);
    }
}

/// Pod 2 joins 2 md5 pods under live traffic; `crash` runs between the steps of the rescale
/// (the command stopped with --until `step`), with the stream paused, before the command runs
/// again to finish.
fn two_to_three_with(step: &str, crash: impl FnOnce(&mut Cluster)) {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 120, 8_000);
    let mut cluster = Cluster::start(dir.path(), &stream, 3, 2, 600);
    cluster.wait_position(0.3);
    // The bot's own rows, in tables tied to their guild by a column and through a parent:
    // they move with their guilds through every crash too.
    let guilds = stream_guilds(&stream);
    let bot_rows = BotRows::new("seeded");
    for (i, guild) in guilds.iter().enumerate() {
        bot_rows.write(&cluster, i, guild);
    }
    cluster.rescale(&["--to", "3", "--until", step]);
    cluster.clock("pause");
    cluster.wait_quiet(false);
    crash(&mut cluster);
    cluster.clock("resume");
    cluster.wait_position(0.6);
    let finished = cluster.rescale(&["--to", "3"]);
    assert!(finished.contains("committed epoch 2"), "{finished}");
    assert!(cluster
        .status()
        .contains("pod 2: epoch 2 (3 pods, md5, 1 shards)"));
    cluster.assert_done(3);
    bot_rows.assert_on_owners(&cluster, 3);
}

/// The guilds of the stream.
fn stream_guilds(stream: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(stream).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["t"] == "GUILD_CREATE")
        .filter_map(|v| v["d"]["id"].as_str().map(str::to_owned))
        .collect()
}

/// A guild of the stream that moves to pod 2 when 2 md5 pods become 3.
fn moving_guild(stream: &Path) -> String {
    let ids = stream_guilds(stream);
    let owners = owners(&ids, 3, "md5");
    owners
        .into_iter()
        .find_map(|(id, k)| (k == 2).then_some(id))
        .expect("a guild moves to pod 2")
}

#[test]
fn the_command_stops_after_each_step_and_resumes() {
    two_to_three_with("prepare", |cluster| {
        let guild = moving_guild(&cluster.stream);
        // Reads are served by the old owner until the commit.
        let (owner, prepared) = cluster.read(&guild);
        assert!(owner < 2 && prepared > 0, "{owner} {prepared}");
        // Run again, stopping after each later step in turn: the state is on the pods.
        let frozen = cluster.rescale(&["--until", "freeze"]);
        assert!(frozen.contains("resuming"), "{frozen}");
        let status = cluster.status();
        assert!(status.contains("frozen true, live false"), "{status}");
        assert_eq!(cluster.read(&guild), (owner, prepared));
        // Its settings cannot change while its rows are exported: 503, retry.
        let patch = cluster.api(
            owner,
            "PATCH",
            &format!("/v1/guilds/{guild}/settings"),
            r#"{"theme": "dark"}"#,
        );
        assert_eq!(patch.0, 503, "{}", patch.1);
        // And the bot's writes to its tables, likewise.
        let write = cluster.api(
            owner,
            "POST",
            &format!("/v1/guilds/{guild}/execute"),
            &serde_json::json!({
                "sql": "insert into honeypot_config (guild_id, channel_id) values (?, '1')",
                "parameters": [guild],
            })
            .to_string(),
        );
        assert_eq!(write.0, 503, "{}", write.1);
        // After a freeze there is no going back.
        let abort = cluster.rescale_command(&["--abort"]).output().unwrap();
        assert!(!abort.status.success());
        assert!(String::from_utf8_lossy(&abort.stderr).contains("only rolls forward"));
        cluster.rescale(&["--until", "import"]);
        assert!(cluster.status().contains("live true"));
        assert_eq!(cluster.read(&guild).0, owner);
        let abort = cluster.rescale_command(&["--abort"]).output().unwrap();
        assert!(!abort.status.success(), "an abort after the import");
    });
}

/// After the commit, the new owner answers for a moved guild, with at least what the old
/// owner had.
#[test]
fn reads_move_to_the_new_owner_at_the_commit() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 120, 8_000);
    let cluster = Cluster::start(dir.path(), &stream, 3, 2, 600);
    let guild = moving_guild(&stream);
    cluster.wait_position(0.5);
    let (before, count) = cluster.read(&guild);
    assert!(before < 2 && count > 0);
    cluster.rescale(&["--to", "3"]);
    let (after, moved) = cluster.read(&guild);
    assert_eq!(after, 2);
    assert!(moved >= count, "{moved} < {count}");
    // Writes are taken by the new owner again.
    let patch = cluster.api(
        2,
        "PATCH",
        &format!("/v1/guilds/{guild}/settings"),
        r#"{"theme": "dark"}"#,
    );
    assert_eq!(patch.0, 200, "{}", patch.1);
    // And the old owner sends the services to it.
    let (code, misdirected) =
        cluster.api(before, "GET", &format!("/v1/guilds/{guild}/settings"), "");
    assert_eq!(code, 421);
    assert_eq!(
        (
            misdirected["ordinal"].as_u64(),
            misdirected["epoch"].as_u64()
        ),
        (Some(2), Some(2))
    );
    // shard-of asked for the committed layout agrees.
    let out = gateway()
        .args([
            "shard-of",
            "--json",
            "--from-pod",
            &format!("http://127.0.0.1:{}", cluster.port(0)),
            &guild,
        ])
        .output()
        .unwrap();
    let owner: Value = serde_json::from_str(&assert_success("shard-of --from-pod", &out)).unwrap();
    assert_eq!(
        (
            owner["ordinal"].as_u64(),
            owner["epoch"].as_u64(),
            owner["pods"].as_u64()
        ),
        (Some(2), Some(2), Some(3))
    );
}

#[test]
fn the_new_owner_killed_while_capturing() {
    two_to_three_with("prepare", |cluster| cluster.kill_and_restart(&[2]));
}

#[test]
fn the_old_owners_killed_after_the_freeze() {
    two_to_three_with("freeze", |cluster| cluster.kill_and_restart(&[0, 1]));
}

#[test]
fn the_new_owner_killed_after_the_import() {
    two_to_three_with("import", |cluster| cluster.kill_and_restart(&[2]));
}

#[test]
fn an_old_owner_killed_before_the_cleanup() {
    two_to_three_with("import", |cluster| cluster.kill_and_restart(&[0]));
}

/// The command itself SIGKILLed in the middle of a run (after the freeze began), then run
/// again.
#[test]
fn the_command_killed_mid_run() {
    two_to_three_with("prepare", |cluster| {
        cluster.clock("resume");
        let mut command = Proc(
            cluster
                .rescale_command(&["--to", "3"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        // Killed once some pod is frozen (the command is between its freeze and its commit).
        let frozen = wait_for(Duration::from_secs(60), || {
            let (_, state) =
                api_request(cluster.port(0), Some(TOKEN), "GET", "/v1/rescale", "").ok()?;
            (state["next"]["frozen"] == true || state["epoch"] == 2).then_some(())
        });
        command.0.kill().unwrap();
        command.0.wait().unwrap();
        assert!(frozen.is_some(), "the command never froze");
        cluster.clock("pause");
    });
}

#[test]
fn an_abort_before_the_freeze_keeps_every_row() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 120, 8_000);
    let cluster = Cluster::start(dir.path(), &stream, 3, 2, 600);
    cluster.wait_position(0.3);
    cluster.rescale(&["--to", "3", "--until", "prepare"]);
    let aborted = cluster.rescale(&["--abort"]);
    assert!(aborted.contains("aborted"), "{aborted}");
    let status = cluster.status();
    // Pods 0 and 1, and the standby pod 2 (--status lists standby pods that answer: one
    // could hold a prepare left behind), which the abort left on the old layout.
    assert_eq!(
        status
            .matches("epoch 1 (2 pods, md5, 1 shards); no rescale under way")
            .count(),
        3,
        "{status}"
    );
    cluster.assert_done(2);
}

/// The operation id of the change under way, as `--status` prints it.
fn operation_of(status: &str) -> String {
    let at = status.find("operation ").expect("an operation under way");
    status[at + "operation ".len()..][..16].to_owned()
}

/// Partial failure of the command: one operation at a time (a second is refused with the
/// first's id and target); a prepare that lost a race is shown by --status and coverage and
/// removed by --abort; a target pod down at prepare leaves no prepare behind; a new pod down at
/// abort does not stop the abort; a stalled old owner ends the command within its time limit,
/// naming the pod and the step, and a rerun finishes with exact rows.
#[test]
fn one_operation_at_a_time_and_partial_failures() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 120, 8_000);
    let mut cluster = Cluster::start(dir.path(), &stream, 4, 2, 600);
    cluster.wait_position(0.2);
    // Pods 2 and 3 are standby: /status says so.
    for (k, standby) in [(0, false), (2, true), (3, true)] {
        assert_eq!(
            get_json(cluster.port(k), "/status").unwrap()["standby"],
            standby
        );
    }

    // A second command while the first is under way: refused, naming it.
    cluster.rescale(&["--to", "3", "--until", "prepare"]);
    let first = operation_of(&cluster.status());
    let out = cluster.rescale_command(&["--to", "4"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains(&first) && text.contains("3 pods"), "{text}");

    // The race: another command's prepare reached standby pod 3 before it saw the first.
    let (code, body) = cluster.api(
        3,
        "POST",
        "/v1/rescale/prepare",
        r#"{"epoch": 2, "pods": 4, "strategy": "md5", "shards": 1,
            "from": {"pods": 2, "strategy": "md5", "shards": 1}, "operation": "00000000000000bb"}"#,
    );
    assert_eq!(code, 200, "{body}");
    // A pod holding one operation refuses another's prepare, naming the one it holds.
    let (code, body) = cluster.api(
        0,
        "POST",
        "/v1/rescale/prepare",
        r#"{"epoch": 2, "pods": 4, "strategy": "md5", "shards": 1,
            "from": {"pods": 2, "strategy": "md5", "shards": 1}, "operation": "00000000000000bb"}"#,
    );
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains(&first), "{body}");
    let finished = cluster.rescale(&[]);
    assert!(finished.contains("committed epoch 2"), "{finished}");
    // Pod 3's prepare can never finish (epoch 2 is committed): shown, refused, removable.
    let out = cluster.rescale_command(&["--status"]).output().unwrap();
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{status}");
    assert!(
        status.contains("00000000000000bb") && status.contains("LEFT BEHIND"),
        "{status}"
    );
    let coverage = gateway()
        .args(["coverage", "--pod-url-template", &cluster.template])
        .env_remove("NUM_GATEWAY_PODS")
        .output()
        .unwrap();
    assert!(!coverage.status.success());
    assert!(String::from_utf8_lossy(&coverage.stderr).contains("pod 3 holds a prepare left behind"));
    let out = cluster.rescale_command(&["--to", "4"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--abort"));
    let aborted = cluster.rescale(&["--abort"]);
    assert!(
        aborted.contains("pod 3: operation 00000000000000bb"),
        "{aborted}"
    );
    cluster.status();

    // A target pod down at prepare: the prepare is undone on the pods that took it.
    cluster.kill(3);
    let out = cluster.rescale_command(&["--to", "4"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        text.contains("pod 3, step prepare") && text.contains("prepare undone"),
        "{text}"
    );
    assert_eq!(cluster.status().matches("no rescale under way").count(), 3);

    // Down after its prepare: --abort undoes the others, names it, and removes its prepare
    // once it answers again.
    cluster.start_pod(3, 2);
    cluster.rescale(&["--to", "4", "--until", "prepare"]);
    cluster.kill(3);
    let aborted = cluster.rescale(&["--abort"]);
    assert!(aborted.contains("pod 3 does not answer"), "{aborted}");
    cluster.start_pod(3, 2);
    cluster.rescale(&["--abort"]);
    assert_eq!(cluster.status().matches("no rescale under way").count(), 4);

    // An old owner that stops answering mid-change: the command ends within its time limit,
    // naming the pod and the step; run again once the pod is back, it finishes.
    cluster.rescale(&["--to", "4", "--until", "prepare"]);
    let pid = cluster.pods[0].as_ref().unwrap().0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let started = std::time::Instant::now();
    let out = cluster
        .rescale_command(&["--pod-timeout-secs", "3"])
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(std::process::Command::new("kill")
        .args(["-CONT", &pid])
        .status()
        .unwrap()
        .success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("pod 0, step"), "{text}");
    // Bounded by the time limit (3 s a call), far from the old unbounded wait.
    assert!(took < Duration::from_secs(60), "{took:?}");
    let finished = cluster.rescale(&[]);
    assert!(finished.contains("committed epoch 3"), "{finished}");
    cluster.assert_done(4);
}

/// The freeze is exact whatever an old owner's lag: pod 0, slowed through the test seam and
/// admitting few events at a time, runs 10 s or more behind its session when the command runs
/// with its default margin (2 s). It goes on applying the moving guilds until their anchors
/// pass in its own stream, so nothing its backlog held is lost, and the new owner skips what it
/// applied, so nothing is applied twice: the rows equal a one-pod replay.
#[test]
fn a_lagging_old_owner_hands_over_exactly_with_the_default_margin() {
    require_test_hooks();
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 120, 15_000);
    // At most 4 events in flight, each held 20 ms: pod 0 takes ~300 of the 600 events/s, so
    // its backlog grows to 10 s of the stream, and stays under the 41 s after which Discord
    // (and the fake) would drop a session whose heartbeats wait behind it.
    let slow = vec![(0, "TEST_EVENT_DELAY_MS", "20"), (0, "MAX_IN_FLIGHT", "4")];
    let cluster = Cluster::start_with(dir.path(), &stream, 3, 2, 600, slow);
    // Pod 0's backlog: events due on the fake's timeline that its pipeline has not taken yet
    // (in its queues, its socket, and the fake's send loop, as with Discord's).
    let lag = wait_for(Duration::from_secs(120), || {
        let (position, _) = cluster.position();
        let status = get_json(cluster.port(0), "/status")?;
        let taken = status["sessions"][0]["last_seq_submitted"].as_u64()?;
        let behind = position.saturating_sub(taken);
        // 10 s of the stream at 600 events/s.
        (behind >= 6_000).then_some(behind)
    });
    assert!(lag.is_some(), "pod 0 never ran 10 s behind its session");
    let out = gateway()
        .args(["rescale", "--to", "3"])
        .env("API_TOKEN", TOKEN)
        .env("POD_URL_TEMPLATE", &cluster.template)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("anchors passed") && !text.contains("did not within"),
        "{text}"
    );
    cluster.assert_done(3);
}

/// The bot's rows written through `/execute`, as the bot writes them while guilds move: a
/// report (tied to its guild by a column), an escalation and a vote on it (the vote tied
/// through its escalation). Each write is retried the way the client does: 421 to the owner
/// it names, 503 (frozen, or not yet live on the new owner) after a pause.
struct BotRows {
    tag: &'static str,
    /// (index, guild) of every write set acknowledged.
    written: std::sync::Mutex<Vec<(usize, String)>>,
}

impl BotRows {
    fn new(tag: &'static str) -> BotRows {
        BotRows {
            tag,
            written: Default::default(),
        }
    }

    fn write(&self, cluster: &Cluster, i: usize, guild: &str) {
        let tag = self.tag;
        let writes = [
            (
                "insert into reported_messages (id, reported_message_id, reported_channel_id, reported_user_id, guild_id, log_message_id, log_channel_id, reason, created_at) values (?1, ?1, '2', 'u', ?2, '3', '4', 'spam', '2026-12-01')",
                serde_json::json!([format!("{tag}-p-{i}"), guild]),
            ),
            (
                "insert into escalations (id, guild_id, thread_id, vote_message_id, reported_user_id, initiator_id, flags, created_at) values (?, ?, 't', 'v', 'u', 'i', '{}', '2026-12-01')",
                serde_json::json!([format!("{tag}-e-{i}"), guild]),
            ),
            (
                "insert into escalation_records (id, escalation_id, voter_id, vote, voted_at) values (?, ?, 'voter', 'ban', '2026-12-01')",
                serde_json::json!([format!("{tag}-r-{i}"), format!("{tag}-e-{i}")]),
            ),
        ];
        for (sql, params) in writes {
            execute_on_owner(cluster, guild, sql, params);
        }
        self.written.lock().unwrap().push((i, guild.to_owned()));
    }

    /// Every acknowledged row is on the owner of its guild among `pods` pods, exactly once,
    /// and a vote's escalation moved with it.
    fn assert_on_owners(&self, cluster: &Cluster, pods: u32) {
        let written = self.written.lock().unwrap().clone();
        assert!(!written.is_empty());
        let guilds: Vec<String> = written.iter().map(|(_, g)| g.clone()).collect();
        let owners = owners(&guilds, pods, "md5");
        let mut found: std::collections::BTreeMap<String, Vec<(u32, String)>> = Default::default();
        for k in 0..cluster.pods.len() as u32 {
            let conn = open(&cluster.db(k));
            let pattern = format!("{}-%", self.tag);
            let mut stmt = conn
                .prepare(
                    "SELECT id, guild_id FROM reported_messages WHERE id LIKE ?1
                     UNION ALL SELECT id, guild_id FROM escalations WHERE id LIKE ?1
                     UNION ALL SELECT r.id, e.guild_id FROM escalation_records r
                       LEFT JOIN escalations e ON e.id = r.escalation_id WHERE r.id LIKE ?1",
                )
                .unwrap();
            let rows = stmt
                .query_map([&pattern], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
                })
                .unwrap();
            for row in rows {
                let (id, guild) = row.unwrap();
                let guild = guild.unwrap_or_else(|| panic!("pod {k}: {id} has no escalation here"));
                found.entry(id).or_default().push((k, guild));
            }
        }
        for (i, guild) in &written {
            for kind in ["p", "e", "r"] {
                let id = format!("{}-{kind}-{i}", self.tag);
                let places = found.remove(&id).unwrap_or_default();
                assert_eq!(places, [(owners[guild], guild.clone())], "{id}");
            }
        }
        assert!(found.is_empty(), "rows never acknowledged: {found:?}");
    }
}

/// One write for `guild`, retried until its owner commits it (or already has: 409).
fn execute_on_owner(cluster: &Cluster, guild: &str, sql: &str, params: Value) {
    let body = serde_json::json!({ "sql": sql, "parameters": params }).to_string();
    let path = format!("/v1/guilds/{guild}/execute");
    let mut k = 0;
    for _ in 0..1_200 {
        match api_request(cluster.port(k), Some(TOKEN), "POST", &path, &body) {
            Ok((200 | 409, _)) => return,
            Ok((421, owner)) => k = owner["ordinal"].as_u64().unwrap() as u32,
            Ok((503, _)) => std::thread::sleep(Duration::from_millis(25)),
            Err(_) => {
                k = (k + 1) % cluster.pods.len() as u32;
                std::thread::sleep(Duration::from_millis(25));
            }
            Ok((code, answer)) => panic!("{guild}: {code} {answer}"),
        }
    }
    panic!("no pod took the write to {guild} within 30 s");
}

/// The bot keeps writing its tables through the API while 2 md5 pods become 3 under live
/// traffic: every acknowledged row ends on its final owner only, none lost or doubled.
#[test]
fn the_bots_writes_during_a_rescale_land_once_on_their_final_owner() {
    let _one = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let stream = synthetic_stream(dir.path(), 120, 8_000);
    let cluster = Cluster::start(dir.path(), &stream, 3, 2, 600);
    cluster.wait_position(0.3);
    let guilds = stream_guilds(&stream);
    let bot_rows = BotRows::new("during");
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut i = 0;
            // Until the rescale is over, and a round of guilds after it.
            while !done.load(std::sync::atomic::Ordering::Acquire) || i % guilds.len() != 0 {
                bot_rows.write(&cluster, i, &guilds[i % guilds.len()]);
                i += 1;
                assert!(i < 100_000, "the writes never end");
            }
        });
        let finished = cluster.rescale(&["--to", "3"]);
        assert!(finished.contains("committed epoch 2"), "{finished}");
        done.store(true, std::sync::atomic::Ordering::Release);
        writer.join().unwrap();
    });
    cluster.assert_done(3);
    bot_rows.assert_on_owners(&cluster, 3);
}
