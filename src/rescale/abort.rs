//! `rescale --abort`: removes the prepares left behind, and cancels the change under way while
//! no pod has frozen for it.

use super::endpoints::RescaleState;
use super::pods::{left_behind, Pods};
use super::steps::progress;
use anyhow::bail;
use std::process::ExitCode;

/// `--abort`: removes every prepare left behind, and cancels the change under way if no pod
/// froze, went live or committed it. Pods of the old layout must answer (one of them might
/// have frozen); a new pod that is down is named, and a later `--abort` removes its prepare
/// once it answers.
pub async fn abort(pods: &Pods) -> anyhow::Result<ExitCode> {
    let states = pods.states(true).await?;
    let mut targets: Vec<(u32, u64, String)> = left_behind(&states)
        .into_iter()
        .map(|(k, next)| (k, next.epoch, next.operation.clone()))
        .collect();
    let reachable: Vec<&RescaleState> = states.iter().flatten().collect();
    let under_way = reachable
        .iter()
        .filter_map(|s| s.next.as_ref())
        .find(|next| !targets.iter().any(|(_, _, op)| *op == next.operation));
    if let Some(next) = under_way {
        // Frozen, live or committed anywhere: guilds may already be applied only by their
        // new owners, so the change can only finish.
        let past_freeze = |s: &&&RescaleState| {
            (s.epoch == next.epoch && s.layout == next.layout)
                || s.next
                    .as_ref()
                    .is_some_and(|n| n.operation == next.operation && (n.frozen || n.live))
        };
        if let Some(frozen) = reachable.iter().find(past_freeze) {
            bail!(
                "pod {} froze, went live or committed operation {} (epoch {}): a rescale only rolls forward after a freeze; run `guild-gateway rescale` again to finish it",
                frozen.ordinal,
                next.operation,
                next.epoch
            );
        }
        let old_pods = reachable
            .iter()
            .find(|s| s.epoch + 1 == next.epoch)
            .map_or(0, |s| s.layout.pods);
        let silent: Vec<u32> = (0..old_pods)
            .filter(|&k| states.get(k as usize).is_none_or(Result::is_err))
            .collect();
        if !silent.is_empty() {
            bail!(
                "pods {silent:?} of the old layout do not answer, and one of them may have frozen: run --abort again once they answer"
            );
        }
        targets.extend(
            reachable
                .iter()
                .filter(|s| {
                    s.next
                        .as_ref()
                        .is_some_and(|n| n.operation == next.operation)
                })
                .map(|s| (s.ordinal, next.epoch, next.operation.clone())),
        );
    }
    for (k, why) in states
        .iter()
        .enumerate()
        .filter_map(|(k, s)| Some((k, s.as_ref().err()?)))
    {
        progress(format_args!(
            "pod {k} does not answer ({why}): if it holds a prepare, --abort again once it answers"
        ));
    }
    if targets.is_empty() {
        progress("no rescale under way and none left behind: nothing to abort");
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = Vec::new();
    for (k, epoch, operation) in targets {
        let body = serde_json::json!({"epoch": epoch, "operation": operation});
        match pods
            .call::<RescaleState>(k, "abort", "/abort", Some(body))
            .await
        {
            Ok(_) => progress(format_args!(
                "pod {k}: operation {operation} (epoch {epoch}) aborted"
            )),
            Err(e) => failed.push(format!("{e:#}")),
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(ExitCode::SUCCESS)
}
