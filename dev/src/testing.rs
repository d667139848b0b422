//! Helpers the end-to-end tests and benches share: the fixtures, the binaries, a minimal HTTP
//! client, and reading a pod's database into comparable rows. Everything talks to 127.0.0.1
//! only. They panic with a message on any problem: a failed helper is a failed test.

use rusqlite::{Connection, OpenFlags};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The repository's root (this crate is one of its workspace members).
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("../shared/fixtures").join(name)
}

/// The pod binary, `guild-gateway`: GUILD_GATEWAY_BIN, else the one cargo built beside the
/// running test.
pub fn pod_binary() -> PathBuf {
    built_binary(&crate::pod_binary_name(), "GUILD_GATEWAY_BIN")
}

/// The tools' binary, `guild-gateway-dev`: GUILD_GATEWAY_DEV_BIN, else the one cargo built
/// beside the running test.
pub fn dev_binary() -> PathBuf {
    built_binary(&crate::dev_binary_name(), "GUILD_GATEWAY_DEV_BIN")
}

/// Tests and benches run from `target/PROFILE/deps/`, and cargo puts the workspace's binaries
/// in `target/PROFILE/`. Cargo only guarantees a test its own package's binaries, so the other
/// package's may be missing (or stale) unless the whole workspace was built first.
fn built_binary(name: &str, override_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(override_var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{override_var}={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the running test's own path");
    let mut dir = exe.parent().expect("the test's directory").to_owned();
    if dir.file_name().is_some_and(|d| d == "deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} does not exist: build every binary first (`cargo build --workspace --all-targets`, \
         as scripts/test does; add --release for benches), or set {override_var}",
        path.display()
    );
    path
}

pub fn sample_stream() -> PathBuf {
    fixture("events.sample.ndjson")
}

pub fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("events.sample.expected.json"))
        .expect("expected rows fixture");
    serde_json::from_str(&text).expect("expected rows are JSON")
}

/// A port on 127.0.0.1 for a server that a test starts, checked free by binding it.
pub fn free_port() -> u16 {
    free_port_block(1)
}

/// `n` consecutive free ports on 127.0.0.1 (pods whose URLs are `{ordinal+BASE}`), the first
/// of them returned.
///
/// A port taken from the kernel's ephemeral range could be handed to any outgoing connection
/// between this check and the server's bind. These come from below that range, which the
/// kernel never assigns by itself, from a block of ports of this process's own (cargo runs
/// test binaries one at a time; the block keeps concurrent ones apart too). A run of ports is
/// reserved with one atomic step, so tests running on other threads of this process cannot
/// interleave with it, and no port is handed out twice until the block wraps.
pub fn free_port_block(n: u16) -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    const BLOCK: u32 = 500;
    let n = u32::from(n).max(1);
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .max(FIRST + BLOCK);
    let blocks = (ephemeral_start - FIRST) / BLOCK;
    let base = FIRST + (std::process::id() % blocks) * BLOCK;
    for _ in 0..BLOCK {
        let start = NEXT.fetch_add(n, std::sync::atomic::Ordering::Relaxed) % BLOCK;
        if start + n > BLOCK {
            continue; // a run may not wrap around the block's end
        }
        let first = base + start;
        if (first..first + n).all(|port| TcpListener::bind(("127.0.0.1", port as u16)).is_ok()) {
            return first as u16;
        }
    }
    panic!(
        "no {n} consecutive free ports in 127.0.0.1:{base}..{}",
        base + BLOCK
    );
}

/// Every environment variable the pod binary reads, from its own `--help` (so none can be
/// forgotten here), plus the ones it reads outside clap.
fn pod_variables() -> &'static [String] {
    static VARS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    VARS.get_or_init(|| {
        let mut vars = vec!["HOSTNAME".to_string(), "RUST_LOG".to_string()];
        for command in ["serve", "replay", "shard-of"] {
            let help = Command::new(pod_binary())
                .args([command, "--help"])
                .output()
                .expect("running --help");
            let help = String::from_utf8_lossy(&help.stdout).into_owned();
            vars.extend(help.split("[env: ").skip(1).filter_map(|rest| {
                let name = rest.split(['=', ']']).next()?;
                Some(name.to_string())
            }));
        }
        vars.push("TEST_EVENT_DELAY_MS".to_string()); // hidden from --help
        vars.sort();
        vars.dedup();
        vars
    })
}

/// The pod binary with every pod variable cleared, so the caller's environment cannot leak in.
pub fn gateway() -> Command {
    without_pod_variables(Command::new(pod_binary()))
}

/// `guild-gateway-dev` (fake-discord, simulate) with every pod variable cleared: `simulate`'s
/// pods inherit its environment.
pub fn dev() -> Command {
    without_pod_variables(Command::new(dev_binary()))
}

fn without_pod_variables(mut cmd: Command) -> Command {
    for var in pod_variables() {
        cmd.env_remove(var);
    }
    cmd
}

/// `replay FILE` as pod `ordinal` of `pods`; panics with the output if it fails.
pub fn replay(db: &Path, ordinal: u32, pods: u32, strategy: &str, file: &Path) -> Output {
    let out = gateway()
        .arg("replay")
        .arg(file)
        .env("POD_ORDINAL", ordinal.to_string())
        .env("NUM_GATEWAY_PODS", pods.to_string())
        .env("SHARD_STRATEGY", strategy)
        .env("DATABASE_URL", db)
        .env("HTTP_ADDR", format!("127.0.0.1:{}", free_port()))
        .output()
        .expect("running guild-gateway");
    assert!(
        out.status.success(),
        "replay failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// GET over HTTP/1.0; returns (status code, body). Bounded by a 10 s timeout.
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(crate::probe::status_and_body(&response))
}

/// GET a JSON document; None unless it answers 200 with JSON.
pub fn get_json(port: u16, path: &str) -> Option<Value> {
    let (code, body) = http_get(port, path).ok()?;
    (code == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// Polls `check` every 50 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = check() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Polls `check` until it returns `Ok`, for as long as the progress it reports (`Err`) keeps
/// changing: gives up after `stall` without a change, or after `limit` in all. For work whose
/// length depends on the machine's load (a shared CI runner) but which must never stop moving.
pub fn wait_progressing<T, P: PartialEq>(
    stall: Duration,
    limit: Duration,
    mut check: impl FnMut() -> Result<T, P>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    let mut last: Option<P> = None;
    let mut moved = Instant::now();
    while Instant::now() < deadline && moved.elapsed() < stall {
        match check() {
            Ok(v) => return Some(v),
            Err(progress) => {
                if last.as_ref() != Some(&progress) {
                    last = Some(progress);
                    moved = Instant::now();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Waits for the child to exit, at most `limit`; kills it (by its PID) and panics if it hangs.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    if let Some(status) = wait_for(limit, || child.try_wait().ok().flatten()) {
        return status;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process {} did not exit within {limit:?}", child.id());
}

pub fn open(db: &Path) -> Connection {
    Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("opening the pod's database")
}

fn query(conn: &Connection, sql: &str) -> Vec<Value> {
    let mut stmt = conn.prepare(sql).expect("query prepares");
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let rows = stmt
        .query_map([], |r| {
            let mut obj = serde_json::Map::new();
            for (i, name) in names.iter().enumerate() {
                let v = match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(n) => json!(n),
                    rusqlite::types::ValueRef::Real(f) => json!(f),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    rusqlite::types::ValueRef::Blob(_) => json!("<blob>"),
                };
                obj.insert(name.clone(), v);
            }
            Ok(Value::Object(obj))
        })
        .expect("query runs");
    rows.map(|r| r.expect("row reads")).collect()
}

/// A pod's rows in the fixture's shape (the columns the expected file compares), per table.
pub fn comparable_rows(db: &Path) -> BTreeMap<&'static str, Vec<Value>> {
    let conn = open(db);
    let mut tables = BTreeMap::new();
    tables.insert("message_stats", query(&conn, "SELECT message_id, author_id, guild_id, channel_id, channel_category, recipient_id, char_count, word_count, react_count, sent_at, code_stats, link_stats FROM message_stats"));
    tables.insert(
        "channel_info",
        // A channel's guild is in guild_channels; LEFT JOIN, so a channel_info row without one
        // shows (with a null guild) instead of hiding.
        query(
            &conn,
            "SELECT c.id, g.guild_id, c.name, c.category FROM channel_info c
               LEFT JOIN guild_channels g ON g.channel_id = c.id",
        ),
    );
    tables.insert(
        "message_cache",
        query(
            &conn,
            "SELECT message_id, guild_id, channel_id, user_id, content FROM message_cache",
        ),
    );
    tables.insert(
        "guilds",
        query(&conn, "SELECT id FROM guilds")
            .into_iter()
            .map(|r| r["id"].clone())
            .collect(),
    );
    tables.insert(
        "mod_actions",
        query(
            &conn,
            "SELECT guild_id, user_id, action_type, executor_id, reason FROM mod_actions",
        ),
    );
    tables
}

/// Every row of every table, all columns but processing-time timestamps: for "a second
/// replay changes nothing".
pub fn all_rows(db: &Path) -> BTreeMap<&'static str, Vec<Value>> {
    let conn = open(db);
    let mut tables = BTreeMap::new();
    tables.insert(
        "message_stats",
        query(&conn, "SELECT * FROM message_stats ORDER BY message_id"),
    );
    tables.insert(
        "channel_info",
        query(&conn, "SELECT * FROM channel_info ORDER BY id"),
    );
    tables.insert(
        "guild_channels",
        query(&conn, "SELECT * FROM guild_channels ORDER BY channel_id"),
    );
    tables.insert("message_cache", query(&conn, "SELECT message_id, guild_id, channel_id, user_id, content FROM message_cache ORDER BY message_id"));
    tables.insert(
        "message_reactions",
        query(&conn, "SELECT * FROM message_reactions ORDER BY 1, 2, 3"),
    );
    tables.insert("guilds", query(&conn, "SELECT * FROM guilds ORDER BY id"));
    tables.insert("mod_actions", query(&conn, "SELECT id, user_id, guild_id, action_type, executor_id, reason, duration, source_key FROM mod_actions ORDER BY id"));
    tables.insert(
        "member_timeouts",
        query(&conn, "SELECT * FROM member_timeouts ORDER BY 1, 2"),
    );
    tables
}

/// Sorts rows by their JSON text, for order-insensitive comparison.
pub fn sorted(mut rows: Vec<Value>) -> Vec<Value> {
    rows.sort_by_key(|r| r.to_string());
    rows
}

/// The guild a row belongs to.
pub fn row_guild(table: &str, row: &Value) -> String {
    let v = if table == "guilds" {
        row
    } else {
        &row["guild_id"]
    };
    v.as_str().expect("guild id is text").to_owned()
}

/// The ordinal of the owning pod, computed by the binary's own `shard-of` (which the fixture
/// tests pin to the TypeScript function).
pub fn owners(ids: &[String], pods: u32, strategy: &str) -> BTreeMap<String, u32> {
    owners_with_shards(ids, pods, strategy, None)
}

/// [`owners`] for a bot with `shards` Discord shards (DISCORD_SHARDS).
pub fn owners_with_shards(
    ids: &[String],
    pods: u32,
    strategy: &str,
    shards: Option<u32>,
) -> BTreeMap<String, u32> {
    let mut cmd = gateway();
    cmd.args([
        "shard-of",
        "--pods",
        &pods.to_string(),
        "--strategy",
        strategy,
    ]);
    if let Some(shards) = shards {
        cmd.args(["--shards", &shards.to_string()]);
    }
    let out = cmd.arg("--").args(ids).output().expect("running shard-of");
    assert!(
        out.status.success(),
        "shard-of: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let (id, owner) = l.split_once(' ').expect("`ID ORDINAL`");
            (id.to_owned(), owner.parse().expect("ordinal"))
        })
        .collect()
}

/// The pods' databases (pod k's at `dbs[k]`) hold exactly the sample's expected rows between
/// them, each guild's rows in its owner's database only.
pub fn assert_expected_rows(dbs: &[PathBuf], strategy: &str) {
    assert_rows(dbs, strategy, &expected());
}

/// As [`assert_expected_rows`], against `expected` in the shape of the fixture's expected rows.
pub fn assert_rows(dbs: &[PathBuf], strategy: &str, expected: &Value) {
    assert_rows_with_shards(dbs, strategy, None, expected)
}

/// The rows of one database that holds every guild (a one-pod replay), in the shape
/// [`assert_rows`] expects (its `guilds` table is the guild list).
pub fn expected_rows_of(db: &Path) -> Value {
    Value::Object(
        comparable_rows(db)
            .into_iter()
            .map(|(table, rows)| (table.to_owned(), Value::Array(rows)))
            .collect(),
    )
}

/// [`assert_rows`] for a bot with `shards` Discord shards.
pub fn assert_rows_with_shards(
    dbs: &[PathBuf],
    strategy: &str,
    shards: Option<u32>,
    expected: &Value,
) {
    let pods = dbs.len() as u32;
    let per_pod: Vec<_> = dbs.iter().map(|db| comparable_rows(db)).collect();
    let guild_ids: Vec<String> = expected["guilds"]
        .as_array()
        .expect("guild list")
        .iter()
        .map(|g| g.as_str().expect("id").to_owned())
        .collect();
    let owner = owners_with_shards(&guild_ids, pods, strategy, shards);
    for table in [
        "message_stats",
        "channel_info",
        "message_cache",
        "guilds",
        "mod_actions",
    ] {
        let mut union = Vec::new();
        for (k, rows) in per_pod.iter().enumerate() {
            for row in &rows[table] {
                let guild = row_guild(table, row);
                assert_eq!(owner.get(&guild), Some(&(k as u32)), "{table} row of guild {guild} is in pod {k}'s database ({pods} pods, {strategy})");
                union.push(row.clone());
            }
        }
        let want = expected[table].as_array().expect("table rows").clone();
        let (got, want) = (sorted(union), sorted(want));
        if got != want {
            let missing: Vec<_> = want.iter().filter(|r| !got.contains(r)).take(5).collect();
            let extra: Vec<_> = got.iter().filter(|r| !want.contains(r)).take(5).collect();
            panic!("{table} with {pods} pods ({strategy}): {} rows, expected {}\nmissing: {missing:#?}\nextra: {extra:#?}", got.len(), want.len());
        }
    }
}

/// The guild a sample dispatch belongs to (GUILD_CREATE: its id), or None for DMs.
pub fn dispatch_guild(line: &Value) -> Option<u64> {
    let d = &line["d"];
    let id = if line["t"] == "GUILD_CREATE" {
        &d["id"]
    } else {
        &d["guild_id"]
    };
    id.as_str().and_then(|s| s.parse().ok())
}

/// The sample's dispatches, parsed.
pub fn sample_lines() -> Vec<Value> {
    std::fs::read_to_string(sample_stream())
        .expect("sample stream")
        .lines()
        .map(|l| serde_json::from_str(l).expect("sample line is JSON"))
        .collect()
}

/// The value of one series in a Prometheus text page (0 if absent).
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every series of a metric.
pub fn metric_total(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Kills the child (by its PID only) if a test ends before stopping it.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends SIGTERM to a child we started.
pub fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// A test tool: the project's venv first (scripts/test creates it), then PATH.
pub fn tool(name: &str) -> PathBuf {
    let venv = workspace_root().join(".venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

/// `promtool check metrics` on an exposition page; panics with its report on problems.
pub fn assert_promtool_accepts(page: &str) {
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool is installed (scripts/test installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(page.as_bytes())
        .expect("writing to promtool");
    let out = promtool.wait_with_output().expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `guild-gateway-dev fake-discord` on the sample stream, on a free port; returns it once it
/// answers.
pub fn start_fake_discord(token: &str, extra: &[&str]) -> (Proc, u16) {
    start_fake_discord_on(token, &sample_stream(), extra)
}

/// `guild-gateway-dev fake-discord` on a given stream.
pub fn start_fake_discord_on(token: &str, events: &Path, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let fake = Proc(
        dev()
            .args([
                "fake-discord",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--token",
                token,
                "--events",
            ])
            .arg(events)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting fake-discord"),
    );
    wait_for(Duration::from_secs(20), || {
        http_get(port, "/fake/sessions")
            .ok()
            .filter(|(c, _)| *c == 200)
    })
    .expect("fake-discord answers");
    (fake, port)
}

/// A small tmpfs mounted on a fresh directory, for full-disk tests; unmounted on drop.
/// Mounting needs root, as the test machines and CI run.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("a directory to mount on");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "mounting a {size} tmpfs (needs root): {status}"
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with a ballast file until it is full; returns its path.
    pub fn fill(&self) -> PathBuf {
        use std::io::Write;
        let ballast = self.path().join("ballast");
        let mut file = std::fs::File::create(&ballast).expect("creating the ballast");
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        ballast
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Copies a database and its WAL elsewhere and opens the copy (a full or crashed file is
/// left as it was).
pub fn open_copy(db: &Path, into: &Path) -> Connection {
    let copy = into.join("copy.sqlite3");
    std::fs::copy(db, &copy).expect("copying the database");
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    if wal.exists() {
        std::fs::copy(&wal, format!("{}-wal", copy.display())).expect("copying the WAL");
    }
    open(&copy)
}

/// An HTTP/1.0 request with headers and a body; returns (status code, body). Bounded by a
/// 30 s timeout.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(crate::probe::status_and_body(&response))
}

/// A call to a pod's `/v1` API with `token` as the bearer (none: unauthenticated) and a JSON
/// body; returns the status and the answer, as JSON, or as a JSON string when it is not JSON.
pub fn api_request(
    port: u16,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &str,
) -> std::io::Result<(u16, Value)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let (code, text) = http_request(port, method, path, &headers, body)?;
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((code, json))
}

#[cfg(test)]
mod tests {
    use super::free_port_block;

    /// Tests of one binary run on several threads; their port runs must never overlap.
    #[test]
    fn concurrent_port_runs_are_disjoint_and_consecutive() {
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..20).map(|_| free_port_block(3)).collect::<Vec<_>>()))
            .collect();
        let mut ports = std::collections::HashSet::new();
        for thread in threads {
            for first in thread.join().expect("a port thread panicked") {
                for port in first..first + 3 {
                    assert!(ports.insert(port), "port {port} handed out twice");
                }
            }
        }
        assert_eq!(ports.len(), 8 * 20 * 3);
    }
}
