//! The workspace's binaries as child processes: finding them, clearing the pod's variables
//! from their environment, starting and stopping them, and checking how they ended.

use super::{fixtures::workspace_root, free_port, get_json, sample_stream, wait_for};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

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

/// Panics unless the pod binary has the `test-hooks` feature (TEST_EVENT_DELAY_MS): a test
/// that slows a pod would otherwise run at full speed and fail for the wrong reason.
pub fn require_test_hooks() {
    let out = gateway()
        .args(["serve", "--test-event-delay-ms", "1", "--help"])
        .output()
        .expect("running --help");
    assert!(
        out.status.success(),
        "the pod binary lacks the test-hooks feature: build it with `cargo build --workspace --all-targets --features guild-gateway/test-hooks` (as scripts/test does)"
    );
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
    assert_success("replay", &out);
    out
}

/// Panics unless the process exited 0, naming `what` and showing its exit status, stdout and
/// stderr (what a reader of the failure needs); returns its stdout as text.
pub fn assert_success(what: &str, out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A pod that replays the sample and stays up (`replay --linger`), its database at `db` and
/// its HTTP server on 127.0.0.1:`port`, output discarded: add variables, then
/// [`start_replay_pod`].
pub fn lingering_replay(db: &Path, port: u16) -> Command {
    let mut cmd = gateway();
    cmd.args(["replay", "--linger"])
        .arg(sample_stream())
        .env("DATABASE_URL", db)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// A pod that serves a bot's traffic from a fake Discord on 127.0.0.1:`fake_port` with
/// `token`, its database at `db` and its HTTP server on 127.0.0.1:`port`, output discarded:
/// add variables, then spawn it.
pub fn serving_pod(db: &Path, port: u16, fake_port: u16, token: &str) -> Command {
    let mut cmd = gateway();
    cmd.arg("serve")
        .env("DATABASE_URL", db)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DISCORD_TOKEN", token)
        .env("DISCORD_API_URL", format!("http://127.0.0.1:{fake_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    cmd
}

/// Spawns a pod (e.g. a [`lingering_replay`]) and returns once its `/status` on `port` answers.
pub fn start_replay_pod(mut cmd: Command, port: u16) -> Proc {
    let pod = Proc(cmd.spawn().expect("starting a pod"));
    let up = wait_for(POD_START_LIMIT, || get_json(port, "/status"));
    assert!(up.is_some(), "the pod on port {port} did not start");
    pod
}

/// Waits until the pod on `port` has committed `events` events and has none in flight (a
/// replay stopped before that exits non-zero); returns its `/status`.
pub fn wait_replayed(port: u16, events: u64) -> Value {
    wait_for(POD_START_LIMIT, || {
        let s = get_json(port, "/status")?;
        (s["events_done"] == events && s["in_flight"] == 0).then_some(s)
    })
    .unwrap_or_else(|| panic!("the pod on port {port} did not commit {events} events"))
}

/// A hang guard for a pod to start or replay the sample, not an expectation of its speed.
const POD_START_LIMIT: Duration = Duration::from_secs(60);

/// Waits for the child to exit, at most `limit`; kills it (by its PID) and panics if it hangs.
pub fn wait_exit(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    if let Some(status) = wait_for(limit, || child.try_wait().ok().flatten()) {
        return status;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("process {} did not exit within {limit:?}", child.id());
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
