//! `simulate --rescale`: the pod counts (and strategies) to move to, at evenly spaced points
//! of the live stream, each run by the real `guild-gateway rescale` command.

use anyhow::{bail, Context as _};
use gateway_actors::partition::Strategy;
use serde::Deserialize;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// One change: `M`, `M:STRATEGY` or `M:STRATEGY:SHARDS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub pods: u32,
    pub strategy: Option<Strategy>,
    pub shards: Option<u32>,
}

/// Parses `3,5,2` or `3:discord` or `5:discord:8`, comma-separated.
pub fn parse(list: &str) -> anyhow::Result<Vec<Step>> {
    list.split(',')
        .map(|item| {
            let mut parts = item.trim().split(':');
            let pods: u32 = parts
                .next()
                .unwrap_or("")
                .parse()
                .with_context(|| format!("--rescale {item:?}: a pod count first"))?;
            if pods == 0 {
                bail!("--rescale {item:?}: at least one pod");
            }
            let strategy = parts
                .next()
                .map(|s| s.parse::<Strategy>())
                .transpose()
                .map_err(|e| anyhow::anyhow!("--rescale {item:?}: {e}"))?;
            let shards = parts
                .next()
                .map(|s| s.parse::<u32>())
                .transpose()
                .with_context(|| format!("--rescale {item:?}: the shard count"))?;
            Ok(Step {
                pods,
                strategy,
                shards,
            })
        })
        .collect()
}

/// What `guild-gateway rescale --json` prints when it commits.
#[derive(Debug, Clone, Deserialize)]
pub struct Summary {
    pub epoch: u64,
    pub from: LayoutOf,
    pub to: LayoutOf,
    pub guilds_moved: u64,
    pub events_replayed: u64,
    #[serde(default)]
    pub events_skipped: u64,
    pub longest_pause_ms: u64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct LayoutOf {
    pub pods: u32,
    pub strategy: String,
    pub shards: u32,
}

/// Starts `guild-gateway rescale` for `step` against the pods at `pod_urls`; its progress goes
/// to `log`, its summary to its stdout.
pub fn start(
    exe: &Path,
    step: &Step,
    pod_urls: &str,
    token: &str,
    margin_ms: u64,
    log: &Path,
) -> anyhow::Result<Child> {
    let mut command = Command::new(exe);
    command
        .args(["rescale", "--json", "--to", &step.pods.to_string()])
        .args(["--margin-ms", &margin_ms.to_string()])
        .env("POD_URL_TEMPLATE", pod_urls)
        .env("API_TOKEN", token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?);
    if let Some(strategy) = step.strategy {
        command.args(["--strategy", strategy.as_str()]);
    }
    if let Some(shards) = step.shards {
        command.args(["--shards", &shards.to_string()]);
    }
    command
        .spawn()
        .with_context(|| format!("starting {} rescale", exe.display()))
}

/// The summary of a finished `rescale` child, or why it failed.
pub fn finish(child: Child, log: &Path) -> anyhow::Result<Summary> {
    let output = child.wait_with_output().context("waiting for rescale")?;
    if !output.status.success() {
        bail!(
            "guild-gateway rescale exited with {}; see {}",
            output.status,
            log.display()
        );
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim())
        .with_context(|| format!("reading rescale's summary {stdout:?}"))
}

/// `guild-gateway coverage` against the pods: every guild has exactly one owner.
pub fn coverage(exe: &Path, pod_urls: &str) -> anyhow::Result<()> {
    let output = Command::new(exe)
        .args(["coverage", "--pod-url-template", pod_urls])
        .env_remove("NUM_GATEWAY_PODS")
        .stdin(Stdio::null())
        .output()
        .context("running guild-gateway coverage")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "the coverage check failed after a rescale: {}{}",
            text,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    eprintln!("  {}", text.lines().last().unwrap_or_default());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse() {
        let steps = parse("3,5:discord,2:discord:8").unwrap();
        assert_eq!(
            steps[0],
            Step {
                pods: 3,
                strategy: None,
                shards: None
            }
        );
        assert_eq!(steps[1].strategy, Some(Strategy::Discord));
        assert_eq!(steps[2].shards, Some(8));
        assert!(parse("0").is_err());
        assert!(parse("3:crc").is_err());
        assert!(parse("x").is_err());
    }
}
