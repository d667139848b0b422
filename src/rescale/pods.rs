//! The command's view of the pods: one call per protocol step through the pod client, every
//! pod's state, and what those states say together.

use super::endpoints::{NextBody, RescaleState};
use super::RescaleArgs;
use crate::pod_client::{Call, PodClient};
use anyhow::{bail, Context as _};
use std::time::Duration;

pub struct Pods {
    client: PodClient,
    /// The limit of one call (`--pod-timeout-secs`).
    timeout: Duration,
    /// The freeze's: the pods go on applying while they catch up to their anchors.
    freeze_timeout: Duration,
}

/// One pod's answer to `GET /v1/rescale`, or why it gave none.
pub type Answered = Result<RescaleState, String>;

impl Pods {
    pub fn new(args: &RescaleArgs) -> anyhow::Result<Pods> {
        let token = match args.api_token.as_deref() {
            Some(t) if !t.is_empty() => t.to_owned(),
            _ => bail!("API_TOKEN (or --api-token) is required: the pods' /v1 API needs it"),
        };
        Ok(Pods {
            client: PodClient::new(args.pod_url_template.clone(), Some(token))?,
            timeout: args.pod_timeout_secs,
            freeze_timeout: args.pod_timeout_secs + args.drain_timeout_secs,
        })
    }

    /// One call to pod `ordinal`, for the protocol step `step`; its errors name both.
    pub async fn call<T: serde::de::DeserializeOwned>(
        &self,
        ordinal: u32,
        step: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let path = format!("/v1/rescale{path}");
        let timeout = if step == "freeze" {
            self.freeze_timeout
        } else {
            self.timeout
        };
        let call = match &body {
            Some(body) => Call::post(&path, body, timeout),
            None => Call::get(&path, timeout),
        };
        self.client
            .json(ordinal, call)
            .await
            .with_context(|| format!("pod {ordinal}, step {step}"))
    }

    pub async fn state(&self, ordinal: u32) -> anyhow::Result<RescaleState> {
        self.call(ordinal, "read state", "", None).await
    }

    /// Every pod's state: ordinals 0.. up to the largest pod count any of them names, then
    /// standby pods past it while they answer (one may hold a prepare a dead command left).
    /// With `tolerant`, a pod that does not answer is reported, not an error.
    pub async fn states(&self, tolerant: bool) -> anyhow::Result<Vec<Answered>> {
        let mut states: Vec<Answered> = Vec::new();
        let mut wanted = 1;
        loop {
            let k = states.len() as u32;
            let answer = self.state(k).await;
            if k >= wanted {
                // Past every count named: only pods that answer are of interest.
                match answer {
                    Ok(state) if k < wanted + MAX_STANDBY_PROBES => states.push(Ok(state)),
                    _ => break,
                }
                continue;
            }
            match answer {
                Ok(state) => {
                    wanted = wanted
                        .max(state.layout.pods)
                        .max(state.next.as_ref().map_or(0, |n| n.layout.pods));
                    states.push(Ok(state));
                }
                Err(e) if tolerant => states.push(Err(format!("{e:#}"))),
                Err(e) => return Err(e),
            }
        }
        Ok(states)
    }

    /// The same call on several pods at once; every pod's outcome.
    pub async fn each<T: serde::de::DeserializeOwned>(
        &self,
        ordinals: impl Iterator<Item = u32>,
        step: &str,
        path: &str,
        body: serde_json::Value,
    ) -> Vec<(u32, anyhow::Result<T>)> {
        let calls = ordinals.map(|k| {
            let body = body.clone();
            async move {
                let outcome = self.call::<T>(k, step, path, Some(body)).await;
                (k, outcome)
            }
        });
        futures_util::future::join_all(calls).await
    }

    /// [`Pods::each`], failing on the first error.
    pub async fn all<T: serde::de::DeserializeOwned>(
        &self,
        ordinals: impl Iterator<Item = u32>,
        step: &str,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<Vec<(u32, T)>> {
        self.each(ordinals, step, path, body)
            .await
            .into_iter()
            .map(|(k, outcome)| outcome.map(|t| (k, t)))
            .collect()
    }
}

/// How many ordinals past every pod count the command looks at for standby pods.
const MAX_STANDBY_PROBES: u32 = 16;

/// Prepares whose epoch some pod has already committed (under another operation): a command
/// that lost a race, or died, left them, and none can finish them.
pub fn left_behind(states: &[Answered]) -> Vec<(u32, &NextBody)> {
    let committed = states.iter().flatten().map(|s| s.epoch).max().unwrap_or(0);
    states
        .iter()
        .flatten()
        .filter_map(|s| Some((s.ordinal, s.next.as_ref()?)))
        .filter(|(_, next)| next.epoch <= committed)
        .collect()
}

/// Every pod that owns guilds follows the same committed epoch and layout (standby pods, which
/// own nothing, may have started on another epoch): each guild has one owner.
pub fn committed_alike(states: &[Answered]) -> bool {
    let Some(Ok(first)) = states.first() else {
        return false;
    };
    let owners = &states[..states.len().min(first.layout.pods as usize)];
    owners.iter().all(|s| {
        s.as_ref()
            .is_ok_and(|s| s.epoch == first.epoch && s.layout == first.layout)
    })
}

/// Every pod answered the same committed ownership, with no change under way.
pub fn agree(states: &[RescaleState]) -> bool {
    let answered: Vec<Answered> = states.iter().map(|s| Ok(s.clone())).collect();
    committed_alike(&answered) && states.iter().all(|s| s.next.is_none())
}

pub fn print_status(states: &[Answered]) {
    let left = left_behind(states);
    for (k, s) in states.iter().enumerate() {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                println!("pod {k}: DOES NOT ANSWER: {e}");
                continue;
            }
        };
        let next = match &s.next {
            None => "no rescale under way".to_owned(),
            Some(n) => format!(
                "operation {}: rescale to epoch {} ({}): capturing {}, frozen {}, live {}{}",
                n.operation,
                n.epoch,
                n.layout,
                n.capturing,
                n.frozen,
                n.live,
                if left.iter().any(|(o, _)| *o == s.ordinal) {
                    " -- LEFT BEHIND (its epoch is committed): remove it with --abort"
                } else {
                    ""
                }
            ),
        };
        println!(
            "pod {}: epoch {} ({}); {next}{}",
            s.ordinal,
            s.epoch,
            s.layout,
            s.config_stale
                .as_deref()
                .map_or(String::new(), |c| format!("; STALE SETTINGS: {c}"))
        );
    }
}
