//! `guild-gateway coverage`: proves that every guild has exactly one owner right now, by asking
//! every pod how it shards.
//!
//! The owner function is total and deterministic, so every guild has exactly one owner if and
//! only if: every ordinal 0..N answers, each as itself; all of them use the same layout (pod
//! count, strategy, Discord shard count); and, with `discord`, their shard sets partition the
//! shards. A pod restarted with a stale NUM_GATEWAY_PODS breaks the second rule, and this
//! command names it.

use crate::pod_client::{Call, PodCallError, PodClient};
use crate::routing::UrlTemplate;
use anyhow::Context as _;
use clap::Args;
use serde::Deserialize;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Args)]
pub struct CoverageArgs {
    /// Number of pods that should own guilds [default: what pod 0's committed ownership says]
    #[arg(long, env = "NUM_GATEWAY_PODS",
        value_parser = crate::config::number(1, 1 << 16))]
    pub pods: Option<u64>,
    /// Base URL of pod {ordinal}
    #[arg(long, env = "POD_URL_TEMPLATE", default_value = crate::config::DEFAULT_POD_URL_TEMPLATE,
        value_parser = crate::config::pod_url_template())]
    pub pod_url_template: UrlTemplate,
}

/// What a pod says of its layout (its `/status`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Layout {
    pod_ordinal: u32,
    num_pods: u32,
    strategy: String,
    shards: u32,
    pod_shards: Vec<u32>,
    ownership: Epoch,
}

/// The committed epoch a pod follows, and the rescale under way.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Epoch {
    epoch: u64,
    next: Option<serde_json::Value>,
}

pub fn run(args: CoverageArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let client = PodClient::new(args.pod_url_template.clone(), None)?;
    let ask = |k: u32| {
        let client = client.clone();
        async move {
            client
                .json::<Layout>(k, Call::get("/status", STATUS_TIMEOUT))
                .await
        }
    };
    let pods = match args.pods {
        Some(pods) => pods as u32,
        None => {
            runtime
                .block_on(ask(0))
                .context("asking pod 0 how many pods own guilds")?
                .num_pods
        }
    };
    let answers: Vec<Result<Layout, PodCallError>> =
        runtime.block_on(futures_util::future::join_all((0..pods).map(ask)));
    // Standby pods past the count own nothing, but one may hold a prepare left by a rescale
    // command that died: look at those that answer, up to the first that does not.
    let mut standby = Vec::new();
    for k in pods..pods.saturating_add(MAX_STANDBY_PROBES) {
        match runtime.block_on(ask(k)) {
            Ok(layout) => standby.push(layout),
            Err(_) => break,
        }
    }

    let mut problems = Vec::new();
    let mut layouts = Vec::new();
    for (k, answer) in answers.into_iter().enumerate() {
        match answer {
            Err(e) => problems.push(format!(
                "pod {k} does not answer ({}): its guilds have no owner",
                gateway_actors::errors::chain(&e)
            )),
            Ok(layout) => {
                println!(
                    "pod {k}: ordinal {}, epoch {}, {} pods, {}, {} shards, runs shards {:?}{}",
                    layout.pod_ordinal,
                    layout.ownership.epoch,
                    layout.num_pods,
                    layout.strategy,
                    layout.shards,
                    layout.pod_shards,
                    if layout.ownership.next.is_some() {
                        " (a rescale is under way: this epoch's owners serve until its commit)"
                    } else {
                        ""
                    }
                );
                if layout.pod_ordinal != k as u32 {
                    problems.push(format!("pod {k} answers as ordinal {}", layout.pod_ordinal));
                }
                layouts.push(layout);
            }
        }
    }
    problems.extend(disagreements(pods, &layouts));
    problems.extend(left_prepares(layouts.iter().chain(&standby)));
    if problems.is_empty() {
        let l = &layouts[0];
        println!(
            "every guild has exactly one owner: {pods} pods agree on epoch {}, {} with {} shards",
            l.ownership.epoch, l.strategy, l.shards
        );
        return Ok(ExitCode::SUCCESS);
    }
    for p in &problems {
        eprintln!("error: {p}");
    }
    Ok(ExitCode::FAILURE)
}

/// What keeps the answering pods from covering every guild exactly once.
/// How long a pod has to answer `/status`.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// How many ordinals past the pod count coverage looks at for standby pods.
const MAX_STANDBY_PROBES: u32 = 16;

/// Prepares that no command can finish: their epoch is already committed by some pod (under
/// another operation), so they are what a command that died or lost a race left behind.
fn left_prepares<'a>(layouts: impl Iterator<Item = &'a Layout> + Clone) -> Vec<String> {
    let committed = layouts
        .clone()
        .map(|l| l.ownership.epoch)
        .max()
        .unwrap_or(0);
    layouts
        .filter_map(|l| {
            let next = l.ownership.next.as_ref()?;
            let epoch = next["epoch"].as_u64()?;
            (epoch <= committed).then(|| {
                format!(
                    "pod {} holds a prepare left behind: operation {}, epoch {epoch} ({} pods), but epoch {committed} is committed; `guild-gateway rescale --abort` removes it",
                    l.pod_ordinal,
                    next["operation"].as_str().unwrap_or("?"),
                    next["layout"]["pods"]
                )
            })
        })
        .collect()
}

fn disagreements(pods: u32, layouts: &[Layout]) -> Vec<String> {
    let mut problems = Vec::new();
    for l in layouts {
        if l.num_pods != pods {
            problems.push(format!(
                "pod {} shards for {} pods, not {pods}: it owns guilds that another pod owns too (a stale NUM_GATEWAY_PODS?)",
                l.pod_ordinal, l.num_pods
            ));
        }
    }
    if let Some(first) = layouts.first() {
        for l in &layouts[1..] {
            if l.ownership.epoch != first.ownership.epoch {
                problems.push(format!(
                    "pod {} follows epoch {}, pod {} epoch {}: a rescale committed on some pods only (run `guild-gateway rescale` to finish it) or a pod restored from an old backup",
                    l.pod_ordinal, l.ownership.epoch, first.pod_ordinal, first.ownership.epoch
                ));
            }
            if (l.strategy.as_str(), l.shards) != (first.strategy.as_str(), first.shards) {
                problems.push(format!(
                    "pod {} uses {} with {} shards, pod {} uses {} with {} shards",
                    l.pod_ordinal,
                    l.strategy,
                    l.shards,
                    first.pod_ordinal,
                    first.strategy,
                    first.shards
                ));
            }
        }
        if problems.is_empty() && first.strategy == "discord" {
            let mut shards: Vec<u32> = layouts.iter().flat_map(|l| l.pod_shards.clone()).collect();
            shards.sort_unstable();
            if shards != (0..first.shards).collect::<Vec<_>>() {
                problems.push(format!(
                    "the pods' shard sets do not split the {} shards exactly: {shards:?}",
                    first.shards
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(k: u32, pods: u32, strategy: &str, shards: u32, pod_shards: &[u32]) -> Layout {
        Layout {
            pod_ordinal: k,
            num_pods: pods,
            strategy: strategy.into(),
            shards,
            pod_shards: pod_shards.to_vec(),
            ownership: Epoch {
                epoch: 1,
                next: None,
            },
        }
    }

    #[test]
    fn agreement_and_its_failures() {
        let ok = [
            layout(0, 3, "discord", 8, &[0, 3, 6]),
            layout(1, 3, "discord", 8, &[1, 4, 7]),
            layout(2, 3, "discord", 8, &[2, 5]),
        ];
        assert!(disagreements(3, &ok).is_empty());
        let mut stale = ok.clone();
        stale[2] = layout(2, 4, "discord", 8, &[2, 6]);
        assert!(disagreements(3, &stale)[0].contains("stale NUM_GATEWAY_PODS"));
        let mut shards = ok.clone();
        shards[1].shards = 4;
        assert!(!disagreements(3, &shards).is_empty());
        let mut epochs = ok.clone();
        epochs[1].ownership.epoch = 2;
        assert!(disagreements(3, &epochs)[0].contains("epoch 2"));
    }
}
