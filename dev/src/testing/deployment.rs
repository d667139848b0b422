//! N pods replaying the sample stream into their own files, with the data API open to
//! [`API_TOKEN`]: the deployment the API's end-to-end tests (and the fuzzing) run against.

use super::{api_request, free_port_block, lingering_replay, sample_lines, wait_replayed, Proc};
use std::path::PathBuf;

/// The API token of a [`ReplayDeployment`].
pub const API_TOKEN: &str = "test-api-token-0123456789";

pub struct ReplayDeployment {
    /// Pod k's process, while it runs (dropping it kills it by its PID and reaps it).
    pub pods: Vec<Option<Proc>>,
    base: u16,
    dir: tempfile::TempDir,
}

impl ReplayDeployment {
    /// Starts `pods` pods (with `env` besides their own settings) and waits until each has
    /// committed the whole sample.
    pub fn start(pods: u32, env: &[(&str, &str)]) -> ReplayDeployment {
        let dir = tempfile::tempdir().expect("a temp dir");
        let base = free_port_block(pods as u16);
        let lines = sample_lines().len() as u64;
        let procs = (0..pods)
            .map(|k| {
                let db = dir.path().join(format!("pod{k}.sqlite3"));
                let mut cmd = lingering_replay(&db, base + k as u16);
                cmd.env("API_TOKEN", API_TOKEN)
                    .env(
                        "POD_URL_TEMPLATE",
                        format!("http://127.0.0.1:{{ordinal+{base}}}"),
                    )
                    .env("NUM_GATEWAY_PODS", pods.to_string())
                    .env("POD_ORDINAL", k.to_string())
                    .stderr(
                        std::fs::File::create(dir.path().join(format!("pod{k}.log")))
                            .expect("a pod's log file"),
                    );
                for (name, value) in env {
                    cmd.env(name, value);
                }
                Some(Proc(cmd.spawn().expect("starting a pod")))
            })
            .collect();
        let deployment = ReplayDeployment {
            pods: procs,
            base,
            dir,
        };
        for k in 0..pods {
            wait_replayed(deployment.port(k), lines);
        }
        deployment
    }

    pub fn port(&self, ordinal: u32) -> u16 {
        self.base + ordinal as u16
    }

    /// Pod k's standard error so far.
    pub fn log(&self, ordinal: u32) -> String {
        std::fs::read_to_string(self.log_path(ordinal)).unwrap_or_default()
    }

    pub fn log_path(&self, ordinal: u32) -> PathBuf {
        self.dir.path().join(format!("pod{ordinal}.log"))
    }

    /// A directory that lives as long as the deployment.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Kills pod k (by its PID).
    pub fn stop(&mut self, ordinal: u32) {
        self.pods[ordinal as usize] = None;
    }

    /// Whether pod k's process still runs.
    pub fn running(&mut self, ordinal: u32) -> bool {
        self.pods[ordinal as usize]
            .as_mut()
            .is_some_and(|p| p.0.try_wait().ok().flatten().is_none())
    }

    /// The ordinal of `guild`'s owner, as pod 0 names it.
    pub fn owner(&self, guild: &str) -> u32 {
        let (code, body) = api_request(
            self.port(0),
            Some(API_TOKEN),
            "GET",
            &format!("/v1/guilds/{guild}/owner"),
            "",
        )
        .expect("pod 0 answers");
        assert_eq!(code, 200, "{body}");
        body["ordinal"].as_u64().expect("an ordinal") as u32
    }
}
